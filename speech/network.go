package speech

import (
	"fmt"
	"math"

	"github.com/owlengine/owl/bindings/ggml"
)

const layerNormEps = 1e-5

// state is what one transcription keeps between graph evaluations: the
// cross-attention keys and values of the current window (computed once per
// window from the encoder output) and the decoder's self-attention cache.
type state struct {
	store          *ggml.Store
	crossK, crossV []ggml.Tensor // per decoder layer
	selfK, selfV   []ggml.Tensor
	n              int // tokens in the self-attention cache
}

func (m *Model) newState() (*state, error) {
	st := &state{store: m.backend.NewStore()}
	h := m.hp
	alloc := func(rows, cols int) (ggml.Tensor, error) { return st.store.Zeros(m.kvType, rows, cols) }
	for range h.NTextLayer {
		var ts [4]ggml.Tensor
		var err error
		// Keys are [state, positions]; values the same, or transposed when
		// the attention without flash kernels wants them so.
		shapes := [4][2]int{{h.NTextState, h.NAudioCtx}, {h.NTextState, h.NAudioCtx}, {h.NTextState, h.NTextCtx}, {h.NTextState, h.NTextCtx}}
		if m.vTrans {
			shapes[1] = [2]int{h.NAudioCtx, h.NTextState}
			shapes[3] = [2]int{h.NTextCtx, h.NTextState}
		}
		for i, s := range shapes {
			if ts[i], err = alloc(s[0], s[1]); err != nil {
				st.close()
				return nil, err
			}
		}
		st.crossK = append(st.crossK, ts[0])
		st.crossV = append(st.crossV, ts[1])
		st.selfK = append(st.selfK, ts[2])
		st.selfV = append(st.selfV, ts[3])
	}
	return st, nil
}

func (st *state) close() { st.store.Close() }

func (m *Model) elemSize() int {
	if m.kvType == ggml.F32 {
		return 4
	}
	return 2
}

// attend builds multi-head attention of x [state, n] against keys and values
// already laid out as [hd, heads, nkv] (k) and, per m.vTrans, v.
func (m *Model) projectQ(g *ggml.Graph, a attnWeights, x ggml.Tensor) ggml.Tensor {
	return a.qW.Mulmat(g, x).Add(g, a.qB)
}

func (m *Model) headDim() int { return m.hp.NAudioState / m.hp.NAudioHead }

// encode runs the encoder on one window of mel frames (nMels rows of
// WindowFrames) and stores the cross-attention keys and values of every
// decoder layer in st. When out is not nil it also receives the encoder's
// output ([ctx][state]), for tests.
func (m *Model) encode(mel []float32, st *state, out *[]float32) error {
	g := m.backend.NewGraph()
	defer g.Close()
	copies, x := m.buildEncoder(g, mel, st)
	if out != nil {
		copies = append(copies, x)
	}
	if err := g.Compute(copies...); err != nil {
		return err
	}
	if out != nil {
		*out = x.Floats()
	}
	return nil
}

// buildEncoder adds the encoder to g and returns the nodes that copy the
// cross-attention keys and values into st, and the encoder output.
func (m *Model) buildEncoder(g *ggml.Graph, mel []float32, st *state) ([]ggml.Tensor, ggml.Tensor) {
	h, w := m.hp, &m.w
	nState, nCtx, hd := h.NAudioState, h.NAudioCtx, m.headDim()
	frames := 2 * nCtx

	// Two convolutions (kernel 3, padding 1, strides 1 and 2) as im2col and
	// a matrix product each, with exact GELU.
	x := g.Input(mel, frames, h.NMels).Reshape(g, frames, 1, h.NMels, 1)
	cols := x.IM2Col(g, w.conv1W.Reshape(g, 3, 1, h.NMels, nState), 1, 1, 1, 0, 1, 1)
	x = w.conv1W.Reshape(g, 3*h.NMels, nState).Mulmat(g, cols.Reshape(g, 3*h.NMels, frames))
	x = x.Add(g, w.conv1B.Reshape(g, nState)).GELU(g) // [state, frames]
	x = x.Permute(g, 1, 0, 2, 3).Contiguous(g).Reshape(g, frames, 1, nState, 1)
	cols = x.IM2Col(g, w.conv2W.Reshape(g, 3, 1, nState, nState), 2, 1, 1, 0, 1, 1)
	x = w.conv2W.Reshape(g, 3*nState, nState).Mulmat(g, cols.Reshape(g, 3*nState, nCtx))
	x = x.Add(g, w.conv2B.Reshape(g, nState)).GELU(g) // [state, ctx]
	x = x.Add(g, w.encPos)

	scale := 1 / math.Sqrt(float64(hd))
	for _, l := range w.enc {
		r := x
		y := x.LayerNorm(g, l.attn.lnW, l.attn.lnB, layerNormEps)
		q := m.projectQ(g, l.attn, y).Reshape(g, hd, h.NAudioHead, nCtx)
		k := l.attn.kW.Mulmat(g, y).Reshape(g, hd, h.NAudioHead, nCtx)
		v := l.attn.vW.Mulmat(g, y).Add(g, l.attn.vB).Reshape(g, hd, h.NAudioHead, nCtx)
		a := q.Attention(g, k, v, ggml.Tensor{}, scale, false).Reshape(g, nState, nCtx)
		x = l.attn.oW.Mulmat(g, a).Add(g, l.attn.oB).Add(g, r)
		x = m.mlp(g, l.mlp, x)
	}
	x = x.LayerNorm(g, w.lnPostW, w.lnPostB, layerNormEps)

	var copies []ggml.Tensor
	for i, l := range w.dec {
		k := l.cross.kW.Mulmat(g, x)
		v := l.cross.vW.Mulmat(g, x).Add(g, l.cross.vB)
		if m.vTrans {
			v = v.Permute(g, 1, 0, 2, 3)
		}
		copies = append(copies, k.CopyTo(g, st.crossK[i]), v.CopyTo(g, st.crossV[i]))
	}
	return copies, x
}

// mlp is the pre-norm feed-forward block with its residual.
func (m *Model) mlp(g *ggml.Graph, l mlpWeights, x ggml.Tensor) ggml.Tensor {
	y := x.LayerNorm(g, l.lnW, l.lnB, layerNormEps)
	y = l.w0.Mulmat(g, y).Add(g, l.b0).GELU(g)
	return l.w2.Mulmat(g, y).Add(g, l.b2).Add(g, x)
}

// decode appends tokens to the sequence in st, evaluates them against the
// window encoded in st and returns the logits after the last one.
func (m *Model) decode(st *state, tokens []int32) ([]float32, error) {
	h := m.hp
	n, p0 := len(tokens), st.n
	if n == 0 {
		return nil, fmt.Errorf("decode: no tokens")
	}
	if p0+n > h.NTextCtx {
		return nil, fmt.Errorf("decode: %d tokens after %d exceed the text context of %d", n, p0, h.NTextCtx)
	}
	g := m.backend.NewGraph()
	defer g.Close()
	logits := m.buildDecoder(g, st, tokens, p0)
	if err := g.Compute(logits); err != nil {
		return nil, err
	}
	st.n += n
	return logits.Floats(), nil
}

// buildDecoder adds the decoder to g for tokens at positions p0 on and
// returns the logits after the last token.
func (m *Model) buildDecoder(g *ggml.Graph, st *state, tokens []int32, p0 int) ggml.Tensor {
	h, w := m.hp, &m.w
	n := len(tokens)
	nState, hd, nHead := h.NTextState, h.NTextState/h.NTextHead, h.NTextHead
	nkv, es := p0+n, m.elemSize()

	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(p0 + i)
	}
	x := w.tokEmb.Rows(g, g.InputInts(tokens, n)).Add(g, w.decPos.Rows(g, g.InputInts(pos, n)))

	var mask ggml.Tensor
	if n > 1 {
		mv := make([]float32, nkv*n)
		for i := range n {
			for j := p0 + i + 1; j < nkv; j++ {
				mv[i*nkv+j] = float32(math.Inf(-1))
			}
		}
		mask = g.Input(mv, nkv, n)
	}
	scale := 1 / math.Sqrt(float64(hd))
	for i, l := range w.dec {
		// Self-attention over the cache, after writing this step's keys and values into it.
		r := x
		y := x.LayerNorm(g, l.attn.lnW, l.attn.lnB, layerNormEps)
		q := m.projectQ(g, l.attn, y).Reshape(g, hd, nHead, n)
		k := l.attn.kW.Mulmat(g, y)
		v := l.attn.vW.Mulmat(g, y).Add(g, l.attn.vB)
		g.Forward(k.CopyTo(g, st.selfK[i].View(g, p0*nState*es, n*nState)))
		var vAll ggml.Tensor
		if m.vTrans {
			g.Forward(v.Permute(g, 1, 0, 2, 3).CopyTo(g, st.selfV[i].View(g, p0*es, n, h.NTextCtx*es, nState)))
			vAll = st.selfV[i].View(g, 0, nkv, h.NTextCtx*es, hd, hd*h.NTextCtx*es, nHead)
		} else {
			g.Forward(v.CopyTo(g, st.selfV[i].View(g, p0*nState*es, n*nState)))
			vAll = st.selfV[i].View(g, 0, hd, hd*es, nHead, nState*es, nkv)
		}
		kAll := st.selfK[i].View(g, 0, hd, hd*es, nHead, nState*es, nkv)
		a := q.Attention(g, kAll, vAll, mask, scale, m.vTrans).Reshape(g, nState, n)
		x = l.attn.oW.Mulmat(g, a).Add(g, l.attn.oB).Add(g, r)

		// Cross-attention over the encoded window.
		r = x
		y = x.LayerNorm(g, l.cross.lnW, l.cross.lnB, layerNormEps)
		q = m.projectQ(g, l.cross, y).Reshape(g, hd, nHead, n)
		ck := st.crossK[i].View(g, 0, hd, hd*es, nHead, nState*es, h.NAudioCtx)
		var cv ggml.Tensor
		if m.vTrans {
			cv = st.crossV[i].View(g, 0, h.NAudioCtx, h.NAudioCtx*es, hd, hd*h.NAudioCtx*es, nHead)
		} else {
			cv = st.crossV[i].View(g, 0, hd, hd*es, nHead, nState*es, h.NAudioCtx)
		}
		a = q.Attention(g, ck, cv, ggml.Tensor{}, scale, m.vTrans).Reshape(g, nState, n)
		x = l.cross.oW.Mulmat(g, a).Add(g, l.cross.oB).Add(g, r)

		x = m.mlp(g, l.mlp, x)
	}
	x = x.LayerNorm(g, w.lnW, w.lnB, layerNormEps)
	last := x.View(g, (n-1)*nState*4, nState)
	return w.tokEmb.Mulmat(g, last)
}

// maxPrompt is the longest prompt decoded at once: half the text context of
// previous text, and the start-of-transcript sequence.
func (m *Model) maxPrompt() int { return min(m.hp.NTextCtx, m.hp.NTextCtx/2+4) }

// reserve allocates the compute memory of the largest graphs the model
// runs (the encoder, the longest prompt, a step with a full cache), so that
// transcriptions neither reallocate nor fault in memory as they go.
func (m *Model) reserve() error {
	st, err := m.newState()
	if err != nil {
		return err
	}
	defer st.close()
	h := m.hp
	build := func(f func(g *ggml.Graph) []ggml.Tensor) error {
		g := m.backend.NewGraph()
		defer g.Close()
		return g.Reserve(f(g)...)
	}
	if err := build(func(g *ggml.Graph) []ggml.Tensor {
		copies, _ := m.buildEncoder(g, make([]float32, h.NMels*2*h.NAudioCtx), st)
		return copies
	}); err != nil {
		return err
	}
	for _, c := range []struct{ n, p0 int }{{m.maxPrompt(), 0}, {1, h.NTextCtx - 1}} {
		if err := build(func(g *ggml.Graph) []ggml.Tensor {
			return []ggml.Tensor{m.buildDecoder(g, st, make([]int32, c.n), c.p0)}
		}); err != nil {
			return err
		}
	}
	return nil
}
