package llm

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTextStream(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stops   []string
		pieces  []string
		want    []string // emitted after each piece
		stopped int      // index of the piece that stops, -1 for none
		tail    string   // what flush returns at the end
	}{
		{"plain", nil, []string{"a", "b"}, []string{"a", "b"}, -1, ""},
		{"stop inside piece", []string{"END"}, []string{"abENDcd"}, []string{"ab"}, 0, ""},
		{"stop across pieces", []string{"END"}, []string{"abE", "N", "Dx"}, []string{"ab", "", ""}, 2, ""},
		{"false alarm", []string{"END"}, []string{"abE", "Nx"}, []string{"ab", "ENx"}, -1, ""},
		{"held at end", []string{"END"}, []string{"abEN"}, []string{"ab"}, -1, "EN"},
		{"split rune", nil, []string{"\xe4\xbd", "\xa0!"}, []string{"", "你!"}, -1, ""},
		{"split emoji", nil, []string{"\xf0\x9f", "\xa6", "\x89"}, []string{"", "", "🦉"}, -1, ""},
		{"two stops, first wins", []string{"yz", "xy"}, []string{"axyz"}, []string{"a"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := textStream{stops: tc.stops}
			stoppedAt := -1
			for i, p := range tc.pieces {
				out, stopped := s.push(p)
				if out != tc.want[i] {
					t.Fatalf("piece %d: emitted %q, want %q", i, out, tc.want[i])
				}
				if stopped {
					stoppedAt = i
					break
				}
			}
			if stoppedAt != tc.stopped {
				t.Fatalf("stopped at %d, want %d", stoppedAt, tc.stopped)
			}
			if tail := s.flush(); tail != tc.tail {
				t.Fatalf("flush %q, want %q", tail, tc.tail)
			}
		})
	}
}

// Streaming any text byte by byte emits it whole, in valid UTF-8 pieces.
func FuzzTextStream(f *testing.F) {
	f.Add("héllo wörld 🦉", "wör")
	f.Add("abcabc", "cab")
	f.Fuzz(func(t *testing.T, text, stop string) {
		if !utf8.ValidString(text) || !utf8.ValidString(stop) || len(text) > 1<<12 {
			return
		}
		var stops []string
		if stop != "" {
			stops = []string{stop}
		}
		s := textStream{stops: stops}
		var got strings.Builder
		stopped := false
		for i := 0; i < len(text) && !stopped; i++ {
			var out string
			out, stopped = s.push(text[i : i+1])
			if !utf8.ValidString(out) {
				t.Fatalf("emitted invalid UTF-8 %q", out)
			}
			got.WriteString(out)
		}
		if !stopped {
			got.WriteString(s.flush())
		}
		want := text
		if i := strings.Index(text, stop); stop != "" && i >= 0 {
			want = text[:i]
		}
		if got.String() != want {
			t.Fatalf("streamed %q, want %q", got.String(), want)
		}
	})
}
