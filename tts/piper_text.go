package tts

import (
	"math"
	"strconv"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/owlengine/owl/bindings/ggml"
	"github.com/owlengine/owl/models"
)

// The text side of a Piper voice: the text encoder (its convolutions and
// norms on ggml, the relative-position attention between them in Go, where
// a sentence's few hundred phonemes make it cheap) and the stochastic
// duration predictor (in Go: a small network over the phonemes, with exact
// GELU and the rational quadratic splines of its flows). Go-side tensors
// are channel-major: v[c·T + t].

// goWeights are the weights the Go side reads, as float32.
func goWeights(v *models.PiperVoice) (map[string][]float32, error) {
	out := map[string][]float32{}
	for name, t := range v.Weights {
		if name == "enc_p.emb.weight" || name == "emb_g.weight" || len(name) > 3 && name[:3] == "dp." {
			f, err := t.Floats()
			if err != nil {
				return nil, err
			}
			out[name] = f
		}
	}
	return out, nil
}

// encoded is the text encoder's output for a sentence of T phonemes.
type encoded struct {
	T       int
	x       []float32 // [H][T], for the duration predictor
	m, logs []float32 // [Inter][T], the prior per phoneme
}

// encode runs the text encoder over phoneme ids.
func (p *Piper) encode(ids []int64) (*encoded, error) {
	h := p.h
	H, T := h.Hidden, len(ids)
	emb := p.gw["enc_p.emb.weight"]
	x := make([]float32, H*T)
	scale := float32(math.Sqrt(float64(H)))
	for t, id := range ids {
		if id < 0 || int(id) >= h.Symbols {
			return nil, errorf("phoneme id %d outside the voice's %d", id, h.Symbols)
		}
		for c := range H {
			x[c*T+t] = emb[int(id)*H+c] * scale
		}
	}
	for l := range h.Layers {
		pre := "enc_p.encoder."
		n := strconv.Itoa(l)
		// q, k, v on ggml; the attention in Go.
		var q, k, v []float32
		err := p.run(func(g *ggml.Graph) []ggml.Tensor {
			xi := g.Input(x, T, H)
			a := pre + "attn_layers." + n
			return []ggml.Tensor{p.conv(g, xi, a+".conv_q", 1, 0), p.conv(g, xi, a+".conv_k", 1, 0), p.conv(g, xi, a+".conv_v", 1, 0)}
		}, func(out [][]float32) { q, k, v = out[0], out[1], out[2] })
		if err != nil {
			return nil, err
		}
		att := p.attention(pre+"attn_layers."+n, q, k, v, T)
		// The output projection, the norms and the feed-forward block.
		err = p.run(func(g *ggml.Graph) []ggml.Tensor {
			xi := g.Input(x, T, H)
			y := p.conv(g, g.Input(att, T, H), pre+"attn_layers."+n+".conv_o", 1, 0)
			x1 := p.channelNorm(g, xi.Add(g, y), pre+"norm_layers_1."+n)
			kk := h.FFNKernel
			f := p.conv(g, x1, pre+"ffn_layers."+n+".conv_1", 1, (kk-1)/2).ReLU(g)
			f = p.conv(g, f, pre+"ffn_layers."+n+".conv_2", 1, (kk-1)/2)
			return []ggml.Tensor{p.channelNorm(g, x1.Add(g, f), pre+"norm_layers_2."+n)}
		}, func(out [][]float32) { x = out[0] })
		if err != nil {
			return nil, err
		}
	}
	var stats []float32
	if err := p.run(func(g *ggml.Graph) []ggml.Tensor {
		return []ggml.Tensor{p.conv(g, g.Input(x, T, H), "enc_p.proj", 1, 0)}
	}, func(out [][]float32) { stats = out[0] }); err != nil {
		return nil, err
	}
	n := h.Inter * T
	return &encoded{T: T, x: x, m: stats[:n], logs: stats[n : 2*n]}, nil
}

// channelNorm is Piper's LayerNorm over the channels of x [T, C].
func (p *Piper) channelNorm(g *ggml.Graph, x ggml.Tensor, name string) ggml.Tensor {
	t := x.Permute(g, 1, 0, 2, 3).Contiguous(g) // [C, T]
	t = t.LayerNorm(g, p.w[name+".gamma"], p.w[name+".beta"], 1e-5)
	return t.Permute(g, 1, 0, 2, 3).Contiguous(g)
}

// run builds a graph, computes its outputs and hands over their values.
func (p *Piper) run(build func(*ggml.Graph) []ggml.Tensor, take func([][]float32)) error {
	g := p.backend.NewGraph()
	defer g.Close()
	outs := build(g)
	if err := g.Compute(outs...); err != nil {
		return err
	}
	vals := make([][]float32, len(outs))
	for i, o := range outs {
		vals[i] = o.Floats()
	}
	take(vals)
	return nil
}

// attention is the multi-head attention with relative positions (window
// w, heads sharing the embeddings) over q, k, v [H][T], in matrix products:
// per head, scores = Qᵀ·K/√dk plus the relative logits on the band |j−i| ≤ w,
// softmax over j, out = V·Pᵀ plus the relative values of the band.
func (p *Piper) attention(pre string, q, k, v []float32, T int) []float32 {
	h := p.h
	H, heads, win := h.Hidden, h.Heads, h.Window
	dk, band := H/heads, 2*h.Window+1
	ek, ev := p.relK[pre], p.relV[pre] // [band][dk]
	impl := blas32.Implementation()
	out := make([]float32, H*T)
	scale := float32(1 / math.Sqrt(float64(dk)))
	S := make([]float32, T*T)
	R := make([]float32, band*T)
	B := make([]float32, band*T)
	for hd := range heads {
		qh, kh, vh, oh := q[hd*dk*T:(hd+1)*dk*T], k[hd*dk*T:(hd+1)*dk*T], v[hd*dk*T:(hd+1)*dk*T], out[hd*dk*T:(hd+1)*dk*T]
		impl.Sgemm(blas.Trans, blas.NoTrans, T, T, dk, scale, qh, T, kh, T, 0, S, T)       // S[i][j]
		impl.Sgemm(blas.NoTrans, blas.NoTrans, band, T, dk, scale, ek, dk, qh, T, 0, R, T) // R[d][i]
		for i := range T {
			row := S[i*T : (i+1)*T]
			for d := -win; d <= win; d++ {
				if j := i + d; j >= 0 && j < T {
					row[j] += R[(d+win)*T+i]
				}
			}
			mx := float32(math.Inf(-1))
			for _, x := range row {
				mx = max(mx, x)
			}
			var sum float32
			for j, x := range row {
				e := float32(math.Exp(float64(x - mx)))
				row[j] = e
				sum += e
			}
			inv := 1 / sum
			for j := range row {
				row[j] *= inv
			}
			for d := -win; d <= win; d++ {
				bv := float32(0)
				if j := i + d; j >= 0 && j < T {
					bv = row[j]
				}
				B[(d+win)*T+i] = bv
			}
		}
		impl.Sgemm(blas.NoTrans, blas.Trans, dk, T, T, 1, vh, T, S, T, 0, oh, T)     // V·Pᵀ
		impl.Sgemm(blas.Trans, blas.NoTrans, dk, T, band, 1, ev, dk, B, T, 1, oh, T) // + relative values
	}
	return out
}

// conv1x1 is a 1×1 convolution over x [Cin][T] with weights [Cout][Cin]
// and bias [Cout]: y = W·x + b, one matrix product (gonum's BLAS).
func conv1x1(x []float32, T int, w, b []float32) []float32 {
	cin := len(x) / T
	cout := len(w) / cin
	y := make([]float32, cout*T)
	for o := range cout {
		row := y[o*T : (o+1)*T]
		for t := range row {
			row[t] = b[o]
		}
	}
	blas32.Implementation().Sgemm(blas.NoTrans, blas.NoTrans, cout, T, cin, 1, w, cin, x, T, 1, y, T)
	return y
}

// layerNormC normalizes x [C][T] over channels, eps 1e-5.
func layerNormC(x []float32, T int, gamma, beta []float32) {
	C := len(x) / T
	for t := range T {
		var mean, v float64
		for c := range C {
			mean += float64(x[c*T+t])
		}
		mean /= float64(C)
		for c := range C {
			d := float64(x[c*T+t]) - mean
			v += d * d
		}
		inv := 1 / math.Sqrt(v/float64(C)+1e-5)
		for c := range C {
			x[c*T+t] = float32((float64(x[c*T+t])-mean)*inv)*gamma[c] + beta[c]
		}
	}
}

func geluExact(v float32) float32 {
	return float32(0.5 * float64(v) * (1 + math.Erf(float64(v)/math.Sqrt2)))
}

// dds is the dilated depth-separable stack over x [H][T] (g added first).
func (p *Piper) dds(pre string, x, g []float32, T int) []float32 {
	H := p.h.Hidden
	x = append([]float32(nil), x...)
	if g != nil {
		for i := range x {
			x[i] += g[i]
		}
	}
	y := make([]float32, H*T)
	for l := range p.h.DPLayers {
		n := strconv.Itoa(l)
		d := int(math.Pow(3, float64(l)))
		w, b := p.gw[pre+".convs_sep."+n+".weight"], p.gw[pre+".convs_sep."+n+".bias"]
		for c := range H {
			xc := x[c*T : (c+1)*T]
			for t := range T {
				s := b[c]
				for j := range 3 {
					if q := t + (j-1)*d; q >= 0 && q < T {
						s += w[c*3+j] * xc[q]
					}
				}
				y[c*T+t] = s
			}
		}
		layerNormC(y, T, p.gw[pre+".norms_1."+n+".gamma"], p.gw[pre+".norms_1."+n+".beta"])
		for i := range y {
			y[i] = geluExact(y[i])
		}
		z := conv1x1(y, T, p.gw[pre+".convs_1x1."+n+".weight"], p.gw[pre+".convs_1x1."+n+".bias"])
		layerNormC(z, T, p.gw[pre+".norms_2."+n+".gamma"], p.gw[pre+".norms_2."+n+".beta"])
		for i := range z {
			x[i] += geluExact(z[i])
		}
	}
	return x
}

// Piper's spline settings.
const (
	piperTail   = 5.0
	piperMinBin = 1e-3
	piperMinDer = 1e-3
)

// splineEdges turns unnormalized bin sizes into the K+1 edges over ±5.
func splineEdges(u []float64) []float64 {
	K := len(u)
	mx := math.Inf(-1)
	for _, v := range u {
		mx = math.Max(mx, v)
	}
	e := make([]float64, K)
	sum := 0.0
	for i, v := range u {
		e[i] = math.Exp(v - mx)
		sum += e[i]
	}
	edges := make([]float64, K+1)
	acc := 0.0
	for i := range K {
		acc += piperMinBin + (1-piperMinBin*float64(K))*e[i]/sum
		edges[i+1] = 2*piperTail*acc - piperTail
	}
	edges[0], edges[K] = -piperTail, piperTail
	return edges
}

// inverseSpline is the inverse of the rational quadratic spline with the
// given unnormalized widths, heights and inner derivatives; identity
// outside ±5.
func inverseSpline(y float64, uw, uh, ud []float64) float64 {
	if y < -piperTail || y > piperTail {
		return y
	}
	cw, ch := splineEdges(uw), splineEdges(uh)
	end := math.Log(math.Exp(1-piperMinDer) - 1)
	der := func(i int) float64 {
		u := end
		if i > 0 && i <= len(ud) {
			u = ud[i-1]
		}
		return piperMinDer + math.Log1p(math.Exp(u))
	}
	k := 0 // searchsorted, 1e-6 added to the last edge
	for i, e := range ch {
		if i == len(ch)-1 {
			e += 1e-6
		}
		if y >= e {
			k = i
		}
	}
	k = min(k, len(ch)-2)
	w, hgt := cw[k+1]-cw[k], ch[k+1]-ch[k]
	delta := hgt / w
	dk, dk1 := der(k), der(k+1)
	r := y - ch[k]
	a := r*(dk+dk1-2*delta) + hgt*(delta-dk)
	b := hgt*dk - r*(dk+dk1-2*delta)
	c := -delta * r
	return 2*c/(-b-math.Sqrt(b*b-4*a*c))*w + cw[k]
}

// durations runs the duration predictor backwards from noise [2][T]
// (already times noise_w) and returns each phoneme's frames; g is the
// speaker's embedding of a multi-speaker voice, or nil.
func (p *Piper) durations(e *encoded, noise []float32, lengthScale float64, g []float32) []int {
	T, H, K := e.T, p.h.Hidden, p.h.DPBins
	x := conv1x1(e.x, T, p.gw["dp.pre.weight"], p.gw["dp.pre.bias"])
	if g != nil { // the speaker, at every phoneme
		c := conv1x1(g, 1, p.gw["dp.cond.weight"], p.gw["dp.cond.bias"])
		for ch, v := range c {
			for t := range T {
				x[ch*T+t] += v
			}
		}
	}
	x = p.dds("dp.convs", x, nil, T)
	x = conv1x1(x, T, p.gw["dp.proj.weight"], p.gw["dp.proj.bias"])
	z0, z1 := append([]float32(nil), noise[:T]...), append([]float32(nil), noise[T:2*T]...)
	sq := math.Sqrt(float64(H))
	for _, f := range []int{7, 5, 3} {
		z0, z1 = z1, z0 // flip
		pre := "dp.flows." + strconv.Itoa(f)
		hh := conv1x1(z0, T, p.gw[pre+".pre.weight"], p.gw[pre+".pre.bias"])
		hh = p.dds(pre+".convs", hh, x, T)
		hh = conv1x1(hh, T, p.gw[pre+".proj.weight"], p.gw[pre+".proj.bias"])
		uw, uh, ud := make([]float64, K), make([]float64, K), make([]float64, K-1)
		for t := range T {
			for i := range K {
				uw[i] = float64(hh[i*T+t]) / sq
				uh[i] = float64(hh[(K+i)*T+t]) / sq
			}
			for i := range K - 1 {
				ud[i] = float64(hh[(2*K+i)*T+t])
			}
			z1[t] = float32(inverseSpline(float64(z1[t]), uw, uh, ud))
		}
	}
	z0 = z1 // the last flip
	m, logs := p.gw["dp.flows.0.m"], p.gw["dp.flows.0.logs"]
	frames := make([]int, T)
	for t := range T {
		logw := (float64(z0[t]) - float64(m[0])) * math.Exp(-float64(logs[0]))
		frames[t] = int(math.Ceil(math.Exp(logw) * lengthScale))
	}
	return frames
}

// speaker returns speaker id's embedding (nil for a single-speaker voice).
func (p *Piper) speaker(id int) ([]float32, error) {
	if p.h.Speakers <= 1 {
		if id != 0 {
			return nil, errorf("speaker %d: the voice has one speaker", id)
		}
		return nil, nil
	}
	if id < 0 || id >= p.h.Speakers {
		return nil, errorf("speaker %d: the voice has speakers 0 to %d", id, p.h.Speakers-1)
	}
	return p.gw["emb_g.weight"][id*p.h.Gin : (id+1)*p.h.Gin], nil
}
