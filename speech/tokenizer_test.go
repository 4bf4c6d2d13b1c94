package speech

import (
	"strings"
	"testing"
)

func TestSplitWords(t *testing.T) {
	for in, want := range map[string]string{
		"Hello world":        "Hello| world",
		"I'm here, it's 42!": "I|'m| here|,| it|'s| 42|!",
		"  two  spaces":      " | two| | spaces",
		"tab\there":          "tab|\t|here",
		"trailing ":          "trailing| ",
		"naïve café 日本語":     "na|ï|ve| caf|é| 日本語", // letters are ASCII ones, as in whisper.cpp
		"Oh!'s":              "Oh|!'|s",
		"end.":               "end|.",
		"a -- b":             "a| --| b",
		"":                   "",
		"don't":              "don|'t",
	} {
		if got := strings.Join(splitWords(in), "|"); got != want {
			t.Errorf("splitWords(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	m := loadModel(t, "micro-f16", testmodelMicroMulti(), LoadOptions{})
	v := m.Vocab()
	// whisper.cpp's files store the byte tokens that are no character alone
	// as U+FFFD, so characters only such tokens spell are lost, as they are
	// in whisper.cpp; the generated vocabulary has no merges for these.
	for text, want := range map[string]string{" And so my fellow Americans": "", " ask not what your country can do for you": "",
		" tabs\tand\nnewlines": "", " 日本語も 🦉": "  "} {
		if want == "" {
			want = text
		}
		toks := v.Encode(text)
		ids := make([]int, len(toks))
		for i, t := range toks {
			ids[i] = int(t)
		}
		if got := v.Text(ids); got != want {
			t.Errorf("Encode(%q) decodes to %q, want %q", text, got, want)
		}
	}
}
