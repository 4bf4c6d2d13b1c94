package tts

import (
	"math"
	"testing"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

// The spline's inverse undoes it, inside the tails and out.
func TestRefSplineInverse(t *testing.T) {
	uw := []float64{0.3, -1, 2, 0.1, 0, 0.5, -0.2, 1, -2, 0.7}
	uh := []float64{-0.5, 0.2, 1.5, -1, 0.3, 0, 0.9, -0.4, 0.1, 2}
	ud := []float64{0.1, -0.3, 1, 2, -1, 0.5, 0, -2, 0.4}
	for _, x := range []float64{-7, -5, -4.99, -3.2, -0.5, 0, 0.01, 1.7, 4.2, 4.9999, 5, 6} {
		y := splineForward(x, uw, uh, ud)
		if back := splineInverse(y, uw, uh, ud); math.Abs(back-x) > 1e-9 {
			t.Errorf("x %v → %v → %v", x, y, back)
		}
	}
}

func refSmallVoice(t *testing.T) *refVoice {
	t.Helper()
	m, err := models.ParseONNX(testmodel.EncodeONNX(testmodel.PiperONNX(testmodel.PiperSmall())))
	if err != nil {
		t.Fatal(err)
	}
	v, err := models.FindPiperWeights(&m.Graph)
	if err != nil {
		t.Fatal(err)
	}
	return newRefVoice(v)
}

// seededMat is a rows×cols matrix of normal samples times scale.
func seededMat(rows, cols int, seed uint64, scale float64) mat {
	m := newMat(rows, cols)
	s := seed
	next := func() float64 {
		s = s*6364136223846793005 + 1442695040888963407
		return (float64(s>>11) + 0.5) / (1 << 53)
	}
	for r := range m {
		for c := range m[r] {
			m[r][c] = scale * math.Sqrt(-2*math.Log(next())) * math.Cos(2*math.Pi*next())
		}
	}
	return m
}

// The reference speaks a sentence: as many samples as its frames times the
// hop, all finite and within (−1, 1); a longer length scale gives more
// frames.
func TestRefSynthesizes(t *testing.T) {
	r := refSmallVoice(t)
	ids := []int64{1, 0, 20, 0, 45, 0, 3, 0, 60, 0, 2}
	noise := seededMat(2, len(ids), 1, 0.8)
	prior := func(n int) mat { return seededMat(r.h.Inter, n, 2, 0.667) }
	audio, frames := r.synthesize(ids, noise, prior, 1)
	total := 0
	for _, f := range frames {
		total += f
	}
	if len(audio) != max(total, 1)*r.h.HopLength() {
		t.Fatalf("%d samples for %d frames", len(audio), total)
	}
	for i, v := range audio {
		if math.IsNaN(v) || math.Abs(v) >= 1 {
			t.Fatalf("sample %d is %v", i, v)
		}
	}
	_, slow := r.synthesize(ids, noise, prior, 2)
	longer := 0
	for i := range frames {
		if slow[i] < frames[i] {
			t.Fatalf("length scale 2 shortened phoneme %d: %d frames, %d at 1", i, slow[i], frames[i])
		}
		longer += slow[i] - frames[i]
	}
	if longer == 0 {
		t.Fatal("length scale 2 lengthened nothing")
	}
	t.Logf("%d phonemes → %d frames → %d samples; frames %v", len(ids), total, len(audio), frames)
}
