package audio

import (
	"math"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

// jfk.mp3 is jfk.wav encoded by LAME (MPEG-2 layer III, 16 kHz, with a
// Xing/LAME tag frame: delay 576, padding 832). Decoded without its tag
// frame, delay and padding it is the WAV again: as long, and in step.
func TestRealMP3IsGapless(t *testing.T) {
	mp3Path := testmodel.RealFile(t, "whispercpp/jfk.mp3")
	wavPath, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	mp3, err := Load(mp3Path, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	wav, err := Load(wavPath, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(mp3) != len(wav) {
		t.Fatalf("mp3 decodes to %d samples, the wav has %d", len(mp3), len(wav))
	}
	corr := func(lag int) float64 {
		var xy, xx, yy float64
		for i := range wav {
			j := i + lag
			if j < 0 || j >= len(mp3) {
				continue
			}
			x, y := float64(wav[i]), float64(mp3[j])
			xy, xx, yy = xy+x*y, xx+x*x, yy+y*y
		}
		return xy / math.Sqrt(xx*yy)
	}
	best, at := -1.0, 0
	for lag := -2000; lag <= 2000; lag++ {
		if c := corr(lag); c > best {
			best, at = c, lag
		}
	}
	t.Logf("correlation %.4f at lag %d", best, at)
	if at != 0 || best < 0.95 {
		t.Fatalf("the mp3 is best in step with the wav at lag %d (correlation %.4f), want 0", at, best)
	}
}
