package llm

import (
	"strings"
	"unicode/utf8"
)

// textStream turns the bytes of generated tokens into text that is safe to
// show: whole UTF-8 characters only, and never the start of a stop string
// until it is known not to be one.
type textStream struct {
	stops   []string
	pending string // bytes received but not yet emitted
}

// push adds the bytes of one token. It returns the text that may be emitted
// now and whether a stop string was found (the text then ends before it).
func (s *textStream) push(piece string) (string, bool) {
	s.pending += piece
	first := -1
	for _, stop := range s.stops {
		if i := strings.Index(s.pending, stop); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first >= 0 {
		out := s.pending[:first]
		s.pending = ""
		return out, true
	}
	keep := 0
	for _, stop := range s.stops {
		keep = max(keep, overlap(s.pending, stop))
	}
	cut := len(s.pending) - keep
	cut -= incompleteTail(s.pending[:cut])
	out := s.pending[:cut]
	s.pending = s.pending[cut:]
	return out, false
}

// flush returns whatever is still held back at the end of generation.
func (s *textStream) flush() string {
	out := s.pending
	s.pending = ""
	return out
}

// overlap is the length of the longest suffix of text that is a proper
// prefix of stop.
func overlap(text, stop string) int {
	for n := min(len(text), len(stop)-1); n > 0; n-- {
		if strings.HasSuffix(text, stop[:n]) {
			return n
		}
	}
	return 0
}

// incompleteTail is the number of bytes at the end of s that begin a UTF-8
// character whose remaining bytes have not arrived yet.
func incompleteTail(s string) int {
	for n := 1; n <= min(3, len(s)); n++ {
		b := s[len(s)-n]
		if b < 0x80 {
			return 0 // ASCII: complete
		}
		if utf8.RuneStart(b) {
			need := 0
			switch {
			case b&0xE0 == 0xC0:
				need = 2
			case b&0xF0 == 0xE0:
				need = 3
			case b&0xF8 == 0xF0:
				need = 4
			}
			if need > n {
				return n
			}
			return 0
		}
	}
	return 0
}
