package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/models/testmodel"
)

// owl assist through a recording, without audio devices: the events as
// JSON lines, the answers' speech in the --out file.
func TestAssistFile(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("OWL_CACHE_DIR", filepath.Join(dir, "cache"))
	whisper := whisperModel(t, dir, "ggml-micro.en.bin", testmodel.WhisperMicro(testmodel.VocabEnglish, 1))
	wav, _ := spokenFile(t, dir, 3, "Hello there, how are you today", "Good night") // pauses long enough for an answer on a busy machine
	out := filepath.Join(dir, "answer.wav")
	r := owl(t, "", "assist", "-m", tiny, "--whisper", whisper, "--file", wav, "--out", out, "--json", "--max-tokens", "12", "--temperature", "0", "-t", "2")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	var turns, audios, done int
	for line := range strings.Lines(r.stdout) {
		var ev jsonAssistEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		switch ev.Type {
		case "transcript":
			turns++
		case "audio":
			audios++
		case "answer_done":
			done++
		}
	}
	if turns != 2 || done != 2 || audios == 0 {
		t.Fatalf("%d transcripts, %d answers, %d audio events:\n%s", turns, done, audios, r.stdout)
	}
	a, err := audio.DecodeFile(out, audio.Limits{})
	if err != nil || a.Duration() < 0.5 {
		t.Fatalf("%s: %v", out, err)
	}
	bad := owl(t, "", "assist", "-m", tiny)
	if bad.code != 2 || !strings.Contains(bad.stderr, "--whisper") {
		t.Fatalf("without a speech model: %+v", bad)
	}
}
