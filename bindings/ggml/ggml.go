// Package ggml is the tensor API owl's own networks (Whisper, Silero VAD)
// are written in: ggml's CPU backend reached through ollama's ml package.
//
// A Backend holds a model's weights, loaded from a GGUF file. A Graph is the
// scratch space of one evaluation: build it from weights, inputs and ops,
// Compute it, read the results, Close it. A Store holds tensors that outlive
// graphs (KV caches). Methods of one Graph or Store must not be called
// concurrently; one Backend computes one graph at a time.
package ggml

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"

	"github.com/ollama/ollama/ml"
	mlggml "github.com/ollama/ollama/ml/backend/ggml"

	"github.com/owlengine/owl/bindings/llama"
)

// ErrCompute wraps failures of the native backend (allocation, computation).
var ErrCompute = errors.New("ggml backend")

// Type is a tensor element type for inputs and stored tensors.
type Type int

// Element types of created tensors.
const (
	F32 Type = iota
	F16
	I32
)

func (t Type) ml() ml.DType {
	switch t {
	case F16:
		return ml.DTypeF16
	case I32:
		return ml.DTypeI32
	}
	return ml.DTypeF32
}

// Options configure a Backend.
type Options struct {
	Threads   int  // CPU threads; 0 means runtime.NumCPU()
	FlashAttn bool // fused attention kernels
}

// Backend holds the weights of one model.
type Backend struct {
	b       ml.Backend
	threads int
	fa      bool
	closed  bool
}

// Load reads the weights of the GGUF file at path.
func Load(ctx context.Context, path string, o Options) (b *Backend, err error) {
	llama.Init() // one ggml: backends loaded and logs routed into slog once
	if o.Threads <= 0 {
		o.Threads = runtime.NumCPU()
	}
	defer recoverInto(&err, "loading "+path)
	fa := ml.FlashAttentionDisabled
	if o.FlashAttn {
		fa = ml.FlashAttentionEnabled
	}
	mb, err := mlggml.New(path, ml.BackendParams{AllocMemory: true, NumThreads: o.Threads, FlashAttention: fa})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCompute, path, err)
	}
	if err := mb.Load(ctx, nil); err != nil {
		mb.Close()
		return nil, fmt.Errorf("%w: loading %s: %v", ErrCompute, path, err)
	}
	return &Backend{b: mb, threads: o.Threads, fa: o.FlashAttn}, nil
}

// recoverInto turns a panic of the ml package (which panics on allocation
// and compute failures) into an error.
func recoverInto(err *error, what string) {
	if r := recover(); r != nil {
		if e, ok := r.(error); ok {
			*err = fmt.Errorf("%w: %s: %w", ErrCompute, what, e)
		} else {
			*err = fmt.Errorf("%w: %s: %v", ErrCompute, what, r)
		}
	}
}

// Close frees the weights. It is idempotent.
func (b *Backend) Close() {
	if !b.closed {
		b.closed = true
		b.b.Close()
	}
}

// Threads is the number of CPU threads the backend computes with.
func (b *Backend) Threads() int { return b.threads }

// Weight returns the weight tensor named name.
func (b *Backend) Weight(name string) (Tensor, error) {
	t := b.b.Get(name)
	if t == nil {
		return Tensor{}, fmt.Errorf("weight %q is missing", name)
	}
	return Tensor{t}, nil
}

// Tensor is a node of a graph, a weight, or a stored tensor.
type Tensor struct{ t ml.Tensor }

// Shape is the tensor's dimensions, innermost first.
func (t Tensor) Shape() []int { return t.t.Shape() }

// Dim is the size of dimension n.
func (t Tensor) Dim(n int) int { return t.t.Dim(n) }

// Stride is the byte stride of dimension n.
func (t Tensor) Stride(n int) int { return t.t.Stride(n) }

// Valid reports whether t holds a tensor.
func (t Tensor) Valid() bool { return t.t != nil }

// Floats returns the values of a computed f32 tensor (nil before Compute).
func (t Tensor) Floats() []float32 { return t.t.Floats() }

// Graph is the scratch space of one evaluation.
type Graph struct {
	b   *Backend
	ctx ml.Context
}

// NewGraph starts a graph.
func (b *Backend) NewGraph() *Graph {
	return &Graph{b: b, ctx: b.b.NewContext()}
}

// Close frees the graph's tensors.
func (g *Graph) Close() { g.ctx.Close() }

// Input makes an f32 input tensor holding values.
func (g *Graph) Input(values []float32, shape ...int) Tensor {
	return Tensor{g.ctx.Input().FromFloats(values, shape...)}
}

// InputInts makes an i32 input tensor holding values.
func (g *Graph) InputInts(values []int32, shape ...int) Tensor {
	return Tensor{g.ctx.Input().FromInts(values, shape...)}
}

// InputF16 makes an f16 input tensor from values (converted).
func (g *Graph) InputF16(values []float32, shape ...int) Tensor {
	f32 := g.ctx.Input().FromFloats(values, shape...)
	return Tensor{f32.Cast(g.ctx, ml.DTypeF16)}
}

// Forward adds side-effect nodes (copies into stored tensors) to the graph
// now, so that later nodes see their result.
func (g *Graph) Forward(ts ...Tensor) {
	for _, t := range ts {
		g.ctx.Forward(t.t)
	}
}

// Compute evaluates the graph up to outs; their Floats are then available.
func (g *Graph) Compute(outs ...Tensor) (err error) {
	defer recoverInto(&err, "compute")
	mts := make([]ml.Tensor, len(outs))
	for i, t := range outs {
		mts[i] = t.t
	}
	g.ctx.Forward(mts...).Compute(mts...)
	return nil
}

// Reserve allocates the compute memory the graph up to outs needs, without
// computing it. Reserving the largest graphs a model will run at load time
// spares reallocations (and page faults) while it runs.
func (g *Graph) Reserve(outs ...Tensor) (err error) {
	defer recoverInto(&err, "reserving compute memory")
	for _, t := range outs {
		g.ctx.Forward(t.t)
	}
	g.ctx.Reserve()
	return nil
}

// Store holds tensors that outlive graphs, such as KV caches.
type Store struct{ ctx ml.Context }

// NewStore makes an empty store.
func (b *Backend) NewStore() *Store { return &Store{ctx: b.b.NewContextSize(1024)} }

// Zeros allocates a stored tensor of zeros.
func (s *Store) Zeros(t Type, shape ...int) (out Tensor, err error) {
	defer recoverInto(&err, "allocating a stored tensor")
	return Tensor{s.ctx.Input().Zeros(t.ml(), shape...)}, nil
}

// Close frees the stored tensors.
func (s *Store) Close() { s.ctx.Close() }

// Ops. Each adds a node to g and returns it; shapes follow ggml.

// Add is t + u, broadcasting u's rows.
func (t Tensor) Add(g *Graph, u Tensor) Tensor { return Tensor{t.t.Add(g.ctx, u.t)} }

// Mul is t × u elementwise, broadcasting u's rows.
func (t Tensor) Mul(g *Graph, u Tensor) Tensor { return Tensor{t.t.Mul(g.ctx, u.t)} }

// Mulmat is ggml_mul_mat(t, u): t [k, m] times u [k, n] gives [m, n].
func (t Tensor) Mulmat(g *Graph, u Tensor) Tensor { return Tensor{t.t.Mulmat(g.ctx, u.t)} }

// Scale multiplies by s.
func (t Tensor) Scale(g *Graph, s float64) Tensor { return Tensor{t.t.Scale(g.ctx, s)} }

// LayerNorm normalizes rows to zero mean and unit variance, then applies
// weight and bias.
func (t Tensor) LayerNorm(g *Graph, w, b Tensor, eps float32) Tensor {
	return Tensor{t.t.LayerNorm(g.ctx, w.t, b.t, eps)}
}

// GELUInPlace is the exact (erf) GELU, computed in place: t itself is
// overwritten, so use it only on a result nothing else reads.
func (t Tensor) GELUInPlace(g *Graph) Tensor { return Tensor{t.t.GELU_ERF(g.ctx)} }

// Sigmoid is 1/(1+e^-t), into a new tensor.
func (t Tensor) Sigmoid(g *Graph) Tensor { return Tensor{t.t.SigmoidOut(g.ctx)} }

// Tanh is the hyperbolic tangent, into a new tensor. (The ml package's
// Tanh, like its ReLU, works in place; here a copy is made first.)
func (t Tensor) Tanh(g *Graph) Tensor { return Tensor{t.t.Duplicate(g.ctx).Tanh(g.ctx)} }

// ReLUInPlace is max(t, 0) computed in place: t itself is overwritten.
func (t Tensor) ReLUInPlace(g *Graph) Tensor { return Tensor{t.t.RELU(g.ctx)} }

// Sqrt is the square root.
func (t Tensor) Sqrt(g *Graph) Tensor { return Tensor{t.t.Sqrt(g.ctx)} }

// Concat joins t and u along dimension dim.
func (t Tensor) Concat(g *Graph, u Tensor, dim int) Tensor {
	return Tensor{t.t.Concat(g.ctx, u.t, dim)}
}

// Softmax is a softmax over rows.
func (t Tensor) Softmax(g *Graph) Tensor { return Tensor{t.t.Softmax(g.ctx)} }

// Rows gathers the rows of t at the indexes in ids (i32).
func (t Tensor) Rows(g *Graph, ids Tensor) Tensor { return Tensor{t.t.Rows(g.ctx, ids.t)} }

// Reshape gives t a new shape with the same element count.
func (t Tensor) Reshape(g *Graph, shape ...int) Tensor { return Tensor{t.t.Reshape(g.ctx, shape...)} }

// Permute reorders dimensions as ggml_permute does.
func (t Tensor) Permute(g *Graph, order ...int) Tensor { return Tensor{t.t.Permute(g.ctx, order...)} }

// Contiguous copies t into contiguous memory.
func (t Tensor) Contiguous(g *Graph) Tensor { return Tensor{t.t.Contiguous(g.ctx)} }

// View is a view of t at a byte offset; shape alternates sizes and byte
// strides: [n0], [n0, nb1, n1], [n0, nb1, n1, nb2, n2].
func (t Tensor) View(g *Graph, offset int, shape ...int) Tensor {
	return Tensor{t.t.View(g.ctx, offset, shape...)}
}

// CopyTo copies t into dst (converting types) and returns the copy node,
// which must be Forwarded.
func (t Tensor) CopyTo(g *Graph, dst Tensor) Tensor { return Tensor{t.t.Copy(g.ctx, dst.t)} }

// Cast converts t to another type.
func (t Tensor) Cast(g *Graph, to Type) Tensor { return Tensor{t.t.Cast(g.ctx, to.ml())} }

// IM2Col unfolds t (the data, [W, H, C, N]) into columns for a convolution
// with kernel ([KW, KH, C, OC]) at strides s, paddings p and dilations d.
func (t Tensor) IM2Col(g *Graph, kernel Tensor, s0, s1, p0, p1, d0, d1 int) Tensor {
	return Tensor{kernel.t.IM2Col(g.ctx, t.t, s0, s1, p0, p1, d0, d1)}
}

// Attention is softmax(scale·KᵀQ + mask)·V for q [d, heads, nq] and k
// [d, heads, nkv]. v is [d, heads, nkv] too, or, when vTransposed (which
// only a backend without flash attention takes), already [nkv, d, heads],
// which spares a copy per evaluation for cached values. mask [nkv, nq] (f32,
// 0 or -Inf) may be the zero Tensor. It returns [d, heads, nq], contiguous.
func (q Tensor) Attention(g *Graph, k, v, mask Tensor, scale float64, vTransposed bool) Tensor {
	if g.b.fa {
		sdpa := q.t.(ml.ScaledDotProductAttention)
		var m ml.Tensor
		if mask.t != nil {
			m = mask.t
		}
		// The fused CPU kernel is fastest on f16 keys and values.
		kt, vt := k.t, v.t
		if kt.DType() == ml.DTypeF32 {
			kt = kt.Cast(g.ctx, ml.DTypeF16)
		}
		if vt.DType() == ml.DTypeF32 {
			vt = vt.Cast(g.ctx, ml.DTypeF16)
		}
		return Tensor{sdpa.ScaledDotProductAttention(g.ctx, kt, vt, m, nil, nil, scale, false)}
	}
	// Without fused kernels the scores of all queries would be held at once
	// (with a padded copy); large attentions run in chunks of queries.
	nq, nkv, heads := q.Dim(2), k.Dim(2), q.Dim(1)
	chunk := max(1, attnChunkBytes/(4*nkv*heads))
	if nq <= chunk || q.Dim(3) > 1 {
		return Tensor{plainAttention(g.ctx, q.t, k.t, v.t, mask.t, scale, vTransposed)}
	}
	var out ml.Tensor
	for c0 := 0; c0 < nq; c0 += chunk {
		n := min(chunk, nq-c0)
		qc := q.t.View(g.ctx, c0*q.Stride(2), q.Dim(0), q.Stride(1), heads, q.Stride(2), n)
		var mc ml.Tensor
		if mask.t != nil {
			mc = mask.t.View(g.ctx, c0*mask.Stride(1), nkv, mask.Stride(1), n)
		}
		part := plainAttention(g.ctx, qc, k.t, v.t, mc, scale, vTransposed)
		if out == nil {
			out = part
		} else {
			out = out.Concat(g.ctx, part, 2)
		}
	}
	return Tensor{out}
}

// AttentionWeights is like Attention (without the fused kernel) and also
// returns the attention weights softmax(scale·KᵀQ), [nkv, nq, heads].
func (q Tensor) AttentionWeights(g *Graph, k, v Tensor, scale float64, vTransposed bool) (out, weights Tensor) {
	ctx := g.ctx
	qp := q.t.Scale(ctx, scale).Permute(ctx, 0, 2, 1, 3).Contiguous(ctx)
	w := k.t.Permute(ctx, 0, 2, 1, 3).MulmatFullPrec(ctx, qp).Softmax(ctx)
	vt := v.t
	if !vTransposed {
		vt = vt.Permute(ctx, 1, 2, 0, 3).Contiguous(ctx)
	}
	o := vt.Mulmat(ctx, w).Permute(ctx, 0, 2, 1, 3).Contiguous(ctx)
	return Tensor{o}, Tensor{w}
}

// attnChunkBytes bounds the scores one chunk of plain attention holds.
var attnChunkBytes = 16 << 20

// plainAttention is attention from matrix products and a softmax; with the
// queries made contiguous, both products run on the blocked GEMM kernels
// instead of row dot products.
func plainAttention(ctx ml.Context, q, k, v, mask ml.Tensor, scale float64, vTransposed bool) ml.Tensor {
	nq, nkv := q.Dim(2), k.Dim(2)
	// The scale is applied to the queries, which are far smaller than the
	// scores when there are many of both.
	qp := q.Scale(ctx, scale).Permute(ctx, 0, 2, 1, 3).Contiguous(ctx) // [d, nq, heads]
	kp := k.Permute(ctx, 0, 2, 1, 3)                                   // [d, nkv, heads]
	vt := v
	if !vTransposed {
		vt = vt.Permute(ctx, 1, 2, 0, 3).Contiguous(ctx) // [nkv, d, heads]
	}
	// The blocked kernels need the inner dimension of the second product
	// (the keys) to be a multiple of 16. Keys and values are padded with
	// zeros and the padding keys masked out of the softmax, which is cheaper
	// than padding the scores. (ggml pads f32 only.)
	var keyMask ml.Tensor
	if pad := (16 - nkv%16) % 16; pad > 0 && nq > 1 && mask == nil && k.DType() == ml.DTypeF32 && vt.DType() == ml.DTypeF32 {
		kp = kp.Pad(ctx, 0, pad, 0, 0)
		vt = vt.Pad(ctx, pad, 0, 0, 0)
		m := make([]float32, nkv+pad)
		for i := nkv; i < len(m); i++ {
			m[i] = float32(math.Inf(-1))
		}
		keyMask = ctx.Input().FromFloats(m, len(m))
	}
	kq := kp.MulmatFullPrec(ctx, qp) // [nkv, nq, heads]
	if mask != nil {
		kq = kq.Add(ctx, mask)
	}
	if keyMask != nil {
		kq = kq.Add(ctx, keyMask)
	}
	kq = kq.Softmax(ctx)
	out := vt.Mulmat(ctx, kq) // [d, nq, heads]
	return out.Permute(ctx, 0, 2, 1, 3).Contiguous(ctx)
}

// FlashAttention reports whether the backend uses fused attention kernels;
// then Attention takes v untransposed.
func (b *Backend) FlashAttention() bool { return b.fa }
