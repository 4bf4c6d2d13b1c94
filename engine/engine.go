package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/owlengine/owl/llm"
	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/speech"
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

// ErrClosed is returned by requests made after Close.
var ErrClosed = errors.New("engine closed")

// DefaultSampling is llama.cpp's default sampling.
func DefaultSampling() Sampling { return llm.DefaultSampling() }

// Options configure an Engine.
type Options struct {
	Threads   int    // CPU threads per model; 0 means all CPUs
	NumCtx    int    // context tokens per model; 0 means min(4096, trained)
	NumBatch  int    // prompt tokens per decode step; 0 means 512
	KVType    string // KV cache type: f16 (default), q8_0, q4_0
	FlashAttn bool   // flash-attention kernels
	NoMmap    bool   // read weights into memory instead of mapping them
	CacheDir  string // where converted speech models are kept ("" means the user cache)
	// SpeechBackend names the recognizer: "native" (default) or one linked
	// in by a build tag, such as "whispercpp".
	SpeechBackend string
}

// Engine owns loaded models. Its methods are safe for concurrent use.
type Engine struct {
	opts Options

	mu     sync.Mutex // guards models, speech and closed
	models map[string]*entry[*textModel]
	speech map[string]*entry[speech.Recognizer]
	closed bool
}

// entry is a model loaded, or being loaded, once for all who ask.
type entry[T any] struct {
	ready chan struct{} // closed when loading ends
	val   T
	err   error // the load error, set before ready is closed
}

// load returns the value for path in m, calling fn to load it when absent.
// Concurrent callers for the same path share one load; a failed load is
// reported to all of them and not remembered.
func load[T any](e *Engine, m map[string]*entry[T], path string, fn func() (T, error)) (T, error) {
	key, err := filepath.Abs(path)
	if err != nil {
		key = path
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		var zero T
		return zero, ErrClosed
	}
	en, ok := m[key]
	if !ok {
		en = &entry[T]{ready: make(chan struct{})}
		m[key] = en
	}
	e.mu.Unlock()
	if ok {
		<-en.ready
		return en.val, en.err
	}
	en.val, en.err = fn()
	if en.err != nil {
		e.mu.Lock()
		delete(m, key)
		e.mu.Unlock()
	}
	close(en.ready)
	return en.val, en.err
}

// textModel is a loaded model with its one session; mu serializes requests.
type textModel struct {
	mu      sync.Mutex // guards session use
	model   *llm.Model
	session *llm.Session
}

// New returns an engine; models load on first use.
func New(opts Options) *Engine {
	return &Engine{opts: opts, models: map[string]*entry[*textModel]{}, speech: map[string]*entry[speech.Recognizer]{}}
}

// Close unloads every model. Requests in flight finish first.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.closed = true
	text, sp := e.models, e.speech
	e.models, e.speech = map[string]*entry[*textModel]{}, map[string]*entry[speech.Recognizer]{}
	e.mu.Unlock()
	for _, en := range text {
		<-en.ready
		if en.err == nil {
			en.val.mu.Lock()
			en.val.session.Close()
			en.val.model.Close()
			en.val.mu.Unlock()
		}
	}
	for _, en := range sp {
		<-en.ready
		if en.err == nil {
			en.val.Close()
		}
	}
	return nil
}

// textModel returns the loaded text model for path, loading it once.
func (e *Engine) textModel(path string) (*textModel, error) {
	return load(e, e.models, path, func() (*textModel, error) {
		model, err := llm.Load(path, llm.LoadOptions{NoMmap: e.opts.NoMmap})
		if err != nil {
			return nil, err
		}
		session, err := model.NewSession(e.sessionOptions())
		if err != nil {
			model.Close()
			return nil, err
		}
		return &textModel{model: model, session: session}, nil
	})
}

func (e *Engine) sessionOptions() llm.SessionOptions {
	return llm.SessionOptions{NumCtx: e.opts.NumCtx, NumBatch: e.opts.NumBatch, Threads: e.opts.Threads, KVType: e.opts.KVType, FlashAttn: e.opts.FlashAttn}
}

// GenerateOptions are the knobs of one generation.
type GenerateOptions struct {
	Sampling  Sampling
	MaxTokens int      // 0: until an end token or the context is full
	Stop      []string // stop strings
}

// GenerateRequest is a plain text completion: the prompt is continued as is,
// after the model's BOS token.
type GenerateRequest struct {
	Model  string // path of a GGUF file
	Prompt string
	GenerateOptions
}

// Generate continues req.Prompt, streaming chunks to onChunk (may be nil).
func (e *Engine) Generate(ctx context.Context, req GenerateRequest, onChunk func(Chunk) error) (Result, error) {
	m, err := e.textModel(req.Model)
	if err != nil {
		return Result{}, err
	}
	toks, err := m.model.Tokenize(req.Prompt, true, false)
	if err != nil {
		return Result{}, err
	}
	return m.run(ctx, toks, req.GenerateOptions, onChunk)
}

// ChatRequest is a conversation to answer with the model's chat template.
type ChatRequest struct {
	Model    string
	Messages []Message
	GenerateOptions
}

// Chat answers the conversation in req as the assistant.
func (e *Engine) Chat(ctx context.Context, req ChatRequest, onChunk func(Chunk) error) (Result, error) {
	if len(req.Messages) == 0 {
		return Result{}, errors.New("chat: no messages")
	}
	m, err := e.textModel(req.Model)
	if err != nil {
		return Result{}, err
	}
	prompt, err := m.model.FormatChat(req.Messages, true)
	if err != nil {
		return Result{}, err
	}
	// The template supplies any BOS it wants, so none is added here.
	toks, err := m.model.Tokenize(prompt, false, true)
	if err != nil {
		return Result{}, err
	}
	return m.run(ctx, toks, req.GenerateOptions, onChunk)
}

func (m *textModel) run(ctx context.Context, prompt []llm.Token, o GenerateOptions, onChunk func(Chunk) error) (Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.session.Generate(ctx, llm.Request{Prompt: prompt, Sampling: o.Sampling, MaxTokens: o.MaxTokens, Stop: o.Stop}, onChunk)
}

// ModelInfo describes a model file without loading its weights.
type ModelInfo = models.GGUFSummary

// InspectModel reads the metadata of the model file at path.
func InspectModel(path string) (ModelInfo, error) {
	g, err := models.ReadGGUF(path)
	if err != nil {
		return ModelInfo{}, err
	}
	return g.Summary(), nil
}

// SystemFeatures lists the CPU features the native backends were compiled
// with ("AVX2", "AVX512", ...).
func SystemFeatures() []string { return llm.SystemFeatures() }

// Describe returns llama.cpp's one-line description of a loaded model.
func (e *Engine) Describe(path string) (string, error) {
	m, err := e.textModel(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s, context %d", m.model.Description(), m.session.NumCtx()), nil
}
