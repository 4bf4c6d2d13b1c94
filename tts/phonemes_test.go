package tts

import (
	"slices"
	"testing"

	"github.com/owlengine/owl/models"
)

func TestPhonemizeEspeak(t *testing.T) {
	for _, tc := range []struct {
		voice, text string
		want        []string
	}{
		// espeak-ng's clauses "həlˈoʊ", "wˈɜːld", "hˈaʊ ɑːɹ juː" with
		// Piper's punctuation and sentence breaks.
		{"en-us", "Hello, world. How are you?", []string{"həlˈoʊ, wˈɜːld.", "hˈaʊ ɑːɹ juː?"}},
		{"en-us", "This: is; it", []string{"ðˈɪs: ɪz; ɪt"}},
		// A French word in English is spoken with the switch "(fr)…(en)"
		// dropped; é is decomposed into e and U+0301.
		{"en-us", "Bonjour", []string{"bɔːnʒˈʊɹ"}},
		// Brazilian Portuguese's default map: c → k.
		{"pt-br", "Olá.", nil},
	} {
		got, err := PhonemizeEspeak(tc.voice, tc.text, nil)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, p := range got {
			s = append(s, string(p))
		}
		if tc.want != nil && !slices.Equal(s, tc.want) {
			t.Errorf("%s %q: %q, want %q", tc.voice, tc.text, s, tc.want)
		}
		for _, p := range got {
			for _, r := range p {
				if r == '(' || r == ')' || r == 'c' && tc.voice == "pt-br" {
					t.Errorf("%s %q: %q keeps %q", tc.voice, tc.text, string(p), r)
				}
			}
		}
	}
	if _, err := PhonemizeEspeak("zzz", "x", nil); err == nil {
		t.Error("unknown voice accepted")
	}
}

func TestPhonemeIDs(t *testing.T) {
	c := &models.PiperConfig{PhonemeIDMap: map[string][]int{"_": {0}, "^": {1}, "$": {2}, " ": {3}, "a": {14}, "b": {15, 16}}}
	ids, missing := PhonemeIDs(c, Phonemes("ab xa"))
	if want := []int64{1, 0, 14, 0, 15, 16, 0, 3, 0, 14, 0, 2}; !slices.Equal(ids, want) || missing['x'] != 1 {
		t.Fatalf("ids %v (missing %v), want %v", ids, missing, want)
	}
}
