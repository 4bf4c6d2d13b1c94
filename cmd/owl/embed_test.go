package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestEmbedCLI(t *testing.T) {
	r := owl(t, "", "embed", "-m", tiny, "The owl sees at night.", "Owls hunt mice.")
	if r.code != 0 {
		t.Fatalf("embed: %+v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %s", len(lines), r.stdout)
	}
	var v struct {
		Text      string    `json:"text"`
		Embedding []float64 `json:"embedding"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &v); err != nil || v.Text != "The owl sees at night." || len(v.Embedding) != 64 {
		t.Fatalf("line %q: %v", lines[0], err)
	}
	var s float64
	for _, x := range v.Embedding {
		s += x * x
	}
	if math.Abs(math.Sqrt(s)-1) > 1e-4 {
		t.Fatalf("norm %v", math.Sqrt(s))
	}
	// From standard input, alone: the same vector (to rounding: a batch
	// of one is summed in another order).
	stdin := owl(t, "The owl sees at night.\n", "embed", "-m", tiny)
	var w struct{ Embedding []float64 }
	if stdin.code != 0 || json.Unmarshal([]byte(strings.TrimSpace(stdin.stdout)), &w) != nil || len(w.Embedding) != 64 {
		t.Fatalf("from standard input: %+v", stdin)
	}
	for i := range w.Embedding {
		if math.Abs(w.Embedding[i]-v.Embedding[i]) > 1e-4 {
			t.Fatalf("alone and batched differ at %d: %v, %v", i, w.Embedding[i], v.Embedding[i])
		}
	}
	if bad := owl(t, "", "embed", "hi"); bad.code != 2 {
		t.Fatalf("without a model: %+v", bad)
	}
}
