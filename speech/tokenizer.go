package speech

import (
	"unicode"
	"unicode/utf8"
)

// Encode turns text into tokens the way whisper.cpp does: the text is split
// into words as GPT-2's pre-tokenizer splits it (contractions, runs of
// letters, of digits, of other symbols, each with a leading space, and
// whitespace), and each word is covered greedily by the longest vocabulary
// tokens that match it, falling back to single bytes.
func (v *Vocab) Encode(text string) []int32 {
	var out []int32
	for _, w := range splitWords(text) {
		for i := 0; i < len(w); {
			j := len(w)
			for ; j > i; j-- {
				if id, ok := v.Lookup(w[i:j]); ok {
					out = append(out, int32(id))
					break
				}
			}
			if j == i { // no token covers this byte (not in a real vocabulary)
				j = i + 1
			}
			i = j
		}
	}
	return out
}

// splitWords is GPT-2's pre-tokenization:
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
func splitWords(s string) []string {
	var words []string
	class := func(r rune) int {
		switch {
		case unicode.IsLetter(r):
			return 1
		case unicode.IsNumber(r):
			return 2
		case unicode.IsSpace(r):
			return 3
		}
		return 4
	}
	for i := 0; i < len(s); {
		if s[i] == '\'' {
			matched := false
			for _, c := range []string{"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"} {
				if len(s)-i >= len(c) && s[i:i+len(c)] == c {
					words = append(words, c)
					i += len(c)
					matched = true
					break
				}
			}
			if matched {
				continue
			}
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		start := i
		c := class(r)
		if c == 3 {
			// A run of whitespace; a single space before a non-space
			// belongs to the next word.
			j := i
			for j < len(s) {
				r2, sz := utf8.DecodeRuneInString(s[j:])
				if class(r2) != 3 {
					break
				}
				j += sz
			}
			if j < len(s) && j-i >= 1 && s[j-1] == ' ' {
				if j-1 > i {
					words = append(words, s[i:j-1])
				}
				i = j - 1
				r, size = ' ', 1
				start = i
			} else {
				words = append(words, s[i:j])
				i = j
				continue
			}
		}
		if r == ' ' {
			i += size
			if i >= len(s) {
				words = append(words, s[start:i])
				break
			}
			r, size = utf8.DecodeRuneInString(s[i:])
			c = class(r)
		}
		for i < len(s) {
			r2, sz := utf8.DecodeRuneInString(s[i:])
			if class(r2) != c || (c == 4 && r2 == '\'' && i > start && isContraction(s[i:])) {
				break
			}
			i += sz
		}
		words = append(words, s[start:i])
	}
	return words
}

func isContraction(s string) bool {
	for _, c := range []string{"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"} {
		if len(s) >= len(c) && s[:len(c)] == c {
			return true
		}
	}
	return false
}
