package speech

import (
	"fmt"
	"strings"

	"github.com/owlengine/owl/models"
)

// Vocab is a Whisper vocabulary: the byte strings of the stored tokens and
// the layout of the special tokens after them.
type Vocab struct {
	tokens  [][]byte
	byText  map[string]int
	n       int
	special models.WhisperSpecialTokens
	nLang   int
	multi   bool
}

func newVocab(f *models.WhisperFile) *Vocab {
	v := &Vocab{tokens: f.Vocab, byText: make(map[string]int, len(f.Vocab)), n: f.HParams.NVocab,
		special: f.HParams.SpecialTokens(), nLang: f.HParams.NumLanguages(), multi: f.HParams.Multilingual()}
	// A text stored twice names its last token, as in whisper.cpp. (Real
	// files have such texts: their converter stored the byte tokens that
	// are not UTF-8 alone, and other partial characters, as U+FFFD.)
	for i, t := range f.Vocab {
		v.byText[string(t)] = i
	}
	return v
}

// Size is the number of tokens, special ones included.
func (v *Vocab) Size() int { return v.n }

// Multilingual reports whether the model knows several languages.
func (v *Vocab) Multilingual() bool { return v.multi }

// Special returns the ids of the special tokens.
func (v *Vocab) Special() models.WhisperSpecialTokens { return v.special }

// NumLanguages is the number of language tokens.
func (v *Vocab) NumLanguages() int { return v.nLang }

// IsTimestamp reports whether t is a timestamp token.
func (v *Vocab) IsTimestamp(t int) bool { return t >= v.special.TimestampBegin && t < v.n }

// IsText reports whether t is an ordinary text token.
func (v *Vocab) IsText(t int) bool { return t >= 0 && t < v.special.EOT }

// LanguageToken returns the token of language index i.
func (v *Vocab) LanguageToken(i int) int { return v.special.LanguageBegin + i }

// Lookup returns the id of the stored token whose text is exactly s.
func (v *Vocab) Lookup(s string) (int, bool) {
	i, ok := v.byText[s]
	return i, ok
}

// Bytes returns the text bytes of a text token, nil for special tokens.
func (v *Vocab) Bytes(t int) []byte {
	if t >= 0 && t < len(v.tokens) && t < v.special.EOT {
		return v.tokens[t]
	}
	return nil
}

// Text concatenates the text of the text tokens among ts.
func (v *Vocab) Text(ts []int) string {
	var b strings.Builder
	for _, t := range ts {
		b.Write(v.Bytes(t))
	}
	return b.String()
}

// Name renders any token for debugging: text tokens as their text, special
// ones in Whisper's notation.
func (v *Vocab) Name(t int) string {
	s := v.special
	switch {
	case v.IsText(t):
		return string(v.Bytes(t))
	case t == s.EOT:
		return "<|endoftext|>"
	case t == s.SOT:
		return "<|startoftranscript|>"
	case t > s.SOT && t <= s.SOT+v.nLang && v.multi:
		i := t - s.LanguageBegin
		if i < len(Languages) {
			return "<|" + Languages[i].Code + "|>"
		}
	case t == s.Translate:
		return "<|translate|>"
	case t == s.Transcribe:
		return "<|transcribe|>"
	case t == s.SOLM:
		return "<|startoflm|>"
	case t == s.Prev:
		return "<|startofprev|>"
	case t == s.NoSpeech:
		return "<|nospeech|>"
	case t == s.NoTimestamps:
		return "<|notimestamps|>"
	case v.IsTimestamp(t):
		return fmt.Sprintf("<|%.2f|>", float64(t-s.TimestampBegin)*0.02)
	}
	return fmt.Sprintf("<|%d|>", t)
}
