package tts

import (
	"context"
	"math"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

func loadSmallPiper(t *testing.T) (*Piper, *refVoice) {
	t.Helper()
	dir := t.TempDir()
	path, err := testmodel.WritePiperVoice(dir, "small", testmodel.PiperSmall())
	if err != nil {
		t.Fatal(err)
	}
	p, err := LoadPiper(context.Background(), path, PiperOptions{Threads: 2, CacheDir: dir + "/cache"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, refSmallVoice(t)
}

// maxRel is max|a−b| / max|b|.
func maxRel(a []float32, b []float64) float64 {
	d, s := 0.0, 0.0
	for i := range b {
		d = math.Max(d, math.Abs(float64(a[i])-b[i]))
		s = math.Max(s, math.Abs(b[i]))
	}
	return d / s
}

// The ggml decoder gives the float64 reference's samples.
func TestPiperDecoder(t *testing.T) {
	p, r := loadSmallPiper(t)
	const frames = 23
	z := seededMat(r.h.Inter, frames, 5, 1)
	flat := make([]float32, frames*r.h.Inter)
	for c := range z {
		for f := range frames {
			flat[f*r.h.Inter+c] = float32(z[c][f])
		}
	}
	got, err := p.Decode(flat, frames)
	if err != nil {
		t.Fatal(err)
	}
	want := r.decode(z)
	if len(got) != len(want) {
		t.Fatalf("%d samples, the reference %d", len(got), len(want))
	}
	e := maxRel(got, want)
	t.Logf("decoder: %d samples, relative error %.2g", len(got), e)
	if e > 1e-4 {
		t.Fatalf("decoder differs from the reference by %.2g", e)
	}
}

// The flows and the decoder together give the reference's samples (the
// flips folded into weights included).
func TestPiperFlow(t *testing.T) {
	p, r := loadSmallPiper(t)
	const frames = 19
	z := seededMat(r.h.Inter, frames, 6, 1)
	flat := make([]float32, frames*r.h.Inter)
	for c := range z {
		for f := range frames {
			flat[f*r.h.Inter+c] = float32(z[c][f])
		}
	}
	got, err := p.FlowDecode(flat, frames)
	if err != nil {
		t.Fatal(err)
	}
	want := r.decode(r.flowReverse(z))
	e := maxRel(got, want)
	t.Logf("flow and decoder: relative error %.2g", e)
	if e > 1e-4 {
		t.Fatalf("flow and decoder differ from the reference by %.2g", e)
	}
}
