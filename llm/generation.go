package llm

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Generation is the state of one request's output, independent of where its
// tokens are evaluated: the sampler, the text held back for stop strings and
// whole characters, the tokens and text so far. A scheduler feeds it the
// logits of each step (package engine does, for many at once).
type Generation struct {
	model   *Model
	req     Request
	sampler *Sampler
	stream  textStream
	text    []byte
	res     Result
	done    bool
}

// NewGeneration checks req and starts a generation of it on m.
func (m *Model) NewGeneration(req Request) (*Generation, error) {
	if len(req.Prompt) == 0 {
		return nil, errors.New("empty prompt")
	}
	if err := req.Sampling.Validate(); err != nil {
		return nil, err
	}
	for _, stop := range req.Stop {
		if stop == "" || !utf8.ValidString(stop) {
			return nil, fmt.Errorf("stop string %q must be non-empty UTF-8", stop)
		}
	}
	if req.MaxTokens < 0 {
		return nil, fmt.Errorf("max tokens %d must not be negative", req.MaxTokens)
	}
	nv := Token(m.VocabSize())
	for i, t := range req.Prompt {
		if t < 0 || t >= nv {
			return nil, fmt.Errorf("prompt token %d at %d is outside the vocabulary (%d tokens)", t, i, nv)
		}
	}
	g := &Generation{model: m, req: req, sampler: NewSampler(req.Sampling), stream: textStream{stops: req.Stop}}
	for _, t := range req.Prompt {
		g.sampler.Accept(t)
	}
	g.res.PromptTokens = len(req.Prompt)
	return g, nil
}

// Request is what the generation was started with.
func (g *Generation) Request() Request { return g.req }

// Step samples the next token from logits. It returns the text that became
// safe to show (possibly empty), the token when one was produced, and
// whether the generation is now finished; a finished generation's last
// token, if any, needs no evaluation.
func (g *Generation) Step(logits []float32) (c Chunk, done bool) {
	if g.done {
		return Chunk{}, true
	}
	if gr := g.req.Grammar; gr != nil && !gr.constrain(logits) {
		return g.Finish(FinishStop), true // the grammar allows nothing more
	}
	tok := g.sampler.Sample(logits)
	if g.req.Grammar != nil && !allowed(logits, tok) {
		tok = argmax(logits) // rounding in sampling picked a masked token
	}
	if g.model.IsEOG(tok) && !g.req.IgnoreEOS {
		return g.Finish(FinishStop), true
	}
	if g.req.Grammar != nil {
		g.req.Grammar.accept(tok)
	}
	g.sampler.Accept(tok)
	g.res.Tokens = append(g.res.Tokens, tok)
	out, stopped := g.stream.push(g.model.Piece(tok))
	g.text = append(g.text, out...)
	c = Chunk{Text: out, Tokens: []Token{tok}}
	switch {
	case stopped:
		g.done = true
		g.res.FinishReason = FinishStop
		g.res.Text = string(g.text)
	case g.req.MaxTokens > 0 && len(g.res.Tokens) >= g.req.MaxTokens:
		f := g.Finish(FinishLength)
		c.Text += f.Text
	}
	return c, g.done
}

// Last is the last token produced.
func (g *Generation) Last() Token { return g.res.Tokens[len(g.res.Tokens)-1] }

// Finish ends the generation for reason (FinishLength when the context is
// full, for instance) and returns the text still held back.
func (g *Generation) Finish(reason string) Chunk {
	if g.done {
		return Chunk{}
	}
	g.done = true
	g.res.FinishReason = reason
	rest := g.stream.flush()
	g.text = append(g.text, rest...)
	g.res.Text = string(g.text)
	return Chunk{Text: rest}
}

// Result is the result so far; Text is complete once Done.
func (g *Generation) Result() Result {
	r := g.res
	if !g.done {
		r.Text = string(g.text)
	}
	return r
}

// SetPromptTokens records the prompt's size in KV cells, images included
// (the Request's Prompt holds its text tokens only).
func (g *Generation) SetPromptTokens(n int) { g.res.PromptTokens = n }

// SetTimes records where the time went, for the Result.
func (g *Generation) SetTimes(cached int, prompt, generate time.Duration) {
	g.res.CachedTokens, g.res.PromptDuration, g.res.GenerateDuration = cached, prompt, generate
}

// ErrContextFull is returned when a prompt does not fit the context.
var ErrContextFull = errors.New("prompt does not fit the context")

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
	// Thinking is reasoning text, which the engine's chat separates from
	// Text for models that think before they answer.
	Thinking string
	// ToolCalls are the calls the engine's chat parsed from the answer.
	ToolCalls []ToolCall
}

// Finish reasons.
const (
	FinishStop   = "stop"   // an end-of-generation token or a stop string
	FinishLength = "length" // MaxTokens reached or the context is full
	// FinishToolCalls: the answer called tools (the engine's chat).
	FinishToolCalls = "tool_calls"
)

// Result describes a finished generation.
type Result struct {
	Text             string
	Thinking         string     // the reasoning separated from Text (see Chunk.Thinking)
	ToolCalls        []ToolCall // the tool calls parsed from the answer
	Tokens           []Token
	FinishReason     string
	PromptTokens     int           // tokens of the prompt
	CachedTokens     int           // prompt tokens reused from the previous request
	QueueDuration    time.Duration // waiting for a slot before the prompt's evaluation began
	PromptDuration   time.Duration // evaluating the prompt tokens that were not cached
	GenerateDuration time.Duration // sampling and evaluating the generated tokens
}

// CommonPrefix is the number of leading tokens a and b share.
func CommonPrefix(a, b []Token) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
