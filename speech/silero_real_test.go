package speech

import (
	"bufio"
	"context"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/models/testmodel"
)

// whisperCppProbs reads the probabilities whisper.cpp gives for jfk.wav
// with the real Silero model (testdata/silero-v6.2.0-jfk.txt).
func whisperCppProbs(t *testing.T) []float64 {
	f, err := os.Open("testdata/silero-v6.2.0-jfk.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(line, 64)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// The real trained Silero VAD v6.2.0, in whisper.cpp's file (with its
// scalar bias), on jfk.wav: the probabilities whisper.cpp computes, and
// the four speech segments whisper.cpp's rules find in them.
func TestSileroRealModel(t *testing.T) {
	path := testmodel.RealFile(t, "whispercpp/for-tests-silero-v6.2.0-ggml.bin")
	s, err := LoadSilero(context.Background(), path, LoadOptions{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	jfk, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	samples, err := audio.Load(jfk, audio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	probs, err := s.Probabilities(samples)
	if err != nil {
		t.Fatal(err)
	}
	want := whisperCppProbs(t)
	if len(probs) != len(want) || len(want) != 344 {
		t.Fatalf("%d probabilities, whisper.cpp gives %d (344)", len(probs), len(want))
	}
	// whisper.cpp rounds the convolutions' inputs to f16 (its im2col is
	// f16) where owl keeps f32, and the LSTM carries the difference from
	// chunk to chunk: 2^-11 relative per layer, measured at 0.018 at most
	// (0.0007 on average) over the 344 chunks. Twice that bounds it; a
	// wrong layer, gate order or STFT hop is off by 0.1 and more.
	var worst, sum float64
	worstAt := 0
	for i, p := range probs {
		d := math.Abs(float64(p) - want[i])
		sum += d
		if d > worst {
			worst, worstAt = d, i
		}
	}
	if worst > 0.04 || sum/float64(len(want)) > 0.002 {
		t.Errorf("probabilities differ from whisper.cpp's by %.4f at most (chunk %d: %.4f, want %.4f), %.5f on average", worst, worstAt, probs[worstAt], want[worstAt], sum/float64(len(want)))
	}
	t.Logf("probabilities within %.4f of whisper.cpp's (%.5f on average)", worst, sum/float64(len(want)))

	// whisper.cpp 1.9.3's vad-speech-segments, in seconds.
	segments := [][2]float64{{0.32, 2.27}, {3.27, 4.41}, {5.38, 7.68}, {8.16, 10.62}}
	spans := audio.SpeechSegments(probs, s.ChunkSamples(), len(samples), audio.DefaultVADParams())
	if len(spans) != len(segments) {
		t.Fatalf("segments %v, whisper.cpp finds %v", spans, segments)
	}
	for i, sp := range spans {
		start, end := float64(sp.Start)/SampleRate, float64(sp.End)/SampleRate
		if math.Abs(start-segments[i][0]) > 0.02 || math.Abs(end-segments[i][1]) > 0.02 {
			t.Errorf("segment %d: %.3f–%.3f s, whisper.cpp %.2f–%.2f", i, start, end, segments[i][0], segments[i][1])
		}
	}
}
