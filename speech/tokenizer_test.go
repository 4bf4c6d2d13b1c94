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
	for _, text := range []string{" And so my fellow Americans", " ask not what your country can do for you", " 日本語も 🦉", " tabs\tand\nnewlines"} {
		toks := v.Encode(text)
		ids := make([]int, len(toks))
		for i, t := range toks {
			ids[i] = int(t)
		}
		if got := v.Text(ids); got != text {
			t.Errorf("Encode(%q) decodes to %q", text, got)
		}
	}
}
