package llm

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/owlengine/owl/bindings/llama"
)

// ErrContextFull is returned when a prompt does not fit the context.
var ErrContextFull = errors.New("prompt does not fit the context")

// SessionOptions size a Session.
type SessionOptions struct {
	NumCtx    int    // KV cells; 0 means min(4096, the trained context)
	NumBatch  int    // most tokens per decode step; 0 means 512
	Threads   int    // CPU threads; 0 means runtime.NumCPU()
	KVType    string // "f16" (default), "q8_0" or "q4_0"
	FlashAttn bool   // flash-attention kernels (needed for a quantized V cache)
}

// Session is one KV cache over a Model. It serves one request at a time and
// is not safe for concurrent use.
type Session struct {
	model  *Model
	ctx    *llama.Context
	cached []Token // the tokens whose keys and values sit in the cache, in order
}

// NewSession creates a session over m.
func (m *Model) NewSession(o SessionOptions) (*Session, error) {
	if o.NumCtx <= 0 {
		o.NumCtx = min(4096, max(m.TrainContext(), 512))
	}
	if o.NumBatch <= 0 {
		o.NumBatch = 512
	}
	o.NumBatch = min(o.NumBatch, o.NumCtx)
	if o.Threads <= 0 {
		o.Threads = runtime.NumCPU()
	}
	if err := m.checkKVType(o.KVType); err != nil {
		return nil, err
	}
	kv := llama.KVType(o.KVType)
	if kv != "" && kv != llama.KVF16 && !o.FlashAttn {
		o.FlashAttn = true // llama.cpp needs flash attention for a quantized V cache
	}
	c, err := llama.NewContext(m.m, llama.ContextParams{NumCtx: o.NumCtx, NumBatch: o.NumBatch, Threads: o.Threads, KVType: kv, FlashAttn: o.FlashAttn})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.path, err)
	}
	return &Session{model: m, ctx: c}, nil
}

// Close frees the session's KV cache. It is idempotent.
func (s *Session) Close() error { return s.ctx.Close() }

// NumCtx is the number of tokens the session's context holds.
func (s *Session) NumCtx() int { return s.ctx.NumCtx() }

// Request is one generation.
type Request struct {
	Prompt    []Token
	Sampling  Sampling
	MaxTokens int      // 0 means until the context is full
	Stop      []string // generation ends before the first of these strings
	IgnoreEOS bool     // keep generating past end-of-generation tokens (benchmarks)
	// Grammar, when set, allows only tokens that keep the output a prefix
	// of a string the grammar accepts. The caller owns it and closes it
	// after the generation.
	Grammar *Grammar
}

// Chunk is a piece of generated output passed to the callback.
type Chunk struct {
	Text   string // text safe to show (whole characters, no partial stop string)
	Tokens []Token
}

// Finish reasons.
const (
	FinishStop   = "stop"   // an end-of-generation token or a stop string
	FinishLength = "length" // MaxTokens reached or the context is full
)

// Result describes a finished generation.
type Result struct {
	Text             string
	Tokens           []Token
	FinishReason     string
	PromptTokens     int           // tokens of the prompt
	CachedTokens     int           // prompt tokens reused from the previous request
	QueueDuration    time.Duration // waiting for a slot before the prompt's evaluation began
	PromptDuration   time.Duration // evaluating the prompt tokens that were not cached
	GenerateDuration time.Duration // sampling and evaluating the generated tokens
}

// Generate runs req, calling onChunk (when not nil) as text becomes safe to
// show; an error from onChunk ends generation and is returned. Cancelling ctx
// stops generation between tokens (and interrupts a long prompt evaluation)
// and returns ctx.Err() with the result so far.
func (s *Session) Generate(ctx context.Context, req Request, onChunk func(Chunk) error) (Result, error) {
	g, err := s.model.NewGeneration(req)
	if err != nil {
		return Result{PromptTokens: len(req.Prompt)}, err
	}
	nCtx := s.ctx.NumCtx()
	if len(req.Prompt) >= nCtx {
		return g.Result(), fmt.Errorf("%w: the prompt has %d tokens, the context holds %d (raise --ctx-size or shorten the prompt)", ErrContextFull, len(req.Prompt), nCtx)
	}
	if err := ctx.Err(); err != nil {
		return g.Result(), err
	}
	// Cancelling ctx interrupts a native decode in flight. The abort may run
	// on its own goroutine after Generate returns, so it checks done (under
	// abortMu) and cannot poison the session's next request.
	var abortMu sync.Mutex
	done := false
	stopAbort := context.AfterFunc(ctx, func() {
		abortMu.Lock()
		defer abortMu.Unlock()
		if !done {
			s.ctx.Abort()
		}
	})
	defer func() {
		stopAbort()
		abortMu.Lock()
		done = true
		abortMu.Unlock()
		s.ctx.ClearAbort()
	}()

	// Reuse the longest cached prefix; at least the last prompt token is
	// evaluated again so that its logits exist.
	start := time.Now()
	keep := CommonPrefix(s.cached, req.Prompt)
	keep = min(keep, len(req.Prompt)-1)
	if !s.ctx.SeqRemove(0, int32(keep), -1) {
		keep = 0
		s.ctx.ClearKV()
	}
	s.cached = s.cached[:keep]
	logits, err := s.eval(ctx, req.Prompt[keep:])
	promptTime := time.Since(start)
	start = time.Now()
	result := func() Result {
		g.SetTimes(keep, promptTime, time.Since(start))
		return g.Result()
	}
	if err != nil {
		return result(), err
	}
	emit := func(c Chunk) error {
		if onChunk == nil || (c.Text == "" && len(c.Tokens) == 0) {
			return nil
		}
		return onChunk(c)
	}
	for {
		c, finished := g.Step(logits)
		if !finished && len(s.cached)+1 >= nCtx {
			f := g.Finish(FinishLength)
			c.Text += f.Text
			finished = true
		}
		if err := emit(c); err != nil {
			return result(), err
		}
		if finished {
			return result(), nil
		}
		if logits, err = s.eval(ctx, []Token{g.Last()}); err != nil {
			return result(), err
		}
	}
}

// eval decodes tokens after the cached ones, in batches, and returns the
// logits of the last.
func (s *Session) eval(ctx context.Context, tokens []Token) ([]float32, error) {
	var logits []float32
	nb := s.ctx.NumBatch()
	for len(tokens) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(nb, len(tokens))
		pos := make([]int32, n)
		seq := make([]int32, n)
		want := make([]bool, n)
		for i := range pos {
			pos[i] = int32(len(s.cached) + i)
		}
		want[n-1] = n == len(tokens)
		out, err := s.ctx.Decode(tokens[:n], pos, seq, want)
		if err != nil {
			// What a failed or aborted step left in the cache is unknown.
			s.ctx.ClearKV()
			s.cached = s.cached[:0]
			if errors.Is(err, llama.ErrAborted) && ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("%s: %w", s.model.path, err)
		}
		s.cached = append(s.cached, tokens[:n]...)
		tokens = tokens[n:]
		logits = out
	}
	return logits, nil
}

// CommonPrefix is the number of leading tokens a and b share.
func CommonPrefix(a, b []Token) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
