package speech

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/x448/float16"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

// refSilero is a plain-Go float64 Silero: the same network as silero.go,
// written from its definition.
type refSilero struct {
	f         *models.SileroFile
	t         map[string][]float64
	h, c      []float64
	swapGates bool // a deliberate mistake: input and forget gates exchanged
}

func loadRefSilero(t *testing.T, path string) *refSilero {
	t.Helper()
	f, err := models.ReadSilero(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := &refSilero{f: f, t: map[string][]float64{}, h: make([]float64, f.LSTMHidden), c: make([]float64, f.LSTMHidden)}
	for _, ti := range f.Tensors {
		raw := data[ti.Offset : ti.Offset+int64(ti.Bytes)]
		var v []float64
		switch ti.Type {
		case models.TypeF32:
			for i := 0; i < len(raw); i += 4 {
				v = append(v, float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[i:]))))
			}
		case models.TypeF16:
			for i := 0; i < len(raw); i += 2 {
				v = append(v, float64(float16.Frombits(binary.LittleEndian.Uint16(raw[i:])).Float32()))
			}
		}
		r.t[ti.Name] = v
	}
	return r
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// chunk returns the speech probability of one 512-sample chunk.
func (r *refSilero) chunk(samples []float32) float64 {
	f := r.f
	x := reflectPad(samples, sileroPad)
	bins := f.Encoder[0].In
	basis := r.t[models.SileroSTFT]
	nFrames := (len(x)-256)/sileroHop + 1
	// mag[c][t]
	cur := make([][]float64, bins)
	for k := range bins {
		cur[k] = make([]float64, nFrames)
		for t := range nFrames {
			re, im := 0.0, 0.0
			for j := range 256 {
				v := float64(x[t*sileroHop+j])
				re += basis[k*256+j] * v
				im += basis[(bins+k)*256+j] * v
			}
			cur[k][t] = math.Sqrt(re*re + im*im)
		}
	}
	for i, conv := range f.Encoder {
		w, b := r.t[models.SileroEncoderWeight(i)], r.t[models.SileroEncoderBias(i)]
		stride, pad := sileroStrides[i], conv.Kernel/2
		n := (len(cur[0])+2*pad-conv.Kernel)/stride + 1
		next := make([][]float64, conv.Out)
		for o := range conv.Out {
			next[o] = make([]float64, n)
			for t := range n {
				s := b[o]
				for ci := range conv.In {
					for k := range conv.Kernel {
						src := t*stride + k - pad
						if src >= 0 && src < len(cur[ci]) {
							s += w[(o*conv.In+ci)*conv.Kernel+k] * cur[ci][src]
						}
					}
				}
				next[o][t] = math.Max(0, s)
			}
		}
		cur = next
	}
	hid := f.LSTMHidden
	wih, whh, bih, bhh := r.t[models.SileroLSTMWIH], r.t[models.SileroLSTMWHH], r.t[models.SileroLSTMBIH], r.t[models.SileroLSTMBHH]
	in := make([]float64, len(cur))
	for i := range cur {
		in[i] = cur[i][0]
	}
	gates := make([]float64, 4*hid)
	for g := range gates {
		s := bih[g] + bhh[g]
		for i, v := range in {
			s += wih[g*len(in)+i] * v
		}
		for i, v := range r.h {
			s += whh[g*hid+i] * v
		}
		gates[g] = s
	}
	for k := range hid {
		i, fg, gg, o := sigmoid(gates[k]), sigmoid(gates[hid+k]), math.Tanh(gates[2*hid+k]), sigmoid(gates[3*hid+k])
		if r.swapGates {
			i, fg = fg, i
		}
		r.c[k] = fg*r.c[k] + i*gg
		r.h[k] = o * math.Tanh(r.c[k])
	}
	s := r.t[models.SileroFinalB][0]
	for k, v := range r.h {
		s += r.t[models.SileroFinalW][k] * math.Max(0, v)
	}
	return sigmoid(s)
}

func TestSileroOracle(t *testing.T) {
	for _, tc := range []struct {
		name string
		f32  bool
		tol  float64
	}{
		// f32 weights: float32 rounding only (measured 5e-8).
		{"f32", true, 1e-6},
		// whisper.cpp's layout, f16 convolutions: ggml rounds the activations
		// that meet them to f16 as well (measured 2e-5 in probability).
		{"f16", false, 2e-4},
	} {
		t.Run(tc.name, func(t *testing.T) { sileroOracle(t, tc.f32, tc.tol) })
	}
}

func sileroOracle(t *testing.T, f32 bool, tol float64) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ggml-silero-v5.1.2.bin")
	c := testmodel.SileroV5()
	c.F32 = f32
	if err := testmodel.WriteSileroFile(path, c); err != nil {
		t.Fatal(err)
	}
	vad, err := LoadSilero(context.Background(), path, LoadOptions{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer vad.Close()
	ref := loadRefSilero(t, path)
	samples := testAudio()[:70*512+100] // 71 chunks: three graphs, a partial last chunk
	// In two calls, to check the state carries over.
	a, err := vad.Probabilities(samples[:40*512])
	if err != nil {
		t.Fatal(err)
	}
	b, err := vad.Probabilities(samples[40*512:])
	if err != nil {
		t.Fatal(err)
	}
	got := append(a, b...)
	if len(got) != 71 {
		t.Fatalf("%d probabilities for 71 chunks", len(got))
	}
	maxErr := 0.0
	for i := range got {
		chunk := make([]float32, 512)
		copy(chunk, samples[i*512:min(len(samples), (i+1)*512)])
		want := ref.chunk(chunk)
		maxErr = math.Max(maxErr, math.Abs(float64(got[i])-want))
	}
	t.Logf("max |ggml - oracle| = %.2g", maxErr)
	if maxErr > tol {
		t.Fatalf("ggml Silero differs from the oracle by %.2g (tolerance %.0g)", maxErr, tol)
	}
	if !f32 {
		return
	}
	// The tolerance catches a mistake in the recurrence.
	wrong := loadRefSilero(t, path)
	wrong.swapGates = true
	wrongErr := 0.0
	for i := range got {
		chunk := make([]float32, 512)
		copy(chunk, samples[i*512:min(len(samples), (i+1)*512)])
		wrongErr = math.Max(wrongErr, math.Abs(float64(got[i])-wrong.chunk(chunk)))
	}
	if wrongErr < 100*tol {
		t.Fatalf("an oracle with swapped gates stays within %.2g of ggml", wrongErr)
	}
	// Reset starts the stream over: the first chunk again gives its first value.
	vad.Reset()
	again, err := vad.Probabilities(samples[:512])
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(again[0]-got[0])) > 1e-6 {
		t.Fatalf("after Reset: %v, first time %v", again[0], got[0])
	}
}
