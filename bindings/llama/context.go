package llama

/*
#include <stdlib.h>
#include "owl_llama.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"
)

// ErrKVFull is returned by Decode when the KV cache has no room for the batch.
var ErrKVFull = errors.New("kv cache full")

// ErrAborted is returned by Decode when Abort stopped it.
var ErrAborted = errors.New("decode aborted")

// KVType is the element type of the KV cache.
type KVType string

// KV cache types llama.cpp supports on the CPU.
const (
	KVF16  KVType = "f16"
	KVQ8_0 KVType = "q8_0"
	KVQ4_0 KVType = "q4_0"
)

func (t KVType) ggml() (C.enum_ggml_type, error) {
	switch t {
	case "", KVF16:
		return C.GGML_TYPE_F16, nil
	case KVQ8_0:
		return C.GGML_TYPE_Q8_0, nil
	case KVQ4_0:
		return C.GGML_TYPE_Q4_0, nil
	}
	return 0, fmt.Errorf("unknown kv cache type %q (want f16, q8_0 or q4_0)", string(t))
}

// ContextParams says how to create a Context.
type ContextParams struct {
	NumCtx    int    // KV cache cells over all sequences
	NumBatch  int    // most tokens one Decode may take
	NumSeq    int    // most sequences at once (1 if 0)
	Threads   int    // CPU threads
	FlashAttn bool   // use the flash-attention kernels
	KVType    KVType // KV cache element type
	UnifiedKV bool   // sequences share one KV buffer instead of n_ctx/n_seq each
	// Embeddings makes the context compute pooled embeddings (read with
	// Embedding) instead of logits, pooled by Pooling.
	Embeddings bool
	Pooling    Pooling
}

// Pooling is how an embedding context pools a sequence's token embeddings.
type Pooling int

// Poolings: the model's own (its GGUF's pooling_type), or one of these.
const (
	PoolingModel Pooling = iota
	PoolingMean
	PoolingCLS
	PoolingLast
)

func (p Pooling) native() C.enum_llama_pooling_type {
	switch p {
	case PoolingMean:
		return C.LLAMA_POOLING_TYPE_MEAN
	case PoolingCLS:
		return C.LLAMA_POOLING_TYPE_CLS
	case PoolingLast:
		return C.LLAMA_POOLING_TYPE_LAST
	}
	return C.LLAMA_POOLING_TYPE_UNSPECIFIED
}

// Context is an inference context: a KV cache and compute buffers over a
// Model. It must be used by one goroutine at a time.
type Context struct {
	c      *C.struct_llama_context
	model  *Model
	nCtx   int
	nBatch int
	abort  *int32 // C memory read by owl_abort_callback
	pool   *Threadpool
	once   sync.Once

	// reusable decode buffers
	pos    []int32
	seq    []int32
	want   []int8
	logits []float32
}

// NewContext creates a context over m.
func NewContext(m *Model, p ContextParams) (*Context, error) {
	kv, err := p.KVType.ggml()
	if err != nil {
		return nil, err
	}
	if p.NumCtx <= 0 || p.NumBatch <= 0 || p.Threads <= 0 {
		return nil, fmt.Errorf("context: n_ctx %d, n_batch %d, threads %d must be positive", p.NumCtx, p.NumBatch, p.Threads)
	}
	nSeq := max(p.NumSeq, 1)
	params := C.llama_context_default_params()
	params.n_ctx = C.uint32_t(p.NumCtx)
	params.n_batch = C.uint32_t(p.NumBatch)
	params.n_ubatch = C.uint32_t(min(p.NumBatch, 512))
	if m.softwareGPU {
		params.n_ubatch = C.uint32_t(min(p.NumBatch, softwareGPUMicroBatch))
	}
	params.n_seq_max = C.uint32_t(nSeq)
	params.n_threads = C.int32_t(p.Threads)
	params.n_threads_batch = C.int32_t(p.Threads)
	params.type_k = kv
	params.type_v = kv
	params.kv_unified = C.bool(p.UnifiedKV)
	params.no_perf = true
	if p.Embeddings {
		params.embeddings = true
		params.pooling_type = p.Pooling.native()
	}
	if p.FlashAttn {
		params.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_ENABLED
	} else {
		params.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
	}
	abort := (*int32)(C.calloc(1, 4))
	params.abort_callback = C.ggml_abort_callback(C.owl_abort_callback)
	params.abort_callback_data = unsafe.Pointer(abort)

	pool, err := NewThreadpool(p.Threads)
	if err != nil {
		C.free(unsafe.Pointer(abort))
		return nil, err
	}
	loadMu.Lock()
	var c *C.struct_llama_context
	lines := captureErrors(func() { c = C.llama_init_from_model(m.c, params) })
	loadMu.Unlock()
	if c == nil {
		pool.Close()
		C.free(unsafe.Pointer(abort))
		return nil, fmt.Errorf("create context (n_ctx %d, %d sequences): %s", p.NumCtx, nSeq, loadReason(lines))
	}
	tp := (*C.struct_ggml_threadpool)(pool.Native())
	C.llama_attach_threadpool(c, tp, tp)
	// llama.cpp may lower the batch size (to n_ctx); a larger batch than
	// its own would fail its assertion.
	return &Context{c: c, model: m, nCtx: int(C.llama_n_ctx(c)), nBatch: int(C.llama_n_batch(c)), abort: abort, pool: pool}, nil
}

// Close frees the context. It is safe to call more than once.
func (c *Context) Close() error {
	c.once.Do(func() {
		C.llama_free(c.c)
		c.pool.Close() // after the context that computes with it
		C.free(unsafe.Pointer(c.abort))
		c.c, c.abort = nil, nil
	})
	return nil
}

// Model is the model this context runs.
func (c *Context) Model() *Model { return c.model }

// NumCtx is the number of KV cells of the context.
func (c *Context) NumCtx() int { return c.nCtx }

// NumBatch is the most tokens one Decode may take.
func (c *Context) NumBatch() int { return c.nBatch }

// Abort makes a running or the next Decode return ErrAborted; it may be
// called from any goroutine. ClearAbort re-arms the context.
func (c *Context) Abort() { atomic.StoreInt32(c.abort, 1) }

// ClearAbort undoes Abort.
func (c *Context) ClearAbort() { atomic.StoreInt32(c.abort, 0) }

// SetThreads changes the number of CPU threads, up to those of the
// context's pool.
func (c *Context) SetThreads(n int) {
	n = min(max(n, 1), c.pool.Threads())
	C.llama_set_n_threads(c.c, C.int32_t(n), C.int32_t(n))
}

// BatchEntry is one token of a decode batch.
type BatchEntry struct {
	Token  Token
	Pos    int32
	Seq    int32
	Logits bool // produce logits for this token
}

// Decode evaluates tokens (parallel slices: the token, its position, its
// sequence, whether it needs logits) in one llama_decode and returns the
// logits of the rows that asked for them, n_vocab floats each in batch order.
// The returned slice is reused by the next Decode.
func (c *Context) Decode(tokens []Token, pos []int32, seq []int32, want []bool) ([]float32, error) {
	n := len(tokens)
	if n == 0 {
		return nil, nil
	}
	if len(pos) != n || len(seq) != n || len(want) != n {
		return nil, fmt.Errorf("decode: %d tokens but %d positions, %d sequences, %d flags", n, len(pos), len(seq), len(want))
	}
	if n > c.nBatch {
		return nil, fmt.Errorf("decode: %d tokens exceed the batch size %d", n, c.nBatch)
	}
	c.want = c.want[:0]
	rows := 0
	for _, w := range want {
		var b int8
		if w {
			b = 1
			rows++
		}
		c.want = append(c.want, b)
	}
	nv := c.model.nVocab
	if cap(c.logits) < rows*nv {
		c.logits = make([]float32, rows*nv)
	}
	c.logits = c.logits[:rows*nv]
	var out *C.float
	if rows > 0 {
		out = (*C.float)(unsafe.Pointer(&c.logits[0]))
	}
	status := C.owl_decode(c.c, C.int32_t(n),
		(*C.int32_t)(unsafe.Pointer(&tokens[0])),
		(*C.int32_t)(unsafe.Pointer(&pos[0])),
		(*C.int32_t)(unsafe.Pointer(&seq[0])),
		(*C.int8_t)(unsafe.Pointer(&c.want[0])),
		out, C.int32_t(nv))
	switch {
	case status == 0:
		return c.logits, nil
	case status == 1:
		return nil, fmt.Errorf("%w: no room for %d tokens in %d cells", ErrKVFull, n, c.nCtx)
	case status == 2:
		return nil, ErrAborted
	case status == C.OWL_EXCEPTION:
		return nil, errors.New("llama_decode failed: llama.cpp raised an exception")
	default:
		return nil, fmt.Errorf("llama_decode failed with status %d", int(status))
	}
}

// SeqRemove drops the cells of seq at positions [p0, p1); p1 < 0 means to
// the end and seq < 0 means every sequence. It reports false when the cache
// cannot remove a partial range.
func (c *Context) SeqRemove(seq, p0, p1 int32) bool {
	return bool(C.llama_memory_seq_rm(C.llama_get_memory(c.c), C.llama_seq_id(seq), C.llama_pos(p0), C.llama_pos(p1)))
}

// SeqCopy makes the cells of src at [p0, p1) also belong to dst.
func (c *Context) SeqCopy(src, dst, p0, p1 int32) {
	C.llama_memory_seq_cp(C.llama_get_memory(c.c), C.llama_seq_id(src), C.llama_seq_id(dst), C.llama_pos(p0), C.llama_pos(p1))
}

// SeqPosMax is the largest position stored for seq, or -1 when it is empty.
func (c *Context) SeqPosMax(seq int32) int32 {
	return int32(C.llama_memory_seq_pos_max(C.llama_get_memory(c.c), C.llama_seq_id(seq)))
}

// DecodeAll evaluates tokens as Decode does, every row an output and no
// logits copied: for an embedding context, read with Embedding after.
func (c *Context) DecodeAll(tokens []Token, pos []int32, seq []int32) error {
	n := len(tokens)
	if n == 0 {
		return nil
	}
	if len(pos) != n || len(seq) != n {
		return fmt.Errorf("decode: %d tokens but %d positions, %d sequences", n, len(pos), len(seq))
	}
	if n > c.nBatch {
		return fmt.Errorf("decode: %d tokens exceed the batch size %d", n, c.nBatch)
	}
	c.want = c.want[:0]
	for range n {
		c.want = append(c.want, 1)
	}
	status := C.owl_decode(c.c, C.int32_t(n), (*C.int32_t)(unsafe.Pointer(&tokens[0])), (*C.int32_t)(unsafe.Pointer(&pos[0])),
		(*C.int32_t)(unsafe.Pointer(&seq[0])), (*C.int8_t)(unsafe.Pointer(&c.want[0])), nil, 0)
	switch {
	case status == 0:
		return nil
	case status == 1:
		return fmt.Errorf("%w: no room for %d tokens in %d cells", ErrKVFull, n, c.nCtx)
	case status == 2:
		return ErrAborted
	case status == C.OWL_EXCEPTION:
		return errors.New("llama_decode failed: llama.cpp raised an exception")
	}
	return fmt.Errorf("llama_decode failed with status %d", int(status))
}

// PoolingUsed reports whether the context pools embeddings (an embedding
// context over a model whose pooling is not "none").
func (c *Context) PoolingUsed() bool {
	return C.llama_pooling_type(c.c) != C.LLAMA_POOLING_TYPE_NONE && C.llama_pooling_type(c.c) != C.LLAMA_POOLING_TYPE_UNSPECIFIED
}

// Embedding is sequence seq's pooled embedding after a Decode of an
// embedding context (nil when there is none), NumEmbd floats.
func (c *Context) Embedding(seq int32) []float32 {
	p := C.llama_get_embeddings_seq(c.c, C.llama_seq_id(seq))
	if p == nil {
		return nil
	}
	n := int(C.llama_model_n_embd(c.model.c))
	return append([]float32(nil), unsafe.Slice((*float32)(unsafe.Pointer(p)), n)...)
}

// ClearKV empties the KV cache.
func (c *Context) ClearKV() { C.llama_memory_clear(C.llama_get_memory(c.c), true) }
