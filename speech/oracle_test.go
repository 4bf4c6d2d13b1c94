package speech

// A plain-Go float64 reference of Whisper (the "oracle"): the mel front end
// with a direct DFT, the encoder and the decoder, written from the model's
// definition without ggml. The ggml graphs are checked against it.

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/x448/float16"

	"github.com/owlengine/owl/models"
)

// perturb names a deliberate mistake the oracle can make, to prove that the
// comparison tolerances catch such mistakes.
type perturb int

const (
	exact       perturb = iota
	lnNoBias            // layer norms without their bias
	swapHeads           // attention heads 0 and 1 exchanged in the output
	noQueryBias         // the attention query bias left out
	posOffByOne         // decoder positions shifted by one
)

func (p perturb) String() string {
	return [...]string{"exact", "layer norm without bias", "swapped heads", "missing query bias", "off-by-one position"}[p]
}

type refModel struct {
	hp models.WhisperHParams
	t  map[string][]float64
	p  perturb
}

// loadRef reads every tensor of a whisper.cpp file (f32 or f16) as float64.
func loadRef(t testing.TB, path string) *refModel {
	t.Helper()
	f, err := models.ReadWhisper(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := &refModel{hp: f.HParams, t: map[string][]float64{}}
	for _, ti := range f.Tensors {
		raw := data[ti.Offset : ti.Offset+int64(ti.Bytes)]
		var v []float64
		switch ti.Type {
		case models.TypeF32:
			v = make([]float64, len(raw)/4)
			for i := range v {
				v[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
			}
		case models.TypeF16:
			v = make([]float64, len(raw)/2)
			for i := range v {
				v[i] = float64(float16.Frombits(binary.LittleEndian.Uint16(raw[2*i:])).Float32())
			}
		default:
			t.Fatalf("oracle reads f32 and f16 tensors, not %s", ti.Type)
		}
		r.t[ti.Name] = v
	}
	return r
}

func (r *refModel) w(name string) []float64 {
	v, ok := r.t[name]
	if !ok {
		panic("oracle: no tensor " + name)
	}
	return v
}

// parallel runs f(i) for i in [0, n) on all CPUs.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	workers := runtime.NumCPU()
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				f(i)
			}
		})
	}
	wg.Wait()
}

// linear computes y[t] = W x[t] + b for rows x[t] (W stored out×in, b may be nil).
func linear(x [][]float64, w, b []float64, out int) [][]float64 {
	in := len(x[0])
	y := make([][]float64, len(x))
	parallel(len(x), func(t int) {
		row := make([]float64, out)
		xt := x[t]
		for o := range out {
			wo := w[o*in : (o+1)*in]
			s := 0.0
			for i, v := range xt {
				s += wo[i] * v
			}
			if b != nil {
				s += b[o]
			}
			row[o] = s
		}
		y[t] = row
	})
	return y
}

func (r *refModel) layerNorm(x [][]float64, w, b []float64) [][]float64 {
	y := make([][]float64, len(x))
	for t, xt := range x {
		mean, vr := 0.0, 0.0
		for _, v := range xt {
			mean += v
		}
		mean /= float64(len(xt))
		for _, v := range xt {
			vr += (v - mean) * (v - mean)
		}
		vr /= float64(len(xt))
		inv := 1 / math.Sqrt(vr+1e-5)
		row := make([]float64, len(xt))
		for i, v := range xt {
			row[i] = (v-mean)*inv*w[i] + b[i]
			if r.p == lnNoBias {
				row[i] -= b[i]
			}
		}
		y[t] = row
	}
	return y
}

func gelu(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }

func add(a, b [][]float64) [][]float64 {
	y := make([][]float64, len(a))
	for t := range a {
		y[t] = make([]float64, len(a[t]))
		for i := range a[t] {
			y[t][i] = a[t][i] + b[t][i]
		}
	}
	return y
}

// attention is multi-head scaled dot-product attention of queries q over
// keys k and values v (rows are positions); causal masks later keys.
func (r *refModel) attention(q, k, v [][]float64, heads int, causalFrom int) [][]float64 {
	n, d := len(q[0]), len(q[0])/heads
	out := make([][]float64, len(q))
	scale := 1 / math.Sqrt(float64(d))
	parallel(len(q), func(i int) {
		row := make([]float64, n)
		scores := make([]float64, len(k))
		for h := range heads {
			nk := len(k)
			if causalFrom >= 0 {
				nk = causalFrom + i + 1
			}
			mx := math.Inf(-1)
			for j := range nk {
				s := 0.0
				for e := range d {
					s += q[i][h*d+e] * k[j][h*d+e]
				}
				scores[j] = s * scale
				mx = math.Max(mx, scores[j])
			}
			sum := 0.0
			for j := range nk {
				scores[j] = math.Exp(scores[j] - mx)
				sum += scores[j]
			}
			oh := h
			if r.p == swapHeads && heads > 1 && h < 2 {
				oh = 1 - h
			}
			for e := range d {
				s := 0.0
				for j := range nk {
					s += scores[j] * v[j][h*d+e]
				}
				row[oh*d+e] = s / sum
			}
		}
		out[i] = row
	})
	return out
}

// attnBlock is x + out(attention(ln(x) projected, kv source)).
func (r *refModel) attnBlock(x, src [][]float64, p string, heads int, causalFrom int, cross bool) [][]float64 {
	n := len(x[0])
	y := r.layerNorm(x, r.w(p+"_ln.weight"), r.w(p+"_ln.bias"))
	qb := r.w(p + ".query.bias")
	if r.p == noQueryBias {
		qb = nil
	}
	q := linear(y, r.w(p+".query.weight"), qb, n)
	kvIn := y
	if cross {
		kvIn = src
	}
	k := linear(kvIn, r.w(p+".key.weight"), nil, n)
	v := linear(kvIn, r.w(p+".value.weight"), r.w(p+".value.bias"), n)
	a := r.attention(q, k, v, heads, causalFrom)
	return add(x, linear(a, r.w(p+".out.weight"), r.w(p+".out.bias"), n))
}

func (r *refModel) mlpBlock(x [][]float64, p string) [][]float64 {
	n := len(x[0])
	y := r.layerNorm(x, r.w(p+"mlp_ln.weight"), r.w(p+"mlp_ln.bias"))
	y = linear(y, r.w(p+"mlp.0.weight"), r.w(p+"mlp.0.bias"), 4*n)
	for _, row := range y {
		for i := range row {
			row[i] = gelu(row[i])
		}
	}
	return add(x, linear(y, r.w(p+"mlp.2.weight"), r.w(p+"mlp.2.bias"), n))
}

// conv1d is a kernel-3, padding-1 convolution of x (channels × frames) with
// weights stored out × in × 3; it returns positions × out after GELU.
func conv1d(x [][]float64, w, b []float64, out, stride int) [][]float64 {
	in, frames := len(x), len(x[0])
	n := (frames + 2 - 3) / stride
	n++
	y := make([][]float64, n)
	parallel(n, func(t int) {
		row := make([]float64, out)
		for o := range out {
			s := b[o]
			for c := range in {
				for k := range 3 {
					src := t*stride + k - 1
					if src >= 0 && src < frames {
						s += w[(o*in+c)*3+k] * x[c][src]
					}
				}
			}
			row[o] = gelu(s)
		}
		y[t] = row
	})
	return y
}

// encode runs the encoder on mel (n_mels rows of 3000 frames) and returns
// the encoder output (positions × state).
func (r *refModel) encode(mel [][]float64) [][]float64 {
	h := r.hp
	x := conv1d(mel, r.w("encoder.conv1.weight"), r.w("encoder.conv1.bias"), h.NAudioState, 1)
	xc := make([][]float64, h.NAudioState) // back to channels × frames
	for c := range xc {
		xc[c] = make([]float64, len(x))
		for t := range x {
			xc[c][t] = x[t][c]
		}
	}
	x = conv1d(xc, r.w("encoder.conv2.weight"), r.w("encoder.conv2.bias"), h.NAudioState, 2)
	pos := r.w("encoder.positional_embedding")
	for t := range x {
		for i := range x[t] {
			x[t][i] += pos[t*h.NAudioState+i]
		}
	}
	for l := range h.NAudioLayer {
		p := fmt.Sprintf("encoder.blocks.%d.", l)
		x = r.attnBlock(x, nil, p+"attn", h.NAudioHead, -1, false)
		x = r.mlpBlock(x, p)
	}
	return r.layerNorm(x, r.w("encoder.ln_post.weight"), r.w("encoder.ln_post.bias"))
}

// decode runs the decoder on tokens against the encoder output and returns
// the logits after the last token.
func (r *refModel) decode(enc [][]float64, tokens []int32) []float64 {
	h := r.hp
	n := h.NTextState
	emb, pos := r.w("decoder.token_embedding.weight"), r.w("decoder.positional_embedding")
	x := make([][]float64, len(tokens))
	for i, tok := range tokens {
		p := i
		if r.p == posOffByOne {
			p++
		}
		x[i] = make([]float64, n)
		for e := range n {
			x[i][e] = emb[int(tok)*n+e] + pos[p*n+e]
		}
	}
	for l := range h.NTextLayer {
		p := fmt.Sprintf("decoder.blocks.%d.", l)
		x = r.attnBlock(x, nil, p+"attn", h.NTextHead, 0, false)
		x = r.attnBlock(x, enc, p+"cross_attn", h.NTextHead, -1, true)
		x = r.mlpBlock(x, p)
	}
	x = r.layerNorm(x, r.w("decoder.ln.weight"), r.w("decoder.ln.bias"))
	last := x[len(x)-1]
	logits := make([]float64, h.NVocab)
	parallel(h.NVocab, func(v int) {
		s := 0.0
		for e := range n {
			s += emb[v*n+e] * last[e]
		}
		logits[v] = s
	})
	return logits
}

// refLogMel is the log-mel spectrogram by the definition: reflect padding,
// periodic Hann window, a direct DFT per frame, the mel filters, log10 with
// a floor of max-8, (x+4)/4.
func refLogMel(samples []float32, filters []float32, nMels int) [][]float64 {
	const pad = nFFT / 2
	padded := make([]float64, pad+len(samples)+windowSamps+pad)
	for i, s := range samples {
		padded[pad+i] = float64(s)
	}
	for i := 0; i < pad && i+1 < len(samples); i++ {
		padded[pad-1-i] = float64(samples[i+1])
	}
	nFrames := (len(padded) - nFFT) / hopLength
	out := make([][]float64, nMels)
	for m := range out {
		out[m] = make([]float64, nFrames)
	}
	var cos, sin [nFFT]float64
	for i := range nFFT {
		cos[i] = math.Cos(2 * math.Pi * float64(i) / nFFT)
		sin[i] = math.Sin(2 * math.Pi * float64(i) / nFFT)
	}
	parallel(nFrames, func(t int) {
		var frame [nFFT]float64
		var power [nBins]float64
		for i := range frame {
			frame[i] = padded[t*hopLength+i] * 0.5 * (1 - cos[i])
		}
		for k := range nBins {
			re, im := 0.0, 0.0
			for i, v := range frame {
				j := (k * i) % nFFT
				re += v * cos[j]
				im -= v * sin[j]
			}
			power[k] = re*re + im*im
		}
		for m := range nMels {
			s := 0.0
			for k := range nBins {
				s += power[k] * float64(filters[m*nBins+k])
			}
			out[m][t] = math.Log10(math.Max(s, 1e-10))
		}
	})
	mx := math.Inf(-1)
	for _, row := range out {
		for _, v := range row {
			mx = math.Max(mx, v)
		}
	}
	for _, row := range out {
		for i, v := range row {
			row[i] = (math.Max(v, mx-8) + 4) / 4
		}
	}
	return out
}
