package speech

import "regexp"

// Encode turns text into tokens the way whisper.cpp does: the text is split
// into words by GPT-2's pre-tokenizer pattern as whisper.cpp's std::regex
// applies it to bytes in the C locale (letters and digits are ASCII ones,
// so every other byte, UTF-8 sequences included, is a symbol), and each
// word is covered greedily by the longest vocabulary tokens that match it;
// a byte no token covers is dropped.
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

// wordPattern is GPT-2's pre-tokenizer,
// 's|'t|'re|'ve|'m|'ll|'d| ?[[:alpha:]]+| ?[[:digit:]]+| ?[^\s[:alpha:][:digit:]]+|\s+(?!\S)|\s+,
// with C-locale classes and without the look-ahead, which splitWords
// applies: Go's regexp, like ECMAScript's, takes the first alternative that
// matches.
var wordPattern = regexp.MustCompile(`^(?:'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\t\n\v\f\r A-Za-z0-9]+|[\t\n\v\f\r ]+)`)

// splitWords splits s into the words whisper.cpp tokenizes one by one.
func splitWords(s string) []string {
	var words []string
	for i := 0; i < len(s); {
		m := wordPattern.FindStringIndex(s[i:])
		if m == nil { // not reached: every byte starts some alternative
			words = append(words, s[i:i+1])
			i++
			continue
		}
		j := i + m[1]
		// \s+(?!\S) comes before \s+: a run of whitespace followed by a
		// word leaves its last character to that word, unless it is the
		// only one.
		if j < len(s) && j-i > 1 && isSpace(s[j-1]) {
			j--
		}
		words = append(words, s[i:j])
		i = j
	}
	return words
}

// isSpace is C's isspace in the C locale.
func isSpace(b byte) bool {
	return b == ' ' || (b >= '\t' && b <= '\r')
}
