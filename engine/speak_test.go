package engine

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

// A Piper voice is loaded once for every request that opens it, counted
// in the memory budget and the metrics, and runs requests side by side.
func TestVoiceIsAModel(t *testing.T) {
	dir := t.TempDir()
	path, err := testmodel.WritePiperVoice(dir, "voice", testmodel.PiperSmall())
	if err != nil {
		t.Fatal(err)
	}
	e := New(Options{Threads: 2, Parallel: 2, CacheDir: filepath.Join(dir, "cache")})
	defer e.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			v, err := e.OpenVoice(context.Background(), path, "")
			if err != nil {
				errs <- err
				return
			}
			defer v.Close()
			n := 0
			err = v.Speak(context.Background(), "Hello there. How are you?", SpeakOptions{}, func(a SpokenAudio) error { n += len(a.Samples); return nil })
			if err == nil && n == 0 {
				t.Error("no audio")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	m := e.Metrics()
	if m.Loads != 1 || len(m.Models) != 1 || m.Models[0].Kind != "voice" || m.Models[0].Requests != 4 || m.Models[0].Bytes == 0 {
		t.Fatalf("metrics: loads %d, %+v", m.Loads, m.Models)
	}
}
