package ggml

import (
	"fmt"
	"math"

	"github.com/ollama/ollama/ml"
)

// Ops. Each adds a node to g and returns it; shapes follow ggml. Before
// calling ggml, each checks what ggml would assert (see the package
// documentation) and what room the graph has left; an op that cannot be
// made returns the zero Tensor and fails the graph.

// layout is a tensor's sizes and byte strides, innermost first, as ggml
// keeps them (unused dimensions have size 1).
type layout struct {
	ne, nb [4]int
	typ    ml.DType
}

func (t Tensor) layout() layout {
	var l layout
	for i := range 4 {
		l.ne[i], l.nb[i] = t.t.Dim(i), t.t.Stride(i)
	}
	l.typ = t.t.DType()
	return l
}

// typeSize is the bytes of one block of typ and the elements in a block;
// 0 for a type this package does not know the layout of.
func typeSize(typ ml.DType) (size, block int) {
	switch typ {
	case ml.DTypeF32, ml.DTypeI32:
		return 4, 1
	case ml.DTypeF16:
		return 2, 1
	case ml.DTypeQ80:
		return 34, 32
	case ml.DTypeQ40:
		return 18, 32
	case ml.DTypeMXFP4:
		return 17, 32
	}
	return 0, 0
}

func (l layout) elements() int { return l.ne[0] * l.ne[1] * l.ne[2] * l.ne[3] }

// nbytes is the extent of the tensor's data in bytes (ggml_nbytes).
func (l layout) nbytes() (int, bool) {
	size, block := typeSize(l.typ)
	if size == 0 {
		return 0, false
	}
	for _, n := range l.ne {
		if n <= 0 {
			return 0, true
		}
	}
	var n int
	if block == 1 {
		n = size
		for i := range 4 {
			n += (l.ne[i] - 1) * l.nb[i]
		}
	} else {
		n = l.ne[0] * l.nb[0] / block
		for i := 1; i < 4; i++ {
			n += (l.ne[i] - 1) * l.nb[i]
		}
	}
	return n, true
}

// contiguous reports whether the tensor's rows from dimension n+1 on are
// packed (ggml_is_contiguous_n; 0 is fully contiguous).
func (l layout) contiguous(n int) bool {
	size, block := typeSize(l.typ)
	if size == 0 {
		return false
	}
	next := size
	if l.ne[0] != block && l.nb[0] != next {
		return false
	}
	next *= l.ne[0] / block
	for i := 1; i < 4; i++ {
		if l.ne[i] != 1 {
			if i > n {
				if l.nb[i] != next {
					return false
				}
				next *= l.ne[i]
			} else {
				next = l.ne[i] * l.nb[i]
			}
		}
	}
	return true
}

// canRepeat reports whether b broadcasts over a (ggml_can_repeat(b, a)).
func canRepeat(b, a layout) bool {
	if b.elements() == 0 {
		return a.elements() == 0
	}
	for i := range 4 {
		if b.ne[i] == 0 || a.ne[i]%b.ne[i] != 0 {
			return false
		}
	}
	return true
}

func (l layout) String() string {
	n := 4
	for n > 1 && l.ne[n-1] == 1 {
		n--
	}
	return fmt.Sprint(l.ne[:n])
}

// binary checks a broadcasting elementwise op of t and u.
func (g *Graph) binary(name string, t, u Tensor) bool {
	if !g.ready(name, t, u) {
		return false
	}
	a, b := t.layout(), u.layout()
	return g.check(canRepeat(b, a), "%s: %v does not broadcast over %v", name, b, a) && g.op(name, 1, t, u)
}

// unary checks an elementwise op ggml runs row by row.
func (g *Graph) unary(name string, t Tensor) bool {
	if !g.ready(name, t) {
		return false
	}
	l := t.layout()
	return g.check(l.contiguous(1), "%s: the rows of %v are not contiguous", name, l) && g.op(name, 1, t)
}

// Add is t + u, broadcasting u's rows.
func (t Tensor) Add(g *Graph, u Tensor) Tensor {
	if !g.binary("add", t, u) {
		return Tensor{}
	}
	return Tensor{t: t.t.Add(g.ctx, u.t)}
}

// Mul is t × u elementwise, broadcasting u's rows.
func (t Tensor) Mul(g *Graph, u Tensor) Tensor {
	if !g.binary("mul", t, u) {
		return Tensor{}
	}
	return Tensor{t: t.t.Mul(g.ctx, u.t)}
}

// mulmat checks ggml_mul_mat(t, u).
func (g *Graph) mulmat(t, u Tensor) bool {
	if !g.ready("mul_mat", t, u) {
		return false
	}
	a, b := t.layout(), u.layout()
	return g.check(a.ne[0] == b.ne[0] && a.ne[2] > 0 && a.ne[3] > 0 && b.ne[2]%a.ne[2] == 0 && b.ne[3]%a.ne[3] == 0,
		"mul_mat: %v by %v", a, b) &&
		g.check(a.nb[0] <= a.nb[1], "mul_mat: the first operand %v is transposed", a) &&
		g.op("mul_mat", 1, t, u)
}

// Mulmat is ggml_mul_mat(t, u): t [k, m] times u [k, n] gives [m, n].
func (t Tensor) Mulmat(g *Graph, u Tensor) Tensor {
	if !g.mulmat(t, u) {
		return Tensor{}
	}
	return Tensor{t: t.t.Mulmat(g.ctx, u.t)}
}

// mulmatFullPrec is Mulmat accumulated in f32 on every backend.
func (t Tensor) mulmatFullPrec(g *Graph, u Tensor) Tensor {
	if !g.mulmat(t, u) {
		return Tensor{}
	}
	return Tensor{t: t.t.MulmatFullPrec(g.ctx, u.t)}
}

// Scale multiplies by s.
func (t Tensor) Scale(g *Graph, s float64) Tensor {
	if !g.ready("scale", t) {
		return Tensor{}
	}
	l := t.layout()
	size, _ := typeSize(l.typ)
	if !g.check(size > 0 && l.nb[0] == size && l.nb[2] == l.nb[1]*l.ne[1] && l.nb[3] == l.nb[2]*l.ne[2], "scale: %v is not packed", l) ||
		!g.op("scale", 1, t) {
		return Tensor{}
	}
	return Tensor{t: t.t.Scale(g.ctx, s)}
}

// LayerNorm normalizes rows to zero mean and unit variance, then applies
// weight and bias.
func (t Tensor) LayerNorm(g *Graph, w, b Tensor, eps float32) Tensor {
	if !g.ready("norm", t, w, b) {
		return Tensor{}
	}
	x, lw, lb := t.layout(), w.layout(), b.layout()
	if !g.check(canRepeat(lw, x) && canRepeat(lb, x), "norm: weight %v or bias %v does not broadcast over %v", lw, lb, x) ||
		!g.op("norm", 3, t, w, b) {
		return Tensor{}
	}
	return Tensor{t: t.t.LayerNorm(g.ctx, w.t, b.t, eps)}
}

// GELUInPlace is the exact (erf) GELU, computed in place: t itself is
// overwritten, so use it only on a result nothing else reads.
func (t Tensor) GELUInPlace(g *Graph) Tensor {
	if !g.unary("gelu", t) {
		return Tensor{}
	}
	return Tensor{t: t.t.GELU_ERF(g.ctx)}
}

// Sigmoid is 1/(1+e^-t), into a new tensor.
func (t Tensor) Sigmoid(g *Graph) Tensor {
	if !g.unary("sigmoid", t) {
		return Tensor{}
	}
	return Tensor{t: t.t.SigmoidOut(g.ctx)}
}

// Tanh is the hyperbolic tangent, into a new tensor. (The ml package's
// Tanh, like its ReLU, works in place; here a copy is made first, which is
// contiguous whatever t is.)
func (t Tensor) Tanh(g *Graph) Tensor {
	if !g.ready("tanh", t) || !g.op("tanh", 2, t) {
		return Tensor{}
	}
	return Tensor{t: t.t.Duplicate(g.ctx).Tanh(g.ctx)}
}

// ReLU is max(t, 0), into a new tensor (a copy of t made first, as Tanh).
func (t Tensor) ReLU(g *Graph) Tensor {
	if !g.ready("relu", t) || !g.op("relu", 2, t) {
		return Tensor{}
	}
	return Tensor{t: t.t.Duplicate(g.ctx).RELU(g.ctx)}
}

// ReLUInPlace is max(t, 0) computed in place: t itself is overwritten.
func (t Tensor) ReLUInPlace(g *Graph) Tensor {
	if !g.unary("relu", t) {
		return Tensor{}
	}
	return Tensor{t: t.t.RELU(g.ctx)}
}

// Sqrt is the square root.
func (t Tensor) Sqrt(g *Graph) Tensor {
	if !g.ready("sqrt", t) || !g.op("sqrt", 1, t) {
		return Tensor{}
	}
	return Tensor{t: t.t.Sqrt(g.ctx)}
}

// Concat joins t and u along dimension dim.
func (t Tensor) Concat(g *Graph, u Tensor, dim int) Tensor {
	if !g.ready("concat", t, u) {
		return Tensor{}
	}
	a, b := t.layout(), u.layout()
	ok := dim >= 0 && dim < 4 && a.typ == b.typ
	for d := range 4 {
		ok = ok && (d == dim || a.ne[d] == b.ne[d])
	}
	if !g.check(ok, "concat: %v and %v along dimension %d", a, b, dim) || !g.op("concat", 1, t, u) {
		return Tensor{}
	}
	return Tensor{t: t.t.Concat(g.ctx, u.t, dim)}
}

// Softmax is a softmax over rows.
func (t Tensor) Softmax(g *Graph) Tensor {
	if !g.ready("soft_max", t) {
		return Tensor{}
	}
	l := t.layout()
	if !g.check(l.contiguous(0), "soft_max: %v is not contiguous", l) || !g.op("soft_max", 1, t) {
		return Tensor{}
	}
	return Tensor{t: t.t.Softmax(g.ctx)}
}

// Rows gathers the rows of t at the indexes in ids (i32). Indexes are
// data, not shapes: one out of range makes ggml's kernel abort, so callers
// give only indexes they made.
func (t Tensor) Rows(g *Graph, ids Tensor) Tensor {
	if !g.ready("get_rows", t, ids) {
		return Tensor{}
	}
	a, b := t.layout(), ids.layout()
	if !g.check(b.typ == ml.DTypeI32 && a.ne[2] == b.ne[1] && a.ne[3] == b.ne[2] && b.ne[3] == 1, "get_rows: of %v at %v", a, b) ||
		!g.op("get_rows", 1, t, ids) {
		return Tensor{}
	}
	return Tensor{t: t.t.Rows(g.ctx, ids.t)}
}

// Reshape gives t a new shape with the same element count.
func (t Tensor) Reshape(g *Graph, shape ...int) Tensor {
	if !g.ready("reshape", t) {
		return Tensor{}
	}
	l := t.layout()
	if !g.check(validShape(shape) && elements(shape) == l.elements(), "reshape: %v as %v", l, shape) || !g.op("reshape", 1, t) {
		return Tensor{}
	}
	return Tensor{t: t.t.Reshape(g.ctx, shape...)}
}

// Permute reorders dimensions as ggml_permute does.
func (t Tensor) Permute(g *Graph, order ...int) Tensor {
	if !g.ready("permute", t) {
		return Tensor{}
	}
	var seen [4]bool
	ok := len(order) == 4 || len(order) == len(t.t.Shape())
	for _, a := range order {
		ok = ok && a >= 0 && a < 4 && !seen[a]
		if ok {
			seen[a] = true
		}
	}
	for i := len(order); ok && i < 4; i++ {
		ok = !seen[i] // the dimensions not named keep their place
		seen[i] = true
	}
	if !g.check(ok, "permute: %v by %v", t.layout(), order) || !g.op("permute", 1, t) {
		return Tensor{}
	}
	return Tensor{t: t.t.Permute(g.ctx, order...)}
}

// Contiguous copies t into contiguous memory.
func (t Tensor) Contiguous(g *Graph) Tensor {
	if !g.ready("cont", t) || !g.op("cont", 1, t) {
		return Tensor{}
	}
	return Tensor{t: t.t.Contiguous(g.ctx)}
}

// View is a view of t at a byte offset; shape alternates sizes and byte
// strides: [n0], [n0, nb1, n1], [n0, nb1, n1, nb2, n2],
// [n0, nb1, n1, nb2, n2, nb3, n3].
func (t Tensor) View(g *Graph, offset int, shape ...int) Tensor {
	if !g.ready("view", t) {
		return Tensor{}
	}
	l := t.layout()
	var sizes []int
	ok := len(shape)%2 == 1 && len(shape) <= 7 && offset >= 0
	for i := 0; ok && i < len(shape); i += 2 {
		sizes = append(sizes, shape[i])
		ok = i == 0 || shape[i-1] >= 0
	}
	ok = ok && validShape(sizes)
	if ok {
		// ggml's own bound: the view's data, as if packed, ends within
		// the tensor's.
		size, block := typeSize(l.typ)
		extent, known := l.nbytes()
		ok = size > 0 && known && sizes[0]%block == 0
		if ok {
			// And, stricter than ggml, the last element the view's strides
			// reach does too, so that no kernel reads past the tensor.
			data, reach := sizes[0]/block*size, sizes[0]/block*size
			for i, n := range sizes[1:] {
				data *= n
				reach += (n - 1) * shape[2*i+1]
			}
			ok = offset+max(data, reach) <= extent
		}
	}
	if !g.check(ok, "view: %v of %v at byte %d", shape, l, offset) || !g.op("view", 1, t) {
		return Tensor{}
	}
	return Tensor{t: t.t.View(g.ctx, offset, shape...)}
}

// CopyTo copies t into dst (converting types) and returns the copy node,
// which must be Forwarded.
func (t Tensor) CopyTo(g *Graph, dst Tensor) Tensor {
	if !g.ready("cpy", t, dst) {
		return Tensor{}
	}
	a, b := t.layout(), dst.layout()
	if !g.check(a.elements() == b.elements(), "cpy: %v into %v", a, b) || !g.op("cpy", 1, t, dst) {
		return Tensor{}
	}
	return Tensor{t: t.t.Copy(g.ctx, dst.t)}
}

// Cast converts t to another type.
func (t Tensor) Cast(g *Graph, to Type) Tensor {
	if !g.ready("cast", t) || !g.op("cast", 1, t) {
		return Tensor{}
	}
	return Tensor{t: t.t.Cast(g.ctx, to.ml())}
}

// IM2Col unfolds t (the data, [W, H, C, N]) into columns for a convolution
// with kernel ([KW, KH, C, OC]) at strides s0, s1, paddings p0, p1 and
// dilations d0, d1.
func (t Tensor) IM2Col(g *Graph, kernel Tensor, s0, s1, p0, p1, d0, d1 int) Tensor {
	if !g.ready("im2col", kernel, t) {
		return Tensor{}
	}
	k, x := kernel.layout(), t.layout()
	out := func(in, ks, s, p, d int) int {
		if s <= 0 || d <= 0 {
			return 0
		}
		return (in+2*p-d*(ks-1)-1)/s + 1
	}
	if !g.check(k.ne[2] == x.ne[2] && out(x.ne[1], k.ne[1], s1, p1, d1) > 0 && out(x.ne[0], k.ne[0], s0, p0, d0) > 0,
		"im2col: kernel %v over %v", k, x) || !g.op("im2col", 1, kernel, t) {
		return Tensor{}
	}
	return Tensor{t: kernel.t.IM2Col(g.ctx, t.t, s0, s1, p0, p1, d0, d1)}
}

// pad appends zeros at the end of each dimension.
func (t Tensor) pad(g *Graph, p0, p1, p2 int) Tensor {
	if !g.ready("pad", t) || !g.check(p0 >= 0 && p1 >= 0 && p2 >= 0, "pad: %v by %d, %d, %d", t.layout(), p0, p1, p2) ||
		!g.op("pad", 1, t) {
		return Tensor{}
	}
	return Tensor{t: t.t.Pad(g.ctx, p0, p1, p2, 0)}
}

// Attention is softmax(scale·KᵀQ + mask)·V for q [d, heads, nq] and k
// [d, heads, nkv]. v is [d, heads, nkv] too, or, when vTransposed (which
// only a backend without flash attention takes), already [nkv, d, heads],
// which spares a copy per evaluation for cached values. mask [nkv, nq] (f32,
// 0 or -Inf) may be the zero Tensor. It returns [d, heads, nq], contiguous.
func (q Tensor) Attention(g *Graph, k, v, mask Tensor, scale float64, vTransposed bool) Tensor {
	if g.err != nil {
		return Tensor{}
	}
	if g.b.fa {
		return q.flashAttention(g, k, v, mask, scale)
	}
	// Without fused kernels the scores of all queries would be held at once
	// (with a padded copy); large attentions run in chunks of queries.
	nq, nkv, heads := q.Dim(2), k.Dim(2), q.Dim(1)
	if !g.check(nkv > 0 && heads > 0, "attention: %d keys of %d heads", nkv, heads) {
		return Tensor{}
	}
	if nq <= fusedAttentionQueries && vTransposed {
		return q.fusedAttention(g, k, v, mask, scale)
	}
	chunk := max(1, attnChunkBytes/(4*nkv*heads))
	if nq <= chunk || q.Dim(3) > 1 {
		return plainAttention(g, q, k, v, mask, scale, vTransposed)
	}
	var out Tensor
	for c0 := 0; c0 < nq; c0 += chunk {
		n := min(chunk, nq-c0)
		qc := q.View(g, c0*q.Stride(2), q.Dim(0), q.Stride(1), heads, q.Stride(2), n)
		var mc Tensor
		if mask.Valid() {
			mc = mask.View(g, c0*mask.Stride(1), nkv, mask.Stride(1), n)
		}
		part := plainAttention(g, qc, k, v, mc, scale, vTransposed)
		if c0 == 0 {
			out = part
		} else {
			out = out.Concat(g, part, 2)
		}
	}
	return out
}

// flashAttention runs ggml's fused kernel, which is fastest on f16 keys
// and values.
func (q Tensor) flashAttention(g *Graph, k, v, mask Tensor, scale float64) Tensor {
	if k.Valid() && k.t.DType() == ml.DTypeF32 {
		k = k.Cast(g, F16)
	}
	if v.Valid() && v.t.DType() == ml.DTypeF32 {
		v = v.Cast(g, F16)
	}
	// The kernel permutes q, k and v, and casts a mask to f16.
	operands := []Tensor{q, k, v}
	objects := 4
	if mask.Valid() {
		operands = append(operands, mask)
		objects++
	}
	if !g.ready("flash_attn_ext", operands...) {
		return Tensor{}
	}
	lq, lk, lv := q.layout(), k.layout(), v.layout()
	// In ggml's terms, after the kernel's permutations: the keys' heads
	// divide the queries', q, k and v share their batch, k and v their
	// positions, and each has packed elements in a row.
	sq, _ := typeSize(lq.typ)
	sk, _ := typeSize(lk.typ)
	sv, _ := typeSize(lv.typ)
	ok := lq.nb[0] == sq && lk.nb[0] == sk && lv.nb[0] == sv && lq.ne[0] == lk.ne[0] && lk.ne[1] > 0 && lq.ne[1]%lk.ne[1] == 0 && lq.ne[3] == lk.ne[3] && lq.ne[3] == lv.ne[3] &&
		lk.ne[2] == lv.ne[2] && lk.ne[1] == lv.ne[1]
	if mask.Valid() {
		lm := mask.layout()
		ok = ok && lm.contiguous(0) && lm.ne[0] == lk.ne[2] && lm.ne[1] >= lq.ne[2]
	}
	if !g.check(ok, "flash_attn_ext: q %v, k %v, v %v", lq, lk, lv) || !g.op("flash_attn_ext", objects, operands...) {
		return Tensor{}
	}
	var m ml.Tensor
	if mask.Valid() {
		m = mask.t
	}
	sdpa := q.t.(ml.ScaledDotProductAttention)
	return Tensor{t: sdpa.ScaledDotProductAttention(g.ctx, k.t, v.t, m, nil, nil, scale, false)}
}

// fusedAttentionQueries is the most queries attention takes in fused
// form: a few queries (decoder steps) gain from fewer ops, many (the
// encoder, prompts) from contiguous queries on the blocked GEMM kernels.
const fusedAttentionQueries = 16

// fusedAttention is ggml's attention without the fused kernel, as the ml
// package builds it for a cache laid out for it (v transposed, [nkv, d,
// heads]): KᵀQ over q and k permuted in place, one softmax with the scale
// and mask folded in, V·, the heads merged — four ops where plainAttention
// has up to seven, which for a single token is most of their cost.
func (q Tensor) fusedAttention(g *Graph, k, v, mask Tensor, scale float64) Tensor {
	operands := []Tensor{q, k, v}
	if mask.Valid() {
		operands = append(operands, mask)
	}
	if !g.ready("attention", operands...) {
		return Tensor{}
	}
	// In ggml's terms: q' = [d, nq, heads, batch] and k' = [d, nkv,
	// kheads, batch] from the permutations; v is [nkv, d, kheads, batch].
	lq, lk, lv := q.layout(), k.layout(), v.layout()
	ok := lq.ne[0] == lk.ne[0] && lk.ne[1] > 0 && lq.ne[1]%lk.ne[1] == 0 && lq.ne[3]%lk.ne[3] == 0 &&
		lv.ne[0] == lk.ne[2] && lv.ne[1] == lq.ne[0] && lv.ne[2] == lk.ne[1] && lv.ne[3] == lk.ne[3] &&
		lk.nb[0] <= lk.nb[2] && lv.nb[0] <= lv.nb[1]
	if mask.Valid() {
		lm := mask.layout()
		ok = ok && lm.contiguous(0) && lm.ne[0] == lk.ne[2] && lm.ne[1] >= lq.ne[2] && lm.ne[2] == 1 && lm.ne[3] == 1
	}
	// Permutations of q and k, two products, the softmax, the merge
	// (a permutation and a copy).
	if !g.check(ok, "attention: q %v, k %v, v %v", lq, lk, lv) || !g.op("attention", 7, operands...) {
		return Tensor{}
	}
	var m ml.Tensor
	if mask.Valid() {
		m = mask.t
	}
	sdpa := q.t.(ml.ScaledDotProductAttention)
	return Tensor{t: sdpa.ScaledDotProductAttention(g.ctx, k.t, v.t, m, nil, nil, scale, true)}
}

// AttentionWeights is like Attention (without the fused kernel) and also
// returns the attention weights softmax(scale·KᵀQ), [nkv, nq, heads].
func (q Tensor) AttentionWeights(g *Graph, k, v Tensor, scale float64, vTransposed bool) (out, weights Tensor) {
	qp := q.Scale(g, scale).Permute(g, 0, 2, 1, 3).Contiguous(g)
	w := k.Permute(g, 0, 2, 1, 3).mulmatFullPrec(g, qp).Softmax(g)
	vt := v
	if !vTransposed {
		vt = vt.Permute(g, 1, 2, 0, 3).Contiguous(g)
	}
	o := vt.Mulmat(g, w).Permute(g, 0, 2, 1, 3).Contiguous(g)
	return o, w
}

// attnChunkBytes bounds the scores one chunk of plain attention holds.
var attnChunkBytes = 16 << 20

// plainAttention is attention from matrix products and a softmax; with the
// queries made contiguous, both products run on the blocked GEMM kernels
// instead of row dot products.
func plainAttention(g *Graph, q, k, v, mask Tensor, scale float64, vTransposed bool) Tensor {
	nq, nkv := q.Dim(2), k.Dim(2)
	// The scale is applied to the queries, which are far smaller than the
	// scores when there are many of both.
	qp := q.Scale(g, scale).Permute(g, 0, 2, 1, 3).Contiguous(g) // [d, nq, heads]
	kp := k.Permute(g, 0, 2, 1, 3)                               // [d, nkv, heads]
	vt := v
	if !vTransposed {
		vt = vt.Permute(g, 1, 2, 0, 3).Contiguous(g) // [nkv, d, heads]
	}
	// The blocked kernels need the inner dimension of the second product
	// (the keys) to be a multiple of 16. Keys and values are padded with
	// zeros and the padding keys masked out of the softmax, which is cheaper
	// than padding the scores. (ggml pads f32 only.)
	var keyMask Tensor
	if pad := (16 - nkv%16) % 16; pad > 0 && nq > 1 && !mask.Valid() && k.Valid() && k.t.DType() == ml.DTypeF32 &&
		vt.Valid() && vt.t.DType() == ml.DTypeF32 {
		kp = kp.pad(g, 0, pad, 0)
		vt = vt.pad(g, pad, 0, 0)
		m := make([]float32, nkv+pad)
		for i := nkv; i < len(m); i++ {
			m[i] = float32(math.Inf(-1))
		}
		keyMask = g.Input(m, len(m))
	}
	kq := kp.mulmatFullPrec(g, qp) // [nkv, nq, heads]
	if mask.Valid() {
		kq = kq.Add(g, mask)
	}
	if keyMask.Valid() {
		kq = kq.Add(g, keyMask)
	}
	kq = kq.Softmax(g)
	out := vt.Mulmat(g, kq) // [d, nq, heads]
	return out.Permute(g, 0, 2, 1, 3).Contiguous(g)
}

// FlashAttention reports whether the backend uses fused attention kernels;
// then Attention takes v untransposed.
func (b *Backend) FlashAttention() bool { return b.fa }
