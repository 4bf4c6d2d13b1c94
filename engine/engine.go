package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/ollama/ollama/thinking"

	"github.com/owlengine/owl/compute"
	"github.com/owlengine/owl/llm"
	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/vision"
)

// Types of the llm package that the API passes through.
type (
	// Sampling chooses tokens; see llm.Sampling.
	Sampling = llm.Sampling
	// Message is one chat turn.
	Message = llm.Message
	// Chunk is a piece of streamed output.
	Chunk = llm.Chunk
	// Result describes a finished generation.
	Result = llm.Result
)

// Finish reasons of a Result.
const (
	FinishStop   = llm.FinishStop
	FinishLength = llm.FinishLength
)

// ErrContextFull is returned when a prompt does not fit the model's context.
var ErrContextFull = llm.ErrContextFull

// ErrNoVision is returned for images sent to a model without a vision
// projector.
var ErrNoVision = llm.ErrNoVision

// ErrUnsupportedModel is wrapped by errors about a model file this build
// of llama.cpp cannot run (an architecture it does not know).
var ErrUnsupportedModel = llm.ErrUnsupportedModel

// ErrClosed is returned by requests made after Close.
var ErrClosed = errors.New("engine closed")

// DefaultSampling is llama.cpp's default sampling.
func DefaultSampling() Sampling { return llm.DefaultSampling() }

// Options configure an Engine.
type Options struct {
	Threads  int // CPU threads per model; 0 means all CPUs
	NumCtx   int // context tokens per request (sequence); 0 means min(4096, trained)
	NumBatch int // most tokens per decode step; 0 means 512
	// Parallel is the requests one model runs at once: a text model's
	// KV-cache slots, a speech model's transcriptions; 0 means 4.
	Parallel  int
	MaxQueue  int    // requests that may wait per model before ErrBusy; 0 means 64
	KVType    string // KV cache type: f16 (default), q8_0, q4_0
	FlashAttn bool   // flash-attention kernels
	NoMmap    bool   // read weights into memory instead of mapping them
	CacheDir  string // where converted speech models are kept ("" means the user cache)
	// MaxMemory is the budget for loaded models in bytes; 0 means three
	// quarters of physical memory.
	MaxMemory uint64
	// KeepAlive is how long an idle model stays loaded: 0 means
	// DefaultKeepAlive, a negative value forever. NoKeepAlive unloads a
	// model as soon as its last request ends.
	KeepAlive   time.Duration
	NoKeepAlive bool
	// MemoryWait bounds how long a request waits for memory to load its
	// model while running requests hold it all; past it the request fails
	// with ErrBusy. 0 waits until the request's context ends.
	MemoryWait time.Duration
	// QueueWait bounds how long a request waits in its model's queue for
	// one of the model's Parallel places; past it the request fails with
	// ErrBusy. 0 waits until the request's context ends.
	QueueWait time.Duration
	// SpeechBackend names the recognizer: "native" (default) or one linked
	// in by a build tag, such as "whispercpp".
	SpeechBackend string

	// GPULayers is how much of each model goes to a GPU: 0 (the default)
	// none; N the first N layers of a text model; AllGPULayers every layer
	// that fits. Speech and voice models go to a GPU whole when it is not
	// 0. With no GPU (a CPU build, or no driver) models run on the CPU.
	GPULayers int
	// Devices names the GPUs models may go to, as llm.Devices names them
	// ("Vulkan0"); empty: every GPU.
	Devices []string
	// MaxDeviceMemory is the budget of each GPU in bytes; 0 means nine
	// tenths of the memory it has free when the engine starts.
	MaxDeviceMemory uint64
}

// Engine owns loaded models and schedules the requests made to them. Its
// methods are safe for concurrent use.
type Engine struct {
	opts      Options
	budget    uint64
	keepAlive time.Duration
	// gate shares the CPU cores among the models computing at once (see
	// package compute).
	gate *compute.Gate

	mu     sync.Mutex // guards loaded, used, freed, closed, loads, unloads and every loaded's bookkeeping
	loaded map[string]*loaded
	used   uint64       // estimated bytes of the loaded models in RAM
	gpus   []*gpuBudget // the GPUs models may be placed on (their used bytes too)
	// gpusOnce finds the GPUs when a model first asks for one: an engine
	// that never offloads does not touch the GPU backends.
	gpusOnce sync.Once
	freed    chan struct{} // closed (and replaced) whenever memory or a model is released
	closed   bool
	loads    int
	unloads  int

	onRunner func(*textRunner) // test seam: sees each text runner as it starts
}

// textModel is a loaded text model, its batching runner and, once a
// request asked for one, its vision projector.
type textModel struct {
	model  *llm.Model
	runner *textRunner

	attach   sync.Mutex      // held while a projector attaches, one at a time
	mu       sync.Mutex      // guards proj, projPath and images, set once
	proj     *llm.Projector  // nil until a projector is attached
	projPath string          // its file
	images   *llm.ImageCache // embeddings of the images seen, by content hash

	embMu sync.Mutex    // guards emb, made on the first Embed
	emb   *llm.Embedder // the model's embedding context
}

// vision returns the model's projector and image cache (nil, nil for a
// text-only model).
func (m *textModel) vision() (*llm.Projector, *llm.ImageCache) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proj, m.images
}

// Close stops the runner and frees the model.
func (m *textModel) Close() error {
	m.runner.close()
	m.embMu.Lock()
	if m.emb != nil {
		m.emb.Close()
	}
	m.embMu.Unlock()
	if proj, _ := m.vision(); proj != nil {
		proj.Close()
	}
	return m.model.Close()
}

// New returns an engine; models load on first use.
func New(opts Options) *Engine {
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = 64
	}
	e := &Engine{opts: opts, budget: opts.MaxMemory, loaded: map[string]*loaded{}, freed: make(chan struct{}), gate: compute.Shared()}
	if e.budget == 0 {
		e.budget = defaultBudget()
	}
	switch {
	case opts.NoKeepAlive:
		e.keepAlive = 0
	case opts.KeepAlive == 0:
		e.keepAlive = DefaultKeepAlive
	default:
		e.keepAlive = opts.KeepAlive
	}
	return e
}

// Close refuses new requests, waits for those in flight, and unloads every
// model.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.closed = true
	for {
		busy := false
		for _, m := range e.loaded {
			busy = busy || m.refs > 0
		}
		if !busy {
			break
		}
		wait := e.freed
		e.mu.Unlock()
		<-wait
		e.mu.Lock()
	}
	var all []*loaded
	for _, m := range e.loaded {
		e.detach(m)
		all = append(all, m)
	}
	e.mu.Unlock()
	closeAll(all)
	return nil
}

// textModel returns a lease on the text model at path, loading it when
// needed, with the vision projector at projector attached when not empty.
// A model is loaded once however it is asked for (with its projector or
// without); a projector other than the one attached is refused.
func (e *Engine) textModel(ctx context.Context, path, projector string, gpuLayers *int) (*textModel, *lease, error) {
	l, err := e.acquire(ctx, modelRef{path: path, kind: kindText, gpuLayers: gpuLayers}, func(p placement) (closer, error) {
		lo := llm.LoadOptions{NoMmap: e.opts.NoMmap}
		if p.gpu != nil {
			lo.GPULayers, lo.Device = p.layers, p.device()
		}
		model, err := llm.Load(path, lo)
		if err != nil {
			return nil, err
		}
		perSeq, parallel, batch := e.textShape(model.File())
		r, err := newTextRunner(model, runnerOptions{perSeq: perSeq, parallel: parallel, budget: batch, joinBudget: max(batch/4, 32),
			maxQueue: e.opts.MaxQueue, queueWait: e.opts.QueueWait, threads: e.opts.Threads, kvType: e.opts.KVType, flashAttn: e.opts.FlashAttn,
			gate: e.gate, units: e.threads()})
		if err != nil {
			model.Close()
			return nil, err
		}
		if e.onRunner != nil {
			e.onRunner(r)
		}
		return &textModel{model: model, runner: r}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	tm := l.m.val.(*textModel)
	if projector != "" {
		if err := e.attachProjector(ctx, l, tm, projector); err != nil {
			l.release(nil)
			return nil, nil, err
		}
	}
	return tm, l, nil
}

// attachProjector opens the projector at path for tm (held by l), within
// the memory budget, unless it is attached already.
func (e *Engine) attachProjector(ctx context.Context, l *lease, tm *textModel, path string) error {
	tm.attach.Lock()
	defer tm.attach.Unlock()
	tm.mu.Lock()
	attached := tm.projPath
	tm.mu.Unlock()
	switch {
	case attached != "" && absPath(attached) == absPath(path):
		return nil
	case attached != "":
		return fmt.Errorf("%w: %s is loaded with the projector %s, not %s (unload it to change projectors)",
			ErrBadRequest, filepath.Base(l.m.path), filepath.Base(attached), filepath.Base(path))
	}
	est, err := models.EstimateMemory(path, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: no such file", path)
		}
		return err
	}
	// A projector goes to the GPU of its offloaded text model.
	onGPU := tm.model.OnGPU()
	if err := e.grow(ctx, l.m, est.Total(), onGPU, "the projector "+filepath.Base(path)); err != nil {
		return err
	}
	proj, err := tm.model.OpenProjector(path, e.threads())
	if err != nil {
		e.shrink(l.m, est.Total(), onGPU)
		return err
	}
	tm.mu.Lock()
	tm.proj, tm.projPath, tm.images = proj, path, llm.NewImageCache(imageCacheBytes)
	tm.mu.Unlock()
	tm.runner.proj.Store(proj)
	e.mu.Lock()
	l.m.projector = path
	e.mu.Unlock()
	return nil
}

// imageCacheBytes bounds each vision model's cache of image embeddings.
const imageCacheBytes = 256 << 20

func (e *Engine) threads() int {
	if e.opts.Threads > 0 {
		return e.opts.Threads
	}
	return runtime.NumCPU()
}

// GenerateOptions are the knobs of one generation.
type GenerateOptions struct {
	Sampling  Sampling
	MaxTokens int      // 0: until an end token or the context is full
	Stop      []string // stop strings
	Priority  Priority // order among waiting requests
	// KeepAlive, when set, replaces the model's keep-alive once this
	// request ends (0: unload at once when idle; negative: keep loaded).
	KeepAlive *time.Duration
	// GPULayers, when set, is the layers on a GPU the model is loaded with
	// (ollama's num_gpu; see Options.GPULayers): a model loaded with other
	// layers is loaded again when idle; one in use keeps its layers for
	// this request.
	GPULayers *int
	// Grammar (GBNF, root rule "root") or JSONSchema, when set, constrains
	// the output: only tokens that keep it a prefix of a string the grammar
	// accepts (a JSON text valid against the schema) are sampled. A schema
	// llama.cpp cannot convert is ErrBadGrammar.
	Grammar    string
	JSONSchema []byte
}

// GenerateRequest is a plain text completion: the prompt is continued as is,
// after the model's BOS token.
type GenerateRequest struct {
	Model  string // path of a GGUF file
	Prompt string
	// Projector is the vision projector (mmproj GGUF) for Images.
	Projector string
	Images    [][]byte // encoded image files, placed before the prompt
	GenerateOptions
}

// Generate continues req.Prompt, streaming chunks to onChunk (may be nil).
// Images, if any, come before the prompt's text. Cancelling ctx (or its
// deadline) ends the request: a waiting one leaves the queue, a running one
// frees its slot at the next decode step.
func (e *Engine) Generate(ctx context.Context, req GenerateRequest, onChunk func(Chunk) error) (Result, error) {
	if len(req.Images) > 0 && req.Projector == "" {
		return Result{}, fmt.Errorf("%w: %s has no vision projector (mmproj)", ErrNoVision, req.Model)
	}
	images, err := decodeImages(req.Images)
	if err != nil {
		return Result{}, err
	}
	m, l, err := e.textModel(ctx, req.Model, req.Projector, req.GPULayers)
	if err != nil {
		return Result{}, err
	}
	defer l.release(req.KeepAlive)
	if err := m.generates(req.Model); err != nil {
		return Result{}, err
	}
	if proj, cache := m.vision(); proj != nil {
		text, err := llm.PlaceImages(req.Prompt, len(images), proj.Marker())
		if err != nil {
			return Result{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		var parts []llm.PromptPart
		e.gate.Do(int(req.Priority), e.threads(), func() {
			parts, err = proj.Prepare(ctx, text, images, cache, true, false)
		})
		if err != nil {
			return Result{}, err
		}
		return m.run(ctx, nil, parts, req.GenerateOptions, onChunk)
	}
	toks, err := m.model.Tokenize(req.Prompt, true, false)
	if err != nil {
		return Result{}, err
	}
	return m.run(ctx, toks, nil, req.GenerateOptions, onChunk)
}

// ChatRequest is a conversation to answer with the model's chat template.
type ChatRequest struct {
	Model     string
	Projector string // vision projector (mmproj GGUF) for the messages' images
	Messages  []Message
	// Think asks a model that reasons before it answers (its template
	// says so; see Thinks) to do so (true) or not (false, where its
	// template can turn it off); nil leaves the model's way. A thinking
	// model's reasoning comes in Chunk.Thinking and Result.Thinking, apart
	// from the answer's text; with Think false any reasoning is dropped.
	// Think true for a model that does not think is ErrBadRequest.
	Think *bool
	// Tools the model may call, rendered by its own chat template; the
	// calls it makes come in Chunk.ToolCalls and Result.ToolCalls, with
	// FinishReason FinishToolCalls. ToolChoice: "" or "auto" (the model
	// decides), "none" (the tools are not offered), "required" (the answer
	// is one call, held to the template's call format by a grammar), or a
	// tool's name (a call of that one).
	Tools      []Tool
	ToolChoice string
	// SingleToolCall keeps an answer to at most one call (OpenAI's
	// parallel_tool_calls false): calls after the first are dropped.
	SingleToolCall bool
	// Template, when set, is a chat template in ollama's form (a
	// Modelfile's TEMPLATE; see llm.Template) that renders the prompt
	// instead of the model's own.
	Template string
	GenerateOptions
}

// Tool calling types; see llm.Tool.
type (
	Tool     = llm.Tool
	ToolCall = llm.ToolCall
)

// generates refuses the model at path when it only embeds.
func (m *textModel) generates(path string) error {
	if m.model.EmbeddingOnly() {
		return fmt.Errorf("%w: %s is an embedding model: it embeds texts and does not generate them", ErrBadRequest, filepath.Base(path))
	}
	return nil
}

// TakesTools reports whether a chat template renders tool definitions.
func TakesTools(template string) bool { return llm.TakesTools(template) }

// Template is a chat template in ollama's form (see ChatRequest.Template).
type Template = llm.Template

// ParseTemplate compiles a chat template in ollama's form.
func ParseTemplate(s string) (*Template, error) { return llm.ParseTemplate(s) }

// FinishToolCalls is the finish reason of an answer that called tools.
const FinishToolCalls = llm.FinishToolCalls

// hasToolTurns reports whether msgs hold tool calls or their results.
func hasToolTurns(msgs []Message) bool {
	for _, m := range msgs {
		if len(m.ToolCalls) > 0 || m.Role == "tool" {
			return true
		}
	}
	return false
}

// thinkTags are the markers a chat template's model reasons between.
var thinkTags = [][2]string{{"<think>", "</think>"}, {"[THINK]", "[/THINK]"}}

// Thinks reports whether a chat template has its model reason before it
// answers, and between which markers.
func Thinks(template string) (open, close string, ok bool) {
	for _, t := range thinkTags {
		if strings.Contains(template, t[0]) && strings.Contains(template, t[1]) {
			return t[0], t[1], true
		}
	}
	return "", "", false
}

// thinkingOff is what a template that can turn thinking off (Qwen 3's
// enable_thinking) puts after the assistant's opening: an empty
// reasoning, so that the model answers at once.
func thinkingOff(template, open, close string) (string, bool) {
	if !strings.Contains(template, "enable_thinking") {
		return "", false
	}
	return open + "\n\n" + close + "\n\n", true
}

// Chat answers the conversation in req as the assistant. A message's
// images go where its content holds ImageMarker, one each, or else before
// its text.
func (e *Engine) Chat(ctx context.Context, req ChatRequest, onChunk func(Chunk) error) (Result, error) {
	if len(req.Messages) == 0 {
		return Result{}, fmt.Errorf("%w: chat: no messages", ErrBadRequest)
	}
	var raw [][]byte
	for _, msg := range req.Messages {
		if len(msg.Images) > 0 && req.Projector == "" {
			return Result{}, fmt.Errorf("%w: %s has no vision projector (mmproj)", ErrNoVision, req.Model)
		}
		raw = append(raw, msg.Images...)
	}
	images, err := decodeImages(raw)
	if err != nil {
		return Result{}, err
	}
	m, l, err := e.textModel(ctx, req.Model, req.Projector, req.GPULayers)
	if err != nil {
		return Result{}, err
	}
	defer l.release(req.KeepAlive)
	if err := m.generates(req.Model); err != nil {
		return Result{}, err
	}
	msgs := req.Messages
	if proj, _ := m.vision(); proj != nil {
		msgs = slices.Clone(msgs)
		for i := range msgs {
			if msgs[i].Content, err = llm.PlaceImages(msgs[i].Content, len(msgs[i].Images), proj.Marker()); err != nil {
				return Result{}, fmt.Errorf("%w: message %d: %v", ErrBadRequest, i, err)
			}
		}
	}
	var custom *llm.Template
	tmpl := m.model.ChatTemplate()
	if req.Template != "" {
		if custom, err = llm.ParseTemplate(req.Template); err != nil {
			return Result{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		tmpl = req.Template
	}
	useTools := len(req.Tools) > 0 && req.ToolChoice != "none"
	var offered []Tool
	if useTools {
		offered = req.Tools
	}
	var prompt string
	switch {
	case custom != nil:
		prompt, err = m.model.FormatTemplate(ctx, custom, msgs, offered, req.Think)
	case useTools || hasToolTurns(msgs):
		prompt, err = m.model.FormatChatTools(msgs, offered, true)
	default:
		prompt, err = m.model.FormatChat(msgs, true)
	}
	if err != nil {
		return Result{}, fmt.Errorf("%w: %s: %v", ErrBadRequest, filepath.Base(req.Model), err)
	}
	if useTools && req.ToolChoice != "" && req.ToolChoice != "auto" {
		only := req.ToolChoice
		if only == "required" {
			only = ""
		}
		if req.Grammar != "" || req.JSONSchema != nil {
			return Result{}, fmt.Errorf("%w: a required tool call and a response format cannot both hold the answer", ErrBadRequest)
		}
		if req.Grammar, err = m.model.ToolCallGrammar(req.Tools, only, custom); err != nil {
			return Result{}, fmt.Errorf("%w: %s: %v", ErrBadRequest, filepath.Base(req.Model), err)
		}
	}
	open, close, thinks := Thinks(tmpl)
	if req.Think != nil && *req.Think && !thinks {
		return Result{}, fmt.Errorf("%w: %s does not think before it answers (its chat template has no reasoning markers)", ErrBadRequest, filepath.Base(req.Model))
	}
	var tp *thinking.Parser
	dropThinking := false
	if thinks {
		if req.Think != nil && !*req.Think {
			// (a custom template reads .Think itself)
			if off, ok := thinkingOff(tmpl, open, close); ok && custom == nil {
				prompt += off
			}
			dropThinking = true
		}
		tp = &thinking.Parser{OpeningTag: open, ClosingTag: close}
		if strings.HasSuffix(strings.TrimRightFunc(prompt, unicode.IsSpace), open) {
			tp.AddContent(open) // the prompt opened the reasoning already
		}
	}
	var calls *llm.ToolParser
	if useTools {
		calls = llm.NewToolParser(llm.ToolTag(tmpl), req.Tools)
	}
	if tp == nil && calls == nil {
		return e.runChat(ctx, m, prompt, images, req, onChunk)
	}
	// The answer's text is split into reasoning, tool calls and what is
	// shown, as it streams.
	var text, thought strings.Builder
	var made []ToolCall
	next := onChunk
	forward := func(ch Chunk) error {
		text.WriteString(ch.Text)
		thought.WriteString(ch.Thinking)
		made = append(made, ch.ToolCalls...)
		if next == nil || (ch.Text == "" && ch.Thinking == "" && len(ch.ToolCalls) == 0 && len(ch.Tokens) == 0) {
			return nil
		}
		return next(ch)
	}
	onChunk = func(ch Chunk) error {
		if tp != nil {
			th, content := tp.AddContent(ch.Text)
			if dropThinking {
				th = ""
			}
			ch.Text, ch.Thinking = content, th
		}
		if calls != nil {
			cs, content := calls.Add(ch.Text)
			if req.SingleToolCall && len(made)+len(cs) > 1 {
				cs = cs[:max(0, 1-len(made))]
			}
			for i := range cs {
				cs[i].ID = newCallID()
				cs[i].Function.Index = len(made) + i
			}
			ch.Text, ch.ToolCalls = content, cs
		}
		return forward(ch)
	}
	res, err := e.runChat(ctx, m, prompt, images, req, onChunk)
	if err == nil && calls != nil {
		if rest := calls.Flush(); rest != "" {
			err = forward(Chunk{Text: rest})
		}
	}
	res.Text, res.Thinking, res.ToolCalls = text.String(), thought.String(), made
	if err == nil && len(made) > 0 {
		res.FinishReason = FinishToolCalls
	}
	return res, err
}

// newCallID names a tool call.
func newCallID() string {
	var b [12]byte
	rand.Read(b[:])
	return "call_" + hex.EncodeToString(b[:])
}

// runChat generates the answer to a rendered chat prompt.
func (e *Engine) runChat(ctx context.Context, m *textModel, prompt string, images []*vision.Image, req ChatRequest, onChunk func(Chunk) error) (Result, error) {
	proj, cache := m.vision()
	// The model's own template supplies any BOS it wants, so none is
	// added here; a template in ollama's form leaves it to the tokenizer
	// (the model's add_bos_token), as ollama does.
	bos := req.Template != ""
	if proj != nil {
		var parts []llm.PromptPart
		var err error
		e.gate.Do(int(req.Priority), e.threads(), func() {
			parts, err = proj.Prepare(ctx, prompt, images, cache, bos, true)
		})
		if err != nil {
			return Result{}, err
		}
		return m.run(ctx, nil, parts, req.GenerateOptions, onChunk)
	}
	toks, err := m.model.Tokenize(prompt, bos, true)
	if err != nil {
		return Result{}, err
	}
	return m.run(ctx, toks, nil, req.GenerateOptions, onChunk)
}

// embeddingContext is the longest text one embedding takes, in tokens.
const embeddingContext = 2048

// EmbedRequest is texts to turn into embeddings.
type EmbedRequest struct {
	Model  string
	Inputs []string
	// Truncate cuts an input over the model's context to it; without it,
	// such an input is ErrContextFull.
	Truncate bool
	// Normalize scales each embedding to unit length; Dimensions, when
	// positive and smaller than the model's width, keeps the first ones
	// (Matryoshka embeddings), before normalizing.
	Normalize  bool
	Dimensions int
	Priority   Priority
	KeepAlive  *time.Duration
}

// EmbedResult is the embeddings of an EmbedRequest's inputs, in order.
type EmbedResult struct {
	Embeddings   [][]float32
	PromptTokens int
	Duration     time.Duration
}

// Embed computes the embeddings of req's inputs: an embedding model's (a
// BERT-family GGUF, pooled as it says) or a generative model's (its last
// hidden states' mean). The model's embedding context is made on first
// use beside its generation context; the computation shares the CPU
// through the engine's gate, in req.Priority's turn.
func (e *Engine) Embed(ctx context.Context, req EmbedRequest) (EmbedResult, error) {
	start := time.Now()
	if len(req.Inputs) == 0 {
		return EmbedResult{}, fmt.Errorf("%w: embed: no input", ErrBadRequest)
	}
	if req.Dimensions < 0 {
		return EmbedResult{}, fmt.Errorf("%w: dimensions %d must not be negative", ErrBadRequest, req.Dimensions)
	}
	m, l, err := e.textModel(ctx, req.Model, "", nil)
	if err != nil {
		return EmbedResult{}, err
	}
	defer l.release(req.KeepAlive)
	m.embMu.Lock()
	if m.emb == nil {
		// The embedding context's KV cache and compute buffers count in
		// the model's share of the budget, as a projector's do.
		est := m.model.File().EstimateMemoryWith(models.EstimateOptions{Context: embeddingContext, KVType: e.opts.KVType})
		need := est.KVCache + est.Compute
		if err = e.grow(ctx, l.m, need, false, "its embedding context"); err == nil {
			if m.emb, err = m.model.NewEmbedder(e.threads(), embeddingContext); err != nil {
				e.shrink(l.m, need, false)
			}
		}
	}
	emb := m.emb
	m.embMu.Unlock()
	if err != nil {
		return EmbedResult{}, err
	}
	if req.Dimensions > emb.NumEmbd() {
		return EmbedResult{}, fmt.Errorf("%w: dimensions %d: %s makes embeddings of %d", ErrBadRequest, req.Dimensions, filepath.Base(req.Model), emb.NumEmbd())
	}
	var vecs [][]float32
	var n int
	e.gate.Do(int(req.Priority), e.threads(), func() {
		vecs, n, err = emb.Embed(ctx, req.Inputs, req.Truncate)
	})
	if errors.Is(err, llm.ErrTooLong) {
		return EmbedResult{}, fmt.Errorf("%w: %v (truncate cuts it)", ErrContextFull, err)
	}
	if err != nil {
		return EmbedResult{}, err
	}
	for i, v := range vecs {
		if req.Dimensions > 0 {
			v = v[:req.Dimensions]
		}
		if req.Normalize {
			v = llm.Normalize(v)
		}
		vecs[i] = v
	}
	return EmbedResult{Embeddings: vecs, PromptTokens: n, Duration: time.Since(start)}, nil
}

// ImageMarker, in a chat message's content, says where the next of its
// images goes.
const ImageMarker = llm.ImageMarker

// ErrBadRequest is wrapped by errors about a request's own content (no
// messages, an unknown role, image markers that do not match the images).
var ErrBadRequest = errors.New("bad request")

// ImageLimits bound the images requests may carry.
var ImageLimits = vision.Limits{}

// decodeImages decodes encoded image files, within ImageLimits.
func decodeImages(raw [][]byte) ([]*vision.Image, error) {
	var out []*vision.Image
	for i, b := range raw {
		im, err := vision.DecodeBytes(b, ImageLimits)
		if err != nil {
			return nil, fmt.Errorf("%w: image %d: %w", ErrBadImage, i+1, err)
		}
		out = append(out, im)
	}
	return out, nil
}

// ErrBadImage is wrapped by errors about an image that cannot be used.
var ErrBadImage = errors.New("bad image")

func (m *textModel) run(ctx context.Context, prompt []llm.Token, parts []llm.PromptPart, o GenerateOptions, onChunk func(Chunk) error) (Result, error) {
	gr, err := m.grammar(o)
	if err != nil {
		return Result{PromptTokens: len(prompt)}, err
	}
	if gr != nil {
		// generate returns only once the runner has let go of the request.
		defer gr.Close()
	}
	return m.runner.generate(ctx, llm.Request{Prompt: prompt, Sampling: o.Sampling, MaxTokens: o.MaxTokens, Stop: o.Stop, Grammar: gr}, parts, o.Priority, onChunk)
}

// SystemFeatures lists the CPU features the native backends were compiled
// with ("AVX2", "AVX512", ...).
func SystemFeatures() []string { return llm.SystemFeatures() }

// Describe returns llama.cpp's one-line description of a loaded model.
func (e *Engine) Describe(ctx context.Context, path string) (string, error) {
	m, l, err := e.textModel(ctx, path, "", nil)
	if err != nil {
		return "", err
	}
	defer l.release(nil)
	return fmt.Sprintf("%s, context %d per request, %d requests at once", m.model.Description(), m.runner.perSeq, len(m.runner.slots)), nil
}
