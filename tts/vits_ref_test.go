package tts

import (
	"math"
	"strconv"

	"github.com/owlengine/owl/models"
)

// The float64 VITS of Piper's model code, written from its definition
// (models.py, modules.py, attentions.py, transforms.py of piper_train), for
// one sentence (batch 1, no padding, so every mask is ones). Tensors are
// [channels][time]. The noise of the duration predictor and of the prior
// are inputs, so that another implementation given the same noise must give
// the same audio.

type refVoice struct {
	h models.PiperHParams
	w map[string][]float64
	s map[string][]int64
	g []float64 // the speaker's embedding (multi-speaker voices), or nil
}

// setSpeaker picks a multi-speaker voice's speaker: emb_g's row.
func (r *refVoice) setSpeaker(id int) {
	gin := r.h.Gin
	r.g = r.w["emb_g.weight"][id*gin : (id+1)*gin]
}

// cond is a 1×1 convolution of the speaker embedding: one value per output
// channel, the same at every time.
func (r *refVoice) cond(name string) []float64 {
	w, b := r.w[name+".weight"], r.w[name+".bias"]
	out := make([]float64, len(b))
	for o := range out {
		out[o] = b[o]
		for i, gv := range r.g {
			out[o] += w[o*len(r.g)+i] * gv
		}
	}
	return out
}

// addCond adds a per-channel vector at every time.
func addCond(x mat, v []float64) mat {
	for c := range x {
		for t := range x[c] {
			x[c][t] += v[c]
		}
	}
	return x
}

func newRefVoice(v *models.PiperVoice) *refVoice {
	r := &refVoice{h: v.HParams, w: map[string][]float64{}, s: map[string][]int64{}}
	for name, t := range v.Weights {
		f, err := t.Floats()
		if err != nil {
			panic(err)
		}
		d := make([]float64, len(f))
		for i, x := range f {
			d[i] = float64(x)
		}
		r.w[name], r.s[name] = d, t.Dims
	}
	return r
}

type mat [][]float64

func newMat(c, t int) mat {
	m := make(mat, c)
	for i := range m {
		m[i] = make([]float64, t)
	}
	return m
}

func (m mat) T() int { return len(m[0]) }

// conv1d is torch's Conv1d: weight [out][in/groups][k], stride 1.
func (r *refVoice) conv1d(name string, x mat, dilation, pad, groups int) mat {
	w, s := r.w[name+".weight"], r.s[name+".weight"]
	out, inG, k := int(s[0]), int(s[1]), int(s[2])
	T := x.T() + 2*pad - dilation*(k-1)
	y := newMat(out, T)
	b := r.w[name+".bias"]
	outG := out / groups
	for o := range out {
		g := o / outG
		for t := range T {
			sum := 0.0
			if b != nil {
				sum = b[o]
			}
			for i := range inG {
				xi := x[g*inG+i]
				for j := range k {
					p := t + j*dilation - pad
					if p >= 0 && p < len(xi) {
						sum += w[(o*inG+i)*k+j] * xi[p]
					}
				}
			}
			y[o][t] = sum
		}
	}
	return y
}

// convTranspose1d is torch's ConvTranspose1d: weight [in][out][k].
func (r *refVoice) convTranspose1d(name string, x mat, stride, pad int) mat {
	w, s := r.w[name+".weight"], r.s[name+".weight"]
	in, out, k := int(s[0]), int(s[1]), int(s[2])
	T := (x.T()-1)*stride - 2*pad + k
	y := newMat(out, T)
	b := r.w[name+".bias"]
	for o := range out {
		for t := range T {
			y[o][t] = b[o]
		}
	}
	for i := range in {
		for t, v := range x[i] {
			for o := range out {
				for j := range k {
					p := t*stride + j - pad
					if p >= 0 && p < T {
						y[o][p] += v * w[(i*out+o)*k+j]
					}
				}
			}
		}
	}
	return y
}

// layerNorm normalizes over channels at each time, eps 1e-5.
func (r *refVoice) layerNorm(name string, x mat) mat {
	g, b := r.w[name+".gamma"], r.w[name+".beta"]
	y := newMat(len(x), x.T())
	for t := range x.T() {
		mean, v := 0.0, 0.0
		for c := range x {
			mean += x[c][t]
		}
		mean /= float64(len(x))
		for c := range x {
			v += (x[c][t] - mean) * (x[c][t] - mean)
		}
		v /= float64(len(x))
		for c := range x {
			y[c][t] = (x[c][t]-mean)/math.Sqrt(v+1e-5)*g[c] + b[c]
		}
	}
	return y
}

func add(a, b mat) mat {
	y := newMat(len(a), a.T())
	for c := range a {
		for t := range a[c] {
			y[c][t] = a[c][t] + b[c][t]
		}
	}
	return y
}

func apply(x mat, f func(float64) float64) mat {
	y := newMat(len(x), x.T())
	for c := range x {
		for t, v := range x[c] {
			y[c][t] = f(v)
		}
	}
	return y
}

func leaky(slope float64) func(float64) float64 {
	return func(v float64) float64 {
		if v < 0 {
			return v * slope
		}
		return v
	}
}

func gelu(v float64) float64 { return 0.5 * v * (1 + math.Erf(v/math.Sqrt2)) }

// attention is MultiHeadAttention with relative positions (window w,
// heads sharing the embeddings).
func (r *refVoice) attention(p string, x mat) mat {
	q, k, v := r.conv1d(p+".conv_q", x, 1, 0, 1), r.conv1d(p+".conv_k", x, 1, 0, 1), r.conv1d(p+".conv_v", x, 1, 0, 1)
	H, T, heads, win := len(x), x.T(), r.h.Heads, r.h.Window
	dk := H / heads
	ek, ev := r.w[p+".emb_rel_k"], r.w[p+".emb_rel_v"]
	out := newMat(H, T)
	scale := 1 / math.Sqrt(float64(dk))
	for h := range heads {
		for i := range T {
			scores := make([]float64, T)
			mx := math.Inf(-1)
			for j := range T {
				s := 0.0
				for c := range dk {
					s += q[h*dk+c][i] * scale * k[h*dk+c][j]
				}
				if d := j - i; d >= -win && d <= win {
					for c := range dk {
						s += q[h*dk+c][i] * scale * ek[(d+win)*dk+c]
					}
				}
				scores[j] = s
				mx = math.Max(mx, s)
			}
			sum := 0.0
			for j := range scores {
				scores[j] = math.Exp(scores[j] - mx)
				sum += scores[j]
			}
			for j := range scores {
				scores[j] /= sum
			}
			for c := range dk {
				o := 0.0
				for j := range T {
					o += scores[j] * v[h*dk+c][j]
					if d := j - i; d >= -win && d <= win {
						o += scores[j] * ev[(d+win)*dk+c]
					}
				}
				out[h*dk+c][i] = o
			}
		}
	}
	return r.conv1d(p+".conv_o", out, 1, 0, 1)
}

// encode is the text encoder: the encoder's output (for the duration
// predictor) and the prior's means and log-scales per phoneme.
func (r *refVoice) encode(ids []int64) (x, m, logs mat) {
	H := r.h.Hidden
	emb := r.w["enc_p.emb.weight"]
	x = newMat(H, len(ids))
	for t, id := range ids {
		for c := range H {
			x[c][t] = emb[int(id)*H+c] * math.Sqrt(float64(H))
		}
	}
	for l := range r.h.Layers {
		n := strconv.Itoa(l)
		p := "enc_p.encoder."
		x = r.layerNorm(p+"norm_layers_1."+n, add(x, r.attention(p+"attn_layers."+n, x)))
		k := r.h.FFNKernel
		y := r.conv1d(p+"ffn_layers."+n+".conv_1", x, 1, (k-1)/2, 1) // Piper pads (k−1)/2 left, k/2 right; equal for odd k
		y = apply(y, func(v float64) float64 { return math.Max(v, 0) })
		y = r.conv1d(p+"ffn_layers."+n+".conv_2", y, 1, (k-1)/2, 1)
		x = r.layerNorm(p+"norm_layers_2."+n, add(x, y))
	}
	stats := r.conv1d("enc_p.proj", x, 1, 0, 1)
	return x, stats[:r.h.Inter], stats[r.h.Inter:]
}

// dds is the dilated depth-separable convolution stack (g added first).
func (r *refVoice) dds(p string, x, g mat) mat {
	if g != nil {
		x = add(x, g)
	}
	for i := range r.h.DPLayers {
		n := strconv.Itoa(i)
		d := int(math.Pow(3, float64(i)))
		y := r.conv1d(p+".convs_sep."+n, x, d, d, len(x))
		y = apply(r.layerNorm(p+".norms_1."+n, y), gelu)
		y = r.conv1d(p+".convs_1x1."+n, y, 1, 0, 1)
		y = apply(r.layerNorm(p+".norms_2."+n, y), gelu)
		x = add(x, y)
	}
	return x
}

// splineConsts are Piper's rational quadratic spline settings.
const (
	splineTail   = 5.0
	splineMinBin = 1e-3
	splineMinDer = 1e-3
)

// splineKnots returns the knots of a spline from its unnormalized widths,
// heights and inner derivatives.
func splineKnots(uw, uh, ud []float64) (cw, ch, d []float64) {
	edges := func(u []float64) []float64 {
		K := len(u)
		mx := math.Inf(-1)
		for _, v := range u {
			mx = math.Max(mx, v)
		}
		sum := 0.0
		p := make([]float64, K)
		for i, v := range u {
			p[i] = math.Exp(v - mx)
			sum += p[i]
		}
		c := make([]float64, K+1)
		acc := 0.0
		for i := range K {
			acc += splineMinBin + (1-splineMinBin*float64(K))*p[i]/sum
			c[i+1] = 2*splineTail*acc - splineTail
		}
		c[0], c[K] = -splineTail, splineTail
		return c
	}
	cw, ch = edges(uw), edges(uh)
	end := math.Log(math.Exp(1-splineMinDer) - 1)
	d = make([]float64, len(ud)+2)
	for i := range d {
		u := end
		if i > 0 && i <= len(ud) {
			u = ud[i-1]
		}
		d[i] = splineMinDer + math.Log1p(math.Exp(u)) // softplus
	}
	return cw, ch, d
}

// bin is searchsorted as Piper's transforms do it: 1e-6 added to the last
// edge, the count of edges at or below x, minus one.
func bin(edges []float64, x float64) int {
	n := 0
	for i, e := range edges {
		if i == len(edges)-1 {
			e += 1e-6
		}
		if x >= e {
			n++
		}
	}
	return min(max(n-1, 0), len(edges)-2)
}

// splineInverse is the inverse rational quadratic spline with linear
// (identity) tails outside ±5.
func splineInverse(x float64, uw, uh, ud []float64) float64 {
	if x < -splineTail || x > splineTail {
		return x
	}
	cw, ch, d := splineKnots(uw, uh, ud)
	k := bin(ch, x)
	w, h := cw[k+1]-cw[k], ch[k+1]-ch[k]
	delta := h / w
	dk, dk1 := d[k], d[k+1]
	y := x - ch[k]
	a := y*(dk+dk1-2*delta) + h*(delta-dk)
	b := h*dk - y*(dk+dk1-2*delta)
	c := -delta * y
	root := 2 * c / (-b - math.Sqrt(b*b-4*a*c))
	return root*w + cw[k]
}

// splineForward is the spline itself (for checking the inverse).
func splineForward(x float64, uw, uh, ud []float64) float64 {
	if x < -splineTail || x > splineTail {
		return x
	}
	cw, ch, d := splineKnots(uw, uh, ud)
	k := bin(cw, x)
	w, h := cw[k+1]-cw[k], ch[k+1]-ch[k]
	delta := h / w
	th := (x - cw[k]) / w
	tt := th * (1 - th)
	return ch[k] + h*(delta*th*th+d[k]*tt)/(delta+(d[k]+d[k+1]-2*delta)*tt)
}

// durations runs the stochastic duration predictor backwards from noise
// (2×T, already scaled by noise_w) and returns the frames of each phoneme.
func (r *refVoice) durations(x mat, noise mat, lengthScale float64) []int {
	H := float64(r.h.Hidden)
	h := r.conv1d("dp.pre", x, 1, 0, 1)
	if r.g != nil {
		h = addCond(h, r.cond("dp.cond"))
	}
	h = r.dds("dp.convs", h, nil)
	h = r.conv1d("dp.proj", h, 1, 0, 1)
	z := [][]float64{append([]float64(nil), noise[0]...), append([]float64(nil), noise[1]...)}
	flip := func() { z[0], z[1] = z[1], z[0] }
	for _, f := range []int{7, 5, 3} { // Flip, ConvFlow 7, Flip, ConvFlow 5, Flip, ConvFlow 3, Flip
		flip()
		p := "dp.flows." + strconv.Itoa(f)
		hh := r.conv1d(p+".pre", mat{z[0]}, 1, 0, 1)
		hh = r.dds(p+".convs", hh, h)
		hh = r.conv1d(p+".proj", hh, 1, 0, 1)
		K := r.h.DPBins
		for t := range z[1] {
			uw, uh, ud := make([]float64, K), make([]float64, K), make([]float64, K-1)
			for i := range K {
				uw[i] = hh[i][t] / math.Sqrt(H)
				uh[i] = hh[K+i][t] / math.Sqrt(H)
			}
			for i := range K - 1 {
				ud[i] = hh[2*K+i][t]
			}
			z[1][t] = splineInverse(z[1][t], uw, uh, ud)
		}
	}
	flip()
	m, logs := r.w["dp.flows.0.m"], r.w["dp.flows.0.logs"]
	frames := make([]int, len(z[0]))
	for t := range z[0] {
		logw := (z[0][t] - m[0]) * math.Exp(-logs[0])
		frames[t] = int(math.Ceil(math.Exp(logw) * lengthScale))
	}
	return frames
}

// wn is the WaveNet of a coupling layer (no speaker conditioning).
func (r *refVoice) wn(p string, x mat) mat {
	H := r.h.Hidden
	var out mat
	var gc []float64
	if r.g != nil {
		gc = r.cond(p + ".cond_layer")
	}
	for i := range r.h.WNLayers {
		n := strconv.Itoa(i)
		a := r.conv1d(p+".in_layers."+n, x, 1, (r.h.WNKernel-1)/2, 1)
		if gc != nil {
			a = addCond(a, gc[2*H*i:2*H*(i+1)])
		}
		acts := newMat(H, x.T())
		for c := range H {
			for t := range acts[c] {
				acts[c][t] = math.Tanh(a[c][t]) / (1 + math.Exp(-a[H+c][t]))
			}
		}
		rs := r.conv1d(p+".res_skip_layers."+n, acts, 1, 0, 1)
		skip := rs
		if i < r.h.WNLayers-1 {
			x = add(x, rs[:H])
			skip = rs[H:]
		}
		if out == nil {
			out = skip
		} else {
			out = add(out, skip)
		}
	}
	return out
}

// flowReverse runs the coupling flows backwards.
func (r *refVoice) flowReverse(z mat) mat {
	half := r.h.Inter / 2
	for f := r.h.Flows - 1; f >= 0; f-- {
		for i, j := 0, len(z)-1; i < j; i, j = i+1, j-1 { // Flip
			z[i], z[j] = z[j], z[i]
		}
		p := "flow.flows." + strconv.Itoa(2*f)
		h := r.conv1d(p+".pre", z[:half], 1, 0, 1)
		m := r.conv1d(p+".post", r.wn(p+".enc", h), 1, 0, 1)
		for c := range half {
			for t := range z[half+c] {
				z[half+c][t] -= m[c][t]
			}
		}
	}
	return z
}

// decode is the HiFi-GAN generator.
func (r *refVoice) decode(z mat) []float64 {
	x := r.conv1d("dec.conv_pre", z, 1, 3, 1)
	if r.g != nil {
		x = addCond(x, r.cond("dec.cond"))
	}
	nk := len(r.h.ResblockKernels)
	for i, rate := range r.h.UpsampleRates {
		x = apply(x, leaky(0.1))
		k := r.h.UpsampleKernels[i]
		x = r.convTranspose1d("dec.ups."+strconv.Itoa(i), x, rate, (k-rate)/2)
		var sum mat
		for j, rk := range r.h.ResblockKernels {
			p := "dec.resblocks." + strconv.Itoa(i*nk+j) + "."
			y := x
			for m, d := range r.h.ResblockDilation[j] {
				n := strconv.Itoa(m)
				if r.h.ResblockType == "1" {
					t := r.conv1d(p+"convs1."+n, apply(y, leaky(0.1)), d, (rk*d-d)/2, 1)
					t = r.conv1d(p+"convs2."+n, apply(t, leaky(0.1)), 1, (rk-1)/2, 1)
					y = add(t, y)
				} else {
					y = add(r.conv1d(p+"convs."+n, apply(y, leaky(0.1)), d, (rk*d-d)/2, 1), y)
				}
			}
			if sum == nil {
				sum = y
			} else {
				sum = add(sum, y)
			}
		}
		x = apply(sum, func(v float64) float64 { return v / float64(nk) })
	}
	x = apply(x, leaky(0.01))
	o := r.conv1d("dec.conv_post", x, 1, 3, 1)
	out := o[0]
	for i, v := range out {
		out[i] = math.Tanh(v)
	}
	return out
}

// synthesize speaks one sentence of phoneme ids: the durations from
// durNoise (2×T, scaled by noise_w), the prior sampled with priorNoise
// (inter × frames, scaled by noise_scale; frames as the durations give).
func (r *refVoice) synthesize(ids []int64, durNoise mat, priorNoise func(frames int) mat, lengthScale float64) ([]float64, []int) {
	x, m, logs := r.encode(ids)
	frames := r.durations(x, durNoise, lengthScale)
	total := 0
	for _, f := range frames {
		total += f
	}
	total = max(total, 1)
	eps := priorNoise(total)
	z := newMat(r.h.Inter, total)
	t := 0
	for ph, f := range frames {
		for range f {
			for c := range r.h.Inter {
				z[c][t] = m[c][ph] + eps[c][t]*math.Exp(logs[c][ph])
			}
			t++
		}
	}
	return r.decode(r.flowReverse(z)), frames
}
