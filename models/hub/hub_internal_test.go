package hub

import (
	"fmt"
	"net/url"
	"testing"
)

func FuzzContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes 100-199/*", "bytes -1-2/3", "bytes 5-/", "items 0-1/2", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, total, err := contentRange(s)
		if err != nil {
			return
		}
		if start < 0 || total < -1 {
			t.Fatalf("%q: start %d, total %d", s, start, total)
		}
		back := fmt.Sprintf("bytes %d-0/%d", start, total)
		if total < 0 {
			back = fmt.Sprintf("bytes %d-0/*", start)
		}
		if s2, t2, err := contentRange(back); err != nil || s2 != start || t2 != total {
			t.Fatalf("%q → %d, %d → %q → %d, %d, %v", s, start, total, back, s2, t2, err)
		}
	})
}

func FuzzNextLink(f *testing.F) {
	base, _ := url.Parse("https://hub.example/api/models/a/b/tree/main?recursive=true")
	for _, s := range []string{`<https://hub.example/api/x?cursor=2>; rel="next"`, `</rel?c=1>; rel="prev", </n>; rel="next"`, `<%zz>; rel="next"`, `;;`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if next := nextLink([]string{s}, base); next != "" {
			if _, err := url.Parse(next); err != nil {
				t.Fatalf("%q gave unparsable %q", s, next)
			}
		}
	})
}

func TestNextLink(t *testing.T) {
	base, _ := url.Parse("https://hub.example/api/models/a/b/tree/main?recursive=true")
	for in, want := range map[string]string{
		`<https://hub.example/api/models/a/b/tree/main?cursor=abc>; rel="next"`: "https://hub.example/api/models/a/b/tree/main?cursor=abc",
		`</api/p?c=1>; rel="prev", </api/n?c=2>; rel="next"`:                    "https://hub.example/api/n?c=2",
		`</api/p?c=1>; rel="prev"`:                                              "",
	} {
		if got := nextLink([]string{in}, base); got != want {
			t.Errorf("nextLink(%q) = %q, want %q", in, got, want)
		}
	}
}
