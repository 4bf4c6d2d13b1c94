package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/owlengine/owl/audio"
)

func TestSayToFiles(t *testing.T) {
	dir := t.TempDir()
	wav, flac := filepath.Join(dir, "hello.wav"), filepath.Join(dir, "hello.flac")
	r := owl(t, "", "say", "-o", wav, "--json", "Hello there. This is owl speaking.")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	var sentences []struct {
		Sentence int
		Text     string
		Start    float64
		Duration float64
	}
	for line := range strings.Lines(r.stdout) {
		var s struct {
			Sentence int
			Text     string
			Start    float64
			Duration float64
		}
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		sentences = append(sentences, s)
	}
	if len(sentences) != 2 || sentences[1].Text != "This is owl speaking." || sentences[1].Start != sentences[0].Duration {
		t.Fatalf("sentences %+v", sentences)
	}
	a, err := audio.DecodeFile(wav, audio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	total := sentences[0].Duration + sentences[1].Duration
	if a.SampleRate != 22050 || a.Duration() < total-0.01 || a.Duration() > total+0.01 {
		t.Fatalf("%s: %d Hz, %.3f s, the sentences %.3f s", wav, a.SampleRate, a.Duration(), total)
	}
	b, _ := os.ReadFile(wav)
	if size := len(b); int(b[40])|int(b[41])<<8|int(b[42])<<16|int(b[43])<<24 != size-44 {
		t.Fatalf("the WAV header's data size is not the file's")
	}
	// FLAC by the extension, text from standard input, another language.
	r = owl(t, "Guten Morgen. Wie geht es Ihnen?", "say", "-f", "-", "--voice", "de", "--speed", "1.5", "-o", flac)
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if f, err := audio.DecodeFile(flac, audio.Limits{}); err != nil || f.Duration() < 1 {
		t.Fatalf("%s: %v", flac, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"say", "-o", wav}, "nothing to say"},
		{[]string{"say", "--voice", "zzz", "-o", wav, "hi"}, "unknown"},
		{[]string{"say", "--speed", "9", "-o", wav, "hi"}, "speed"},
		{[]string{"say", "-m", "nope", "-o", wav, "hi"}, "no model of that name"},
		{[]string{"say", "--format", "mp3", "-o", wav, "hi"}, "mp3"},
	} {
		r := owl(t, "", tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: %+v", tc.args, r)
		}
	}
}

func TestVoices(t *testing.T) {
	r := owl(t, "", "voices")
	if r.code != 0 || !strings.Contains(r.stdout, "espeak  en-us") && !strings.Contains(r.stdout, "en-us") {
		t.Fatalf("%+v", r)
	}
	if n := strings.Count(r.stdout, "\n"); n < 50 {
		t.Fatalf("%d voices", n)
	}
}
