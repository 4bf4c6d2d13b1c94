package llm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/owlengine/owl/bindings/llama"
)

// Embeddings: a model's pooled hidden states for a text, from a context of
// its own in llama.cpp's embedding mode, pooled as the GGUF says
// (pooling_type: mean, CLS, last) or, for a generative model that says
// nothing, by the mean.

// ErrTooLong is returned for an input longer than the embedding context
// when truncation is off.
var ErrTooLong = errors.New("input longer than the model's context")

// Embedder computes a model's embeddings. It is safe for concurrent use
// (one computation at a time).
type Embedder struct {
	m    *Model
	mu   sync.Mutex
	c    *llama.Context
	nCtx int
	nSeq int
}

// NewEmbedder makes an embedding context of nCtx tokens (a text's most).
func (m *Model) NewEmbedder(threads, nCtx int) (*Embedder, error) {
	const nSeq = 8
	nCtx = min(nCtx, m.m.TrainContext())
	// The GGUF's pooling_type, given to llama.cpp as such: its loader
	// reads the key only for some architectures (a llama converted for
	// embeddings would pool nothing).
	pooling := llama.PoolingMean
	if p, ok := m.file.Uint(m.file.Architecture() + ".pooling_type"); ok {
		switch p {
		case 1:
			pooling = llama.PoolingMean
		case 2:
			pooling = llama.PoolingCLS
		case 3:
			pooling = llama.PoolingLast
		default: // none, rank: as the model says
			pooling = llama.PoolingModel
		}
	}
	c, err := llama.NewContext(m.m, llama.ContextParams{NumCtx: nCtx, NumBatch: nCtx, NumSeq: nSeq, Threads: threads,
		KVType: llama.KVF16, UnifiedKV: true, Embeddings: true, Pooling: pooling})
	if err != nil {
		return nil, err
	}
	if !c.PoolingUsed() {
		c.Close()
		return nil, fmt.Errorf("%w: %s pools no embeddings (pooling_type none)", ErrUnsupportedModel, m.path)
	}
	return &Embedder{m: m, c: c, nCtx: c.NumBatch(), nSeq: nSeq}, nil
}

// Close frees the context.
func (e *Embedder) Close() error { return e.c.Close() }

// NumEmbd is the width of the embeddings.
func (e *Embedder) NumEmbd() int { return e.m.m.NumEmbd() }

// Embed returns texts' embeddings (not normalized) and the tokens they
// took. A text over the context is cut to it with truncate, else
// ErrTooLong. Several texts go through one decode, each its own sequence.
func (e *Embedder) Embed(ctx context.Context, texts []string, truncate bool) ([][]float32, int, error) {
	toks := make([][]Token, len(texts))
	total := 0
	for i, t := range texts {
		tk, err := e.m.Tokenize(strings.ReplaceAll(t, "\x00", ""), true, false)
		if err != nil {
			return nil, 0, err
		}
		if len(tk) == 0 {
			return nil, 0, fmt.Errorf("input %d is empty", i)
		}
		if len(tk) > e.nCtx {
			if !truncate {
				return nil, 0, fmt.Errorf("%w: input %d is %d tokens, the context %d", ErrTooLong, i, len(tk), e.nCtx)
			}
			tk = tk[:e.nCtx]
		}
		toks[i] = tk
		total += len(tk)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([][]float32, len(texts))
	var tokens []Token
	var pos, seq []int32
	var batch []int // the texts in the decode being built
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		e.c.ClearKV()
		if err := e.c.DecodeAll(tokens, pos, seq); err != nil {
			return err
		}
		for s, i := range batch {
			v := e.c.Embedding(int32(s))
			if v == nil {
				return fmt.Errorf("%s: no embedding for input %d", e.m.path, i)
			}
			out[i] = v
		}
		tokens, pos, seq, batch = tokens[:0], pos[:0], seq[:0], batch[:0]
		return nil
	}
	for i, tk := range toks {
		if len(tokens)+len(tk) > e.nCtx || len(batch) == e.nSeq {
			if err := flush(); err != nil {
				return nil, 0, err
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		s := int32(len(batch))
		for p, t := range tk {
			tokens, pos, seq = append(tokens, t), append(pos, int32(p)), append(seq, s)
		}
		batch = append(batch, i)
	}
	if err := flush(); err != nil {
		return nil, 0, err
	}
	return out, total, nil
}

// Normalize scales v to unit length (a zero vector stays zero).
func Normalize(v []float32) []float32 {
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	if sum == 0 {
		return v
	}
	k := float32(1 / math.Sqrt(sum))
	for i := range v {
		v[i] *= k
	}
	return v
}
