package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/owlengine/owl/llm"
)

// BenchRequest measures prompt evaluation and generation speed on a model,
// as llama-bench's pp and tg tests do.
type BenchRequest struct {
	Model        string
	PromptTokens int // tokens evaluated as one prompt (pp)
	GenTokens    int // tokens generated one at a time (tg)
	Repetitions  int
}

// BenchResult holds one figure per repetition.
type BenchResult struct {
	Description  string
	LoadDuration time.Duration
	PromptTokens int
	GenTokens    int
	PromptTPS    []float64 // prompt tokens per second
	GenTPS       []float64 // generated tokens per second
}

// BenchLLM runs req on a fresh copy of the model, independent of any model
// the engine already holds.
func (e *Engine) BenchLLM(ctx context.Context, req BenchRequest) (BenchResult, error) {
	if req.PromptTokens < 1 || req.GenTokens < 1 || req.Repetitions < 1 {
		return BenchResult{}, fmt.Errorf("bench: prompt tokens %d, generated tokens %d and repetitions %d must be positive", req.PromptTokens, req.GenTokens, req.Repetitions)
	}
	start := time.Now()
	m, err := llm.Load(req.Model, llm.LoadOptions{NoMmap: e.opts.NoMmap})
	if err != nil {
		return BenchResult{}, err
	}
	defer m.Close()
	o := llm.SessionOptions{NumBatch: e.opts.NumBatch, Threads: e.opts.Threads, KVType: e.opts.KVType, FlashAttn: e.opts.FlashAttn}
	o.NumCtx = req.PromptTokens + req.GenTokens + 1
	res := BenchResult{Description: m.Description(), LoadDuration: time.Since(start), PromptTokens: req.PromptTokens, GenTokens: req.GenTokens}

	// Prompt: ordinary tokens cycled from the vocabulary, never a control or
	// end-of-generation token.
	var prompt []llm.Token
	for t := llm.Token(0); len(prompt) < req.PromptTokens; t = (t + 7) % llm.Token(m.VocabSize()) {
		if !m.IsEOG(t) && m.Piece(t) != "" {
			prompt = append(prompt, t)
		}
	}
	for range req.Repetitions {
		// A fresh session per repetition: nothing is reused from a cache.
		s, err := m.NewSession(o)
		if err != nil {
			return res, err
		}
		r, err := s.Generate(ctx, llm.Request{Prompt: prompt, MaxTokens: req.GenTokens + 1, IgnoreEOS: true}, nil)
		s.Close()
		if err != nil {
			return res, err
		}
		res.PromptTPS = append(res.PromptTPS, float64(req.PromptTokens)/r.PromptDuration.Seconds())
		// The last token is sampled but not evaluated: GenTokens decode steps.
		res.GenTPS = append(res.GenTPS, float64(len(r.Tokens)-1)/r.GenerateDuration.Seconds())
	}
	return res, nil
}
