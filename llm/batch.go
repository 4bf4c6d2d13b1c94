package llm

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/owlengine/owl/bindings/llama"
)

// ErrKVFull is returned by Context.Decode when the KV cache has no room for
// the batch.
var ErrKVFull = llama.ErrKVFull

// ErrAborted is returned by Context.Decode when Abort stopped it.
var ErrAborted = llama.ErrAborted

// ContextOptions size a Context.
type ContextOptions struct {
	NumCtx    int    // KV cells shared by all sequences
	NumBatch  int    // most tokens per Decode; 0 means 512
	NumSeq    int    // sequences (slots) the context holds; 0 means 1
	Threads   int    // CPU threads; 0 means runtime.NumCPU()
	KVType    string // "f16" (default), "q8_0" or "q4_0"
	FlashAttn bool   // flash-attention kernels (needed for a quantized V cache)
}

// Context is a KV cache whose cells several sequences share, decoded a
// batch at a time: the building block of continuous batching. Sequences are
// numbered 0 … NumSeq−1; one sequence's cells can be shared with another
// (SeqCopy), which is how a cached prefix is reused without recomputing it.
// A Context must be used by one goroutine at a time (Abort excepted).
type Context struct {
	model *Model
	c     *llama.Context
	nSeq  int
}

// NewContext creates a context over m.
func (m *Model) NewContext(o ContextOptions) (*Context, error) {
	if o.NumCtx <= 0 {
		return nil, fmt.Errorf("context: %d cells", o.NumCtx)
	}
	if o.NumBatch <= 0 {
		o.NumBatch = 512
	}
	o.NumBatch = min(o.NumBatch, o.NumCtx)
	o.NumSeq = max(o.NumSeq, 1)
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
	c, err := llama.NewContext(m.m, llama.ContextParams{NumCtx: o.NumCtx, NumBatch: o.NumBatch, NumSeq: o.NumSeq,
		Threads: o.Threads, KVType: kv, FlashAttn: o.FlashAttn, UnifiedKV: true})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.path, err)
	}
	return &Context{model: m, c: c, nSeq: o.NumSeq}, nil
}

// checkKVType refuses a quantized KV cache whose rows the model's head
// sizes would split inside a quantization block (ggml asserts on that).
func (m *Model) checkKVType(kvType string) error {
	if kvType == "" || kvType == string(llama.KVF16) {
		return nil
	}
	arch := m.file.Architecture()
	get := func(key string) uint64 { v, _ := m.file.Uint(arch + "." + key); return v }
	embd, heads := get("embedding_length"), get("attention.head_count")
	k, v := get("attention.key_length"), get("attention.value_length")
	if k == 0 && heads > 0 {
		k = embd / heads
	}
	if v == 0 {
		v = k
	}
	const block = 32 // q8_0 and q4_0
	if k%block != 0 || v%block != 0 {
		return fmt.Errorf("%s: kv cache type %s needs attention heads whose size is a multiple of %d; this model's are %d (keys) and %d (values): use f16", m.path, kvType, block, k, v)
	}
	return nil
}

// Close frees the context. It is idempotent.
func (c *Context) Close() error { return c.c.Close() }

// NumCtx is the number of KV cells.
func (c *Context) NumCtx() int { return c.c.NumCtx() }

// NumBatch is the most tokens one Decode takes.
func (c *Context) NumBatch() int { return c.c.NumBatch() }

// SetThreads makes the next Decodes compute with n threads (1 to the
// context's).
func (c *Context) SetThreads(n int) { c.c.SetThreads(n) }

// Batch is the tokens of one decode step: parallel slices of token,
// position, sequence and whether the row's logits are wanted.
type Batch struct {
	Tokens []Token
	Pos    []int32
	Seq    []int32
	Want   []bool
}

// Add appends a token.
func (b *Batch) Add(t Token, pos int32, seq int32, want bool) {
	b.Tokens = append(b.Tokens, t)
	b.Pos = append(b.Pos, pos)
	b.Seq = append(b.Seq, seq)
	b.Want = append(b.Want, want)
}

// Len is the number of tokens.
func (b *Batch) Len() int { return len(b.Tokens) }

// Reset empties the batch, keeping its memory.
func (b *Batch) Reset() {
	b.Tokens, b.Pos, b.Seq, b.Want = b.Tokens[:0], b.Pos[:0], b.Seq[:0], b.Want[:0]
}

// Decode evaluates the batch and returns the logits of the rows that asked
// for them, VocabSize floats each, in batch order. The slice is reused by
// the next Decode. After an error other than ErrKVFull what the step left in
// the cache is unknown.
func (c *Context) Decode(b *Batch) ([]float32, error) {
	for _, s := range b.Seq {
		if s < 0 || int(s) >= c.nSeq {
			return nil, fmt.Errorf("decode: sequence %d outside 0…%d", s, c.nSeq-1)
		}
	}
	out, err := c.c.Decode(b.Tokens, b.Pos, b.Seq, b.Want)
	if err != nil && !errors.Is(err, ErrKVFull) && !errors.Is(err, ErrAborted) {
		return nil, fmt.Errorf("%s: %w", c.model.path, err)
	}
	return out, err
}

// SeqRemove drops the cells of seq at positions [p0, p1) (p1 < 0: to the
// end). It reports false when the cache cannot cut a sequence there.
func (c *Context) SeqRemove(seq int32, p0, p1 int32) bool { return c.c.SeqRemove(seq, p0, p1) }

// SeqCopy makes the cells of src at [p0, p1) also belong to dst, sharing
// them (no keys or values are recomputed or copied).
func (c *Context) SeqCopy(src, dst int32, p0, p1 int32) { c.c.SeqCopy(src, dst, p0, p1) }

// Clear empties every sequence.
func (c *Context) Clear() { c.c.ClearKV() }
