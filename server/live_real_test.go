package server

import (
	"math"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/testmodel"
)

// The live stream with vad=silero and whisper.cpp's real Silero v6.2.0:
// one final event per segment the model finds in jfk.wav (whisper.cpp's
// 0.32–2.27, 3.27–4.41, 5.38–7.68, 8.16–10.62 s; the last runs to the end
// of the stream, its pause being shorter than the live minimum silence).
func TestLiveTranscriptionRealSilero(t *testing.T) {
	silero := testmodel.RealFile(t, "whispercpp/for-tests-silero-v6.2.0-ggml.bin")
	dir := t.TempDir()
	// The server serves only files inside its folder (a link out of it is
	// refused), so the test's folder gets copies.
	for name, from := range map[string]string{"ggml-micro.en.bin": filepath.Join(modelsDir, "ggml-micro.en.bin"), "ggml-silero-v6.2.0.bin": silero} {
		b, err := os.ReadFile(from)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// An engine of its own: the shared one's metrics know one micro model.
	e := engine.New(engine.Options{Threads: 2, CacheDir: filepath.Join(dir, "cache")})
	t.Cleanup(func() { e.Close() })
	ts := testServer(t, Config{ModelsDir: dir, Engine: e})
	q := url.Values{"model": {"ggml-micro.en"}, "vad": {"silero"}, "vad_model": {"ggml-silero-v6.2.0"}}
	jfk, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	samples, err := engine.ReadAudio(jfk)
	if err != nil {
		t.Fatal(err)
	}
	events, err := streamLive(t, ts.URL, q, pcm16(t, wav16(samples)), 16000)
	checkLiveRun(t, events, err, 11, 0.5/16000)
	want := [][2]float64{{0.32, 2.27}, {3.27, 4.41}, {5.38, 7.68}, {8.16, 11}}
	var finals []liveEvent
	for _, ev := range events {
		if ev.Type == "final" {
			finals = append(finals, ev)
		}
	}
	if len(finals) != len(want) {
		t.Fatalf("%d final events, want %d: %+v", len(finals), len(want), finals)
	}
	for i, f := range finals {
		if math.Abs(*f.Start-want[i][0]) > 0.02 || math.Abs(*f.End-want[i][1]) > 0.02 {
			t.Errorf("utterance %d at %.3f–%.3f, want %.2f–%.2f", i, *f.Start, *f.End, want[i][0], want[i][1])
		}
	}
}
