//go:build whispercpp

package whispercpp

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/models/testmodel"
	"github.com/owlengine/owl/speech"
)

// Both backends, run greedily without fallback on the same generated model
// and audio, decode the same tokens.
func TestGreedyParity(t *testing.T) {
	dir := t.TempDir()
	// whisper.cpp takes models with two decoder layers for distil-whisper and
	// forces <|notimestamps|>, so the micro model will not do: tiny's shape.
	path := filepath.Join(dir, "ggml-tiny.en.bin")
	if err := testmodel.WriteWhisperFile(path, testmodel.WhisperTiny(testmodel.VocabEnglish, 1)); err != nil {
		t.Fatal(err)
	}
	sample, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	a, err := audio.DecodeFile(sample, audio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	// whisper.cpp does not suppress non-speech tokens by default.
	no := false
	o := speech.Options{BeamSize: 1, Temperatures: []float64{0}, NoContext: true, SuppressNonSpeech: &no, WhisperCppRules: true}

	native, err := speech.Load(context.Background(), path, speech.LoadOptions{Threads: 2, CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer native.Close()
	cpp, err := Open(path, speech.LoadOptions{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer cpp.Close()

	tokens := func(r speech.Recognizer) []int {
		tr, err := r.Transcribe(context.Background(), a.Samples, o)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int
		for _, s := range tr.Segments {
			for _, tok := range s.Tokens {
				ids = append(ids, tok.ID)
			}
		}
		return ids
	}
	want, got := tokens(native), tokens(cpp)
	n := min(len(want), len(got))
	for i := range n {
		if want[i] != got[i] {
			t.Fatalf("token %d: native %d, whisper.cpp %d (first %d agree)", i, want[i], got[i], i)
		}
	}
	if len(want) != len(got) {
		t.Fatalf("native decoded %d tokens, whisper.cpp %d (the first %d agree)", len(want), len(got), n)
	}
	t.Logf("%d tokens agree", n)
}
