package tts

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestSentences(t *testing.T) {
	for in, want := range map[string][]string{
		"Hello there. How are you? Fine!":               {"Hello there.", "How are you?", "Fine!"},
		"It costs $3.50 today. Dr. Smith agrees.":       {"It costs $3.50 today.", "Dr. Smith agrees."},
		"Wait... what?! \"Really.\" Yes":                {"Wait...", "what?!", "\"Really.\"", "Yes"},
		"line one\nline two\n\n":                        {"line one", "line two"},
		"日本語です。次の文！":                                    {"日本語です。", "次の文！"},
		"   ":                                           nil,
		"...":                                           nil,
		"see owl.example.com, e.g. this. J. R. Tolkien": {"see owl.example.com, e.g. this.", "J. R. Tolkien"},
	} {
		if got := Sentences(in); !slices.Equal(got, want) {
			t.Errorf("Sentences(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEspeakSentenceBySentence(t *testing.T) {
	e, err := NewEspeak()
	if err != nil {
		t.Fatal(err)
	}
	var got []Audio
	err = e.Synthesize(context.Background(), "Hello there. This is owl speaking! Goodbye.", Options{}, func(a Audio) error {
		got = append(got, a)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[1].Sentence != "This is owl speaking!" || got[2].Index != 2 {
		t.Fatalf("%d sentences: %+v", len(got), got)
	}
	for _, a := range got {
		peak := float32(0)
		for _, v := range a.Samples {
			peak = max(peak, v, -v)
		}
		if len(a.Samples) < e.SampleRate()/4 || peak < 0.05 || peak > 1 {
			t.Errorf("%q: %d samples, peak %v", a.Sentence, len(a.Samples), peak)
		}
	}
	// Faster speech is shorter; a stop from emit ends the synthesis.
	var slow, fast int
	e.Synthesize(context.Background(), "one two three four five", Options{Speed: 0.6}, func(a Audio) error { slow += len(a.Samples); return nil })
	e.Synthesize(context.Background(), "one two three four five", Options{Speed: 2}, func(a Audio) error { fast += len(a.Samples); return nil })
	if fast*2 > slow {
		t.Errorf("speed 2 gave %d samples, speed 0.6 %d", fast, slow)
	}
	stop := errors.New("stop")
	n := 0
	if err := e.Synthesize(context.Background(), "One. Two. Three.", Options{}, func(Audio) error { n++; return stop }); err != stop || n != 1 {
		t.Errorf("emit's error: %v after %d sentences", err, n)
	}
	for _, o := range []Options{{Voice: "zzz"}, {Speed: 9}, {Pitch: 101}} {
		err := e.Synthesize(context.Background(), "x", o, func(Audio) error { return nil })
		if !errors.Is(err, ErrUnknownVoice) && !errors.Is(err, ErrBadOption) {
			t.Errorf("%+v: %v", o, err)
		}
	}
	if err := CheckEspeakVoice("de"); err != nil || !strings.Contains(CheckEspeakVoice("zzz").Error(), "zzz") {
		t.Errorf("voice checks: %v", err)
	}
}
