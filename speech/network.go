package speech

import (
	"fmt"
	"math"

	"github.com/owlengine/owl/bindings/ggml"
	"github.com/owlengine/owl/compute"
	"github.com/owlengine/owl/models"
)

const layerNormEps = 1e-5

// state is what one transcription keeps between graph evaluations: the
// cross-attention keys and values of the current window (computed once per
// window from the encoder output) and the decoder's self-attention caches,
// one per sequence (beams or samples decoded side by side).
type state struct {
	store          *ggml.Store
	crossK, crossV []ggml.Tensor // per decoder layer
	selfK, selfV   []ggml.Tensor // per decoder layer, all sequences
	nSeq           int
	n              int // tokens in each sequence's cache (sequences advance in lockstep)
	priority       int // of the transcription's graph evaluations
	audioCtx       int // encoder positions of the current window (the first ones of crossK, crossV)
}

// newState allocates caches for nSeq sequences.
func (m *Model) newState(nSeq int) (*state, error) {
	nSeq = max(nSeq, 1)
	st := &state{store: m.backend.NewStore(), nSeq: nSeq, audioCtx: m.hp.NAudioCtx}
	h := m.hp
	for range h.NTextLayer {
		// Keys are [state, positions(, sequences)]; values the same, or
		// transposed when attention without fused kernels wants them so.
		shapes := [4][]int{{h.NTextState, h.NAudioCtx}, {h.NTextState, h.NAudioCtx}, {h.NTextState, h.NTextCtx, nSeq}, {h.NTextState, h.NTextCtx, nSeq}}
		if m.vTrans {
			shapes[1] = []int{h.NAudioCtx, h.NTextState}
			shapes[3] = []int{h.NTextCtx, h.NTextState, nSeq}
		}
		var ts [4]ggml.Tensor
		for i, shape := range shapes {
			var err error
			if ts[i], err = st.store.Zeros(m.kvType, shape...); err != nil {
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

// tensors is the number of stored tensors in st, which a graph reading
// all of st's caches holds as leaves.
func (st *state) tensors() int {
	return len(st.crossK) + len(st.crossV) + len(st.selfK) + len(st.selfV)
}

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
	g, done := m.graph(st.priority)
	defer done()
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
//
// The window is len(mel)/NMels frames: 30 s (2·NAudioCtx frames) as the
// model was trained, or fewer for a reduced audio context (Options.AudioCtx),
// whose positions then take the first rows of the positional embedding and
// of the cross-attention caches.
func (m *Model) buildEncoder(g *ggml.Graph, mel []float32, st *state) ([]ggml.Tensor, ggml.Tensor) {
	h, w := m.hp, &m.w
	frames := len(mel) / h.NMels
	nState, nCtx, hd := h.NAudioState, frames/2, m.headDim()
	st.audioCtx = nCtx

	// Two convolutions (kernel 3, padding 1, strides 1 and 2) as im2col and
	// a matrix product each, with exact GELU.
	x := g.Input(mel, frames, h.NMels).Reshape(g, frames, 1, h.NMels, 1)
	cols := x.IM2Col(g, w.conv1W.Reshape(g, 3, 1, h.NMels, nState), 1, 1, 1, 0, 1, 1)
	x = w.conv1W.Reshape(g, 3*h.NMels, nState).Mulmat(g, cols.Reshape(g, 3*h.NMels, frames))
	x = x.Add(g, w.conv1B.Reshape(g, nState)).GELUInPlace(g) // [state, frames]
	x = x.Permute(g, 1, 0, 2, 3).Contiguous(g).Reshape(g, frames, 1, nState, 1)
	cols = x.IM2Col(g, w.conv2W.Reshape(g, 3, 1, nState, nState), 2, 1, 1, 0, 1, 1)
	x = w.conv2W.Reshape(g, 3*nState, nState).Mulmat(g, cols.Reshape(g, 3*nState, nCtx))
	x = x.Add(g, w.conv2B.Reshape(g, nState)).GELUInPlace(g) // [state, ctx]
	pos := w.encPos
	if nCtx < h.NAudioCtx {
		pos = pos.View(g, 0, nState, pos.Stride(1), nCtx)
	}
	x = x.Add(g, pos)

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
		es := m.elemSize()
		kDst, vDst := st.crossK[i], st.crossV[i]
		if nCtx < h.NAudioCtx {
			kDst = kDst.View(g, 0, nState, nState*es, nCtx)
			vDst = vDst.View(g, 0, nState, nState*es, nCtx)
		}
		if m.vTrans {
			v = v.Permute(g, 1, 0, 2, 3)
			if nCtx < h.NAudioCtx {
				vDst = st.crossV[i].View(g, 0, nCtx, h.NAudioCtx*es, nState)
			}
		}
		copies = append(copies, k.CopyTo(g, kDst), v.CopyTo(g, vDst))
	}
	return copies, x
}

// mlp is the pre-norm feed-forward block with its residual.
func (m *Model) mlp(g *ggml.Graph, l mlpWeights, x ggml.Tensor) ggml.Tensor {
	y := x.LayerNorm(g, l.lnW, l.lnB, layerNormEps)
	y = l.w0.Mulmat(g, y).Add(g, l.b0).GELUInPlace(g)
	return l.w2.Mulmat(g, y).Add(g, l.b2).Add(g, x)
}

// decode appends tokens to sequence 0 and returns the logits after the
// last one: a prompt when the cache is empty, otherwise single steps.
func (m *Model) decode(st *state, tokens []int32) ([]float32, error) {
	if st.n == 0 || len(tokens) > 1 {
		rows, err := m.prompt(st, tokens, []int{len(tokens) - 1})
		if err != nil {
			return nil, err
		}
		return rows[0], nil
	}
	rows, err := m.step(st, tokens)
	if err != nil {
		return nil, err
	}
	return rows[0], nil
}

// prompt evaluates tokens as the start of sequence 0 (after what its cache
// holds), copies the cache to every other sequence, and returns the logits
// after the tokens at the indexes in rows.
func (m *Model) prompt(st *state, tokens []int32, rows []int) ([][]float32, error) {
	h := m.hp
	n, p0 := len(tokens), st.n
	if n == 0 {
		return nil, fmt.Errorf("decode: no tokens")
	}
	if p0+n > h.NTextCtx {
		return nil, fmt.Errorf("decode: %d tokens after %d exceed the text context of %d", n, p0, h.NTextCtx)
	}
	out, err := func() ([][]float32, error) {
		g, done := m.graph(st.priority)
		defer done()
		logits := m.buildDecoder(g, st, tokens, p0, 1, rows)
		if err := g.Compute(logits); err != nil {
			return nil, err
		}
		return splitRows(logits.Floats(), len(rows)), nil
	}()
	if err != nil {
		return nil, err
	}
	st.n += n
	if st.nSeq > 1 {
		if err := m.reorder(st, make([]int, st.nSeq)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// step evaluates one token for each sequence (len(tokens) of them, at most
// st.nSeq) and returns each one's logits. Steps of concurrent
// transcriptions on the model run together: a step that finds the backend
// busy waits, and whoever takes the backend next evaluates its own step
// and as many of those waiting by then as one graph holds (see stepParts),
// oldest first; the rest wait for the next graph.
func (m *Model) step(st *state, tokens []int32) ([][]float32, error) {
	if len(tokens) == 0 || len(tokens) > st.nSeq {
		return nil, fmt.Errorf("decode: %d sequences in a state for %d", len(tokens), st.nSeq)
	}
	if st.n+1 > m.hp.NTextCtx {
		return nil, fmt.Errorf("decode: the text context of %d is full", m.hp.NTextCtx)
	}
	c := &stepCall{part: decoderPart{st: st, tokens: tokens, p0: st.n, nSeq: len(tokens)}, done: make(chan struct{})}
	m.stepMu.Lock()
	m.pending = append(m.pending, c)
	m.stepMu.Unlock()

	m.turn.Acquire(st.priority, 1)
	defer m.turn.Release(1)
	select {
	case <-c.done: // evaluated with another transcription's step
		return c.logits, c.err
	default:
	}
	g, done := m.gatedGraph(st.priority)
	defer done()
	calls := m.takeSteps(c)
	parts := make([]decoderPart, len(calls))
	for i, c := range calls {
		parts[i] = c.part
	}
	logits := m.buildDecoderParts(g, parts, nil)
	// A step is a graph of small ops: with other programs busy on the
	// cores, fewer threads spin less at the barriers between them.
	g.SetThreads(int(math.Round(compute.Spare())))
	err := g.Compute(logits)
	if err != nil {
		err = fmt.Errorf("decoder step of %d transcriptions: %w", len(calls), err)
	}
	m.stepGraphs.Add(1)
	m.stepCalls.Add(int64(len(calls)))
	var rows [][]float32
	if err == nil {
		n := 0
		for _, c := range calls {
			n += len(c.part.tokens)
		}
		rows = splitRows(logits.Floats(), n)
	}
	for _, c := range calls {
		if err != nil {
			c.err = err
		} else {
			c.part.st.n++
			c.logits, rows = rows[:len(c.part.tokens)], rows[len(c.part.tokens):]
		}
		close(c.done)
	}
	return c.logits, c.err
}

// takeSteps removes from the pending steps own and then, oldest first, as
// many others as one step graph holds: at most m.stepParts
// transcriptions and maxStepRows sequences.
func (m *Model) takeSteps(own *stepCall) []*stepCall {
	m.stepMu.Lock()
	defer m.stepMu.Unlock()
	calls := []*stepCall{own}
	rows := len(own.part.tokens)
	rest := m.pending[:0]
	for _, c := range m.pending {
		switch {
		case c == own:
		case len(calls) < m.stepParts && rows+len(c.part.tokens) <= maxStepRows:
			calls = append(calls, c)
			rows += len(c.part.tokens)
		default:
			rest = append(rest, c)
		}
	}
	clear(m.pending[len(rest):])
	m.pending = rest
	return calls
}

// stepCall is a transcription's decoder step waiting to be evaluated.
type stepCall struct {
	part   decoderPart
	logits [][]float32
	err    error
	done   chan struct{} // closed when logits or err is set
}

// graph takes the backend for one evaluation; done frees the graph and
// the backend. Graphs on one backend are evaluated one at a time, those of
// higher priority first, each once the model's threads are free in the
// gate shared with other models.
func (m *Model) graph(prio int) (*ggml.Graph, func()) {
	m.turn.Acquire(prio, 1)
	g, done := m.gatedGraph(prio)
	return g, func() {
		done()
		m.turn.Release(1)
	}
}

// gatedGraph, with the backend held, waits for the model's threads in the
// gate shared with other models and makes a graph; done frees both.
func (m *Model) gatedGraph(prio int) (*ggml.Graph, func()) {
	held := m.gate.Acquire(prio, m.backend.Threads())
	g := m.backend.NewGraph()
	return g, func() {
		g.Close()
		m.gate.Release(held)
	}
}

func splitRows(flat []float32, n int) [][]float32 {
	out := make([][]float32, n)
	w := len(flat) / n
	for i := range out {
		out[i] = flat[i*w : (i+1)*w : (i+1)*w]
	}
	return out
}

// reorder makes sequence i continue sequence parents[i]: each sequence's
// cache is replaced by a copy of its parent's (all read before any is written).
func (m *Model) reorder(st *state, parents []int) error {
	if len(parents) > st.nSeq {
		return fmt.Errorf("reorder: %d parents for %d sequences", len(parents), st.nSeq)
	}
	identity := true
	for i, p := range parents {
		if p < 0 || p >= st.nSeq {
			return fmt.Errorf("reorder: parent %d of %d sequences", p, st.nSeq)
		}
		identity = identity && p == i
	}
	if identity || st.n == 0 {
		return nil
	}
	g, done := m.graph(st.priority)
	defer done()
	copies, err := m.buildReorder(g, st, parents)
	if err != nil {
		return err
	}
	return g.Compute(copies...)
}

// buildReorder adds to g the copies that give sequence i the cache of
// sequence parents[i].
func (m *Model) buildReorder(g *ggml.Graph, st *state, parents []int) ([]ggml.Tensor, error) {
	h, es := m.hp, m.elemSize()
	slab := h.NTextState * h.NTextCtx // one sequence's cache of one layer
	idx := make([]int32, st.nSeq)
	for i := range idx {
		idx[i] = int32(i)
	}
	for i, p := range parents {
		idx[i] = int32(p)
	}
	ids := g.InputInts(idx, st.nSeq)
	var gathered, dsts []ggml.Tensor
	for l := range st.selfK {
		for _, c := range []ggml.Tensor{st.selfK[l], st.selfV[l]} {
			view := c.View(g, 0, slab, slab*es, st.nSeq)
			gathered = append(gathered, view.Rows(g, ids))
			dsts = append(dsts, view)
		}
	}
	// Every gather runs before any copy back (nodes run in order).
	g.Forward(gathered...)
	copies := make([]ggml.Tensor, len(gathered))
	for i := range gathered {
		copies[i] = gathered[i].CopyTo(g, dsts[i])
	}
	return copies, g.Err()
}

// buildDecoder adds the decoder to g for nSeq sequences: either one
// sequence's tokens at positions p0 on (nSeq 1), or one token for each of
// nSeq sequences at position p0. It returns the logits after the tokens at
// the indexes in rows (nil: each sequence's last).
//
// When weights is not nil, the cross-attention weights of each decoder layer
// i are stored in weights[i] ([audio positions, tokens, heads]).
func (m *Model) buildDecoder(g *ggml.Graph, st *state, tokens []int32, p0, nSeq int, rows []int, weights ...*[]ggml.Tensor) ggml.Tensor {
	return m.buildDecoderParts(g, []decoderPart{{st, tokens, p0, nSeq}}, rows, weights...)
}

// decoderPart is one transcription's share of a decoder evaluation: nSeq
// sequences of its state, len(tokens)/nSeq tokens each, from position p0.
type decoderPart struct {
	st     *state
	tokens []int32
	p0     int
	nSeq   int
}

// buildDecoderParts adds the decoder to g for several transcriptions at
// once: the matrix products (projections, MLP, logits) run over every
// part's tokens together, which is what makes batching pay; attention runs
// per part, over that part's caches and encoded window. Without rows, the
// logits are those after each sequence's last token, parts in order.
// Weights are only collected for a single part.
func (m *Model) buildDecoderParts(g *ggml.Graph, parts []decoderPart, rows []int, weights ...*[]ggml.Tensor) ggml.Tensor {
	h, w := m.hp, &m.w
	nState, hd, nHead, nCtx := h.NTextState, h.NTextState/h.NTextHead, h.NTextHead, h.NTextCtx
	es := m.elemSize()
	seqStride := nState * nCtx * es
	scale := 1 / math.Sqrt(float64(hd))

	var tokens, pos []int32
	type span struct{ off, n, perSeq, nkv int }
	spans := make([]span, len(parts))
	masks := make([]ggml.Tensor, len(parts))
	for i, p := range parts {
		n := len(p.tokens)
		perSeq := n / p.nSeq
		spans[i] = span{len(tokens), n, perSeq, p.p0 + perSeq}
		tokens = append(tokens, p.tokens...)
		for j := range n {
			pos = append(pos, int32(p.p0+j%perSeq))
		}
		if perSeq > 1 {
			nkv := p.p0 + perSeq
			mv := make([]float32, nkv*perSeq)
			for r := range perSeq {
				for c := p.p0 + r + 1; c < nkv; c++ {
					mv[r*nkv+c] = float32(math.Inf(-1))
				}
			}
			masks[i] = g.Input(mv, nkv, perSeq)
		}
	}
	n := len(tokens)
	x := w.tokEmb.Rows(g, g.InputInts(tokens, n)).Add(g, w.decPos.Rows(g, g.InputInts(pos, n)))

	// columns is the part of a [nState, n] tensor that belongs to part i.
	columns := func(t ggml.Tensor, i int) ggml.Tensor {
		if len(parts) == 1 {
			return t
		}
		return t.View(g, spans[i].off*nState*4, nState, nState*4, spans[i].n)
	}
	join := func(outs []ggml.Tensor) ggml.Tensor {
		a := outs[0]
		for _, o := range outs[1:] {
			a = a.Concat(g, o, 1)
		}
		return a
	}
	outs := make([]ggml.Tensor, len(parts))
	for i, l := range w.dec {
		// Self-attention over each sequence's cache, after writing this
		// step's keys and values into it.
		r := x
		y := x.LayerNorm(g, l.attn.lnW, l.attn.lnB, layerNormEps)
		qAll := m.projectQ(g, l.attn, y)
		kAll := l.attn.kW.Mulmat(g, y)
		vAll := l.attn.vW.Mulmat(g, y).Add(g, l.attn.vB)
		for pi, p := range parts {
			sp, st := spans[pi], p.st
			perSeq, nSeq, p0 := sp.perSeq, p.nSeq, p.p0
			q := columns(qAll, pi).Reshape(g, hd, nHead, perSeq, nSeq)
			k, v := columns(kAll, pi), columns(vAll, pi)
			g.Forward(k.Reshape(g, nState*perSeq, nSeq).CopyTo(g, st.selfK[i].View(g, p0*nState*es, nState*perSeq, seqStride, nSeq)))
			var vc ggml.Tensor
			if m.vTrans {
				// v [state, perSeq, nSeq] goes to V^T[p0.., state, seq].
				src := v.Reshape(g, nState, perSeq, nSeq).Permute(g, 1, 0, 2, 3)
				g.Forward(src.CopyTo(g, st.selfV[i].View(g, p0*es, perSeq, nCtx*es, nState, seqStride, nSeq)))
				vc = st.selfV[i].View(g, 0, sp.nkv, nCtx*es, hd, hd*nCtx*es, nHead, seqStride, nSeq)
			} else {
				g.Forward(v.Reshape(g, nState*perSeq, nSeq).CopyTo(g, st.selfV[i].View(g, p0*nState*es, nState*perSeq, seqStride, nSeq)))
				vc = st.selfV[i].View(g, 0, hd, hd*es, nHead, nState*es, sp.nkv, seqStride, nSeq)
			}
			kc := st.selfK[i].View(g, 0, hd, hd*es, nHead, nState*es, sp.nkv, seqStride, nSeq)
			outs[pi] = q.Attention(g, kc, vc, masks[pi], scale, m.vTrans).Reshape(g, nState, sp.n)
		}
		x = l.attn.oW.Mulmat(g, join(outs)).Add(g, l.attn.oB).Add(g, r)

		// Cross-attention over each part's encoded window, shared by the
		// part's sequences.
		r = x
		y = x.LayerNorm(g, l.cross.lnW, l.cross.lnB, layerNormEps)
		qAll = m.projectQ(g, l.cross, y)
		for pi, p := range parts {
			st := p.st
			q := columns(qAll, pi).Reshape(g, hd, nHead, spans[pi].n)
			actx := st.audioCtx
			ck := st.crossK[i].View(g, 0, hd, hd*es, nHead, nState*es, actx)
			var cv ggml.Tensor
			if m.vTrans {
				cv = st.crossV[i].View(g, 0, actx, h.NAudioCtx*es, hd, hd*h.NAudioCtx*es, nHead)
			} else {
				cv = st.crossV[i].View(g, 0, hd, hd*es, nHead, nState*es, actx)
			}
			if len(weights) > 0 && len(parts) == 1 {
				a, aw := q.AttentionWeights(g, ck, cv, scale, m.vTrans)
				outs[pi] = a.Reshape(g, nState, spans[pi].n)
				*weights[0] = append(*weights[0], aw)
			} else {
				outs[pi] = q.Attention(g, ck, cv, ggml.Tensor{}, scale, m.vTrans).Reshape(g, nState, spans[pi].n)
			}
		}
		x = l.cross.oW.Mulmat(g, join(outs)).Add(g, l.cross.oB).Add(g, r)

		x = m.mlp(g, l.mlp, x)
	}
	x = x.LayerNorm(g, w.lnW, w.lnB, layerNormEps)
	var idx []int32
	switch {
	case rows != nil:
		for _, r := range rows {
			idx = append(idx, int32(r))
		}
	default:
		for pi, p := range parts {
			sp := spans[pi]
			if sp.perSeq == 1 && len(parts) == 1 {
				break
			}
			for s := range p.nSeq {
				idx = append(idx, int32(sp.off+s*sp.perSeq+sp.perSeq-1))
			}
		}
	}
	if idx != nil && len(idx) != n {
		x = x.Rows(g, g.InputInts(idx, len(idx)))
	}
	return w.tokEmb.Mulmat(g, x)
}

// maxPrompt is the longest prompt decoded at once: half the text context of
// previous text, and the start-of-transcript sequence.
func (m *Model) maxPrompt() int { return min(m.hp.NTextCtx, m.hp.NTextCtx/2+4) }

// maxSeq is the most sequences decoded side by side (beams or samples).
const maxSeq = 16

// maxStepRows is the most sequences one step graph decodes, over all the
// transcriptions in it: it bounds the graph's compute memory (the logits
// alone are 4·n_vocab bytes a sequence) at what reserve allocates.
const maxStepRows = models.WhisperStepRows

// reserve checks that every graph the model runs fits a graph's capacity,
// learns how many transcriptions' steps one graph holds (stepParts), and
// allocates the compute memory of the largest graphs (the encoder, the
// longest prompt, a step of maxStepRows sequences with full caches), so
// that transcriptions neither reallocate nor fault in memory as they go.
func (m *Model) reserve() error {
	st, err := m.newState(maxSeq)
	if err != nil {
		return err
	}
	defer st.close()
	h := m.hp
	if err := m.planSteps(st); err != nil {
		return err
	}
	build := func(what string, f func(g *ggml.Graph) []ggml.Tensor, reserve bool) error {
		g, done := m.graph(0)
		defer done()
		outs := f(g)
		if err := g.Err(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if !reserve {
			return nil
		}
		return g.Reserve(outs...)
	}
	if err := build("encoder", func(g *ggml.Graph) []ggml.Tensor {
		copies, _ := m.buildEncoder(g, make([]float32, h.NMels*min(WindowFrames, framesPerPos*h.NAudioCtx)), st)
		return copies
	}, true); err != nil {
		return err
	}
	prompt := m.maxPrompt()
	if err := build("prompt", func(g *ggml.Graph) []ggml.Tensor {
		return []ggml.Tensor{m.buildDecoder(g, st, make([]int32, prompt), 0, 1, []int{prompt - 1})}
	}, true); err != nil {
		return err
	}
	parts := make([]decoderPart, min(m.stepParts, maxStepRows/maxSeq))
	for i := range parts {
		parts[i] = decoderPart{st: st, tokens: make([]int32, maxSeq), p0: h.NTextCtx - 1, nSeq: maxSeq}
	}
	if err := build("decoder step", func(g *ggml.Graph) []ggml.Tensor {
		return []ggml.Tensor{m.buildDecoderParts(g, parts, nil)}
	}, true); err != nil {
		return err
	}
	// The alignment pass of word timestamps (the longest sequence, with
	// the cross-attention weights kept) and a reordering of beams are
	// built once to see that they fit; they need little memory.
	if err := build("alignment", func(g *ggml.Graph) []ggml.Tensor {
		var weights []ggml.Tensor
		return []ggml.Tensor{m.buildDecoder(g, st, make([]int32, h.NTextCtx), 0, 1, []int{0}, &weights)}
	}, false); err != nil {
		return err
	}
	return build("beam reordering", func(g *ggml.Graph) []ggml.Tensor {
		st.n = 1
		defer func() { st.n = 0 }()
		copies, _ := m.buildReorder(g, st, make([]int, maxSeq))
		return copies
	}, false)
}

// planSteps sets stepParts, the most transcriptions whose decoder steps
// one graph holds. A step graph of n transcriptions takes a + b·n nodes
// (n ≥ 2): the ops each transcription adds (measured, from graphs of two
// and three shares of st, built but not computed), and the stored tensors
// of its own state, which a share of st reads only once.
func (m *Model) planSteps(st *state) error {
	h := m.hp
	used := func(n int) (int, error) {
		g := m.backend.NewGraph()
		defer g.Close()
		parts := make([]decoderPart, n)
		for i := range parts {
			// Several sequences at the last position: the costliest shape.
			parts[i] = decoderPart{st: st, tokens: make([]int32, 2), p0: h.NTextCtx - 1, nSeq: 2}
		}
		m.buildDecoderParts(g, parts, nil)
		return g.Used(), g.Err()
	}
	u2, err := used(2)
	if err != nil {
		return fmt.Errorf("decoder step: %w", err)
	}
	u3, err := used(3)
	if err != nil {
		return fmt.Errorf("decoder step: %w", err)
	}
	perPart := u3 - u2 + st.tensors()
	fixed := u2 - 2*(u3-u2)
	m.stepParts = (m.backend.GraphCapacity() - fixed) / perPart
	if m.stepParts < 1 {
		return fmt.Errorf("%w: a decoder step needs %d nodes, over a graph's %d", ggml.ErrGraphFull, fixed+perPart, m.backend.GraphCapacity())
	}
	return nil
}
