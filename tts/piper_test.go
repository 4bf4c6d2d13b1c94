package tts

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/owlengine/owl/models"
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
	got, err := p.flowDecode(flatten32(z), frames, true, nil)
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
	got, err := p.flowDecode(flatten32(z), frames, false, nil)
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

// flatten32 is m channel-major as float32.
func flatten32(m mat) []float32 {
	var out []float32
	for _, r := range m {
		for _, v := range r {
			out = append(out, float32(v))
		}
	}
	return out
}

// The whole voice — text encoder, duration predictor, prior, flows,
// decoder — gives the reference's durations and samples for the same ids
// and noise.
func TestPiperVoiceMatchesReference(t *testing.T) {
	p, r := loadSmallPiper(t)
	ids := []int64{1, 0, 20, 0, 45, 0, 3, 0, 60, 0, 101, 0, 8, 0, 3, 0, 77, 0, 2}
	dur := seededMat(2, len(ids), 11, 0.8)
	prior := func(n int) mat { return seededMat(r.h.Inter, n, 12, 0.667) }
	for _, scale := range []float64{1, 1.7} {
		want, wantFrames := r.synthesize(ids, dur, prior, scale)
		got, frames, err := p.infer(ids, flatten32(dur), func(n int) []float32 { return flatten32(prior(n)) }, scale, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(frames, wantFrames) {
			t.Fatalf("length scale %v: frames %v, the reference %v", scale, frames, wantFrames)
		}
		e := maxRel(got, want)
		t.Logf("length scale %v: %d frames, %d samples, relative error %.2g", scale, len(frames), len(got), e)
		if e > 1e-4 {
			t.Fatalf("the voice differs from the reference by %.2g", e)
		}
	}
}

// Text is phonemized and spoken sentence by sentence; a sentence none of
// whose phonemes the voice has is an error saying so, not silence.
func TestPiperSynthesize(t *testing.T) {
	p, _ := loadSmallPiper(t)
	var got []Audio
	err := p.Synthesize(context.Background(), "Hello there. How are you?", Options{}, func(a Audio) error { got = append(got, a); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].Sentence != "How are you?" || len(got[0].Samples) < p.SampleRate()/5 {
		t.Fatalf("%d sentences: %+v", len(got), got)
	}
	for _, a := range got {
		peak := float32(0)
		for _, v := range a.Samples {
			peak = max(peak, v, -v)
		}
		if peak < 0.99 || peak > 1 { // normalized to full scale, as Piper's runtime does
			t.Fatalf("%q: peak %v", a.Sentence, peak)
		}
	}
	p.cfg.PhonemeIDMap = map[string][]int{"_": {0}, "^": {1}, "$": {2}}
	err = p.Synthesize(context.Background(), "Hello.", Options{}, func(Audio) error { return nil })
	if !errors.Is(err, ErrBadOption) || !strings.Contains(err.Error(), "none of the phonemes") {
		t.Fatalf("a voice without the text's phonemes: %v", err)
	}
}

// A multi-speaker voice: each speaker's embedding conditions the duration
// predictor, the flows and the decoder as in the reference, and speakers
// differ.
func TestPiperMultiSpeaker(t *testing.T) {
	dir := t.TempDir()
	c := testmodel.PiperMulti()
	path, err := testmodel.WritePiperVoice(dir, "multi", c)
	if err != nil {
		t.Fatal(err)
	}
	p, err := LoadPiper(context.Background(), path, PiperOptions{Threads: 2, CacheDir: dir + "/cache"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	m, err := models.ParseONNX(testmodel.EncodeONNX(testmodel.PiperONNX(c)))
	if err != nil {
		t.Fatal(err)
	}
	v, err := models.FindPiperWeights(&m.Graph)
	if err != nil {
		t.Fatal(err)
	}
	r := newRefVoice(v)
	ids := []int64{1, 0, 20, 0, 45, 0, 3, 0, 60, 0, 2}
	dur := seededMat(2, len(ids), 21, 0.8)
	prior := func(n int) mat { return seededMat(r.h.Inter, n, 22, 0.667) }
	var outs [][]float32
	for spk := range c.HParams.Speakers {
		r.setSpeaker(spk)
		want, wantFrames := r.synthesize(ids, dur, prior, 1)
		g, err := p.speaker(spk)
		if err != nil {
			t.Fatal(err)
		}
		got, frames, err := p.infer(ids, flatten32(dur), func(n int) []float32 { return flatten32(prior(n)) }, 1, g)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(frames, wantFrames) {
			t.Fatalf("speaker %d: frames %v, the reference %v", spk, frames, wantFrames)
		}
		if e := maxRel(got, want); e > 1e-4 {
			t.Fatalf("speaker %d differs from the reference by %.2g", spk, e)
		}
		outs = append(outs, got)
	}
	if len(outs[0]) == len(outs[1]) && maxRel(outs[0], widen64(outs[1])) < 1e-3 {
		t.Fatal("speakers 0 and 1 sound the same")
	}
	if _, err := p.speaker(3); !errors.Is(err, ErrBadOption) {
		t.Fatalf("speaker 3 of 3: %v", err)
	}
}

func widen64(a []float32) []float64 {
	out := make([]float64, len(a))
	for i, v := range a {
		out[i] = float64(v)
	}
	return out
}

// Decoding in windows with context equals decoding the whole.
func TestPiperChunkedDecoding(t *testing.T) {
	p, r := loadSmallPiper(t)
	const frames = 700
	z := flatten32(seededMat(r.h.Inter, frames, 31, 1))
	whole, err := p.flowDecode(z, frames, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.flowDecodeChunked(context.Background(), z, frames, nil, decodeChunk, decodeContext)
	if err != nil {
		t.Fatal(err)
	}
	e := maxRel(got, widen64(whole))
	t.Logf("windows of %d frames with %d of context: relative difference %.2g", decodeChunk, decodeContext, e)
	if len(got) != len(whole) || e > 1e-5 {
		t.Fatalf("%d samples, the whole decoding %d; difference %.2g", len(got), len(whole), e)
	}
	// Too little context shows at the windows' edges.
	short, _ := p.flowDecodeChunked(context.Background(), z, frames, nil, decodeChunk, 2)
	if maxRel(short, widen64(whole)) < 1e-3 {
		t.Fatal("two frames of context made no difference: the test cannot see the edges")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.flowDecodeChunked(ctx, z, frames, nil, decodeChunk, decodeContext); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}
