package llm

import (
	"math"
	"testing"
)

func TestSamplerGreedy(t *testing.T) {
	s := NewSampler(Sampling{})
	if got := s.Sample([]float32{0.1, 3, -1, 2.9}); got != 1 {
		t.Fatalf("greedy picked %d, want 1", got)
	}
	// Ties go to the lowest index.
	if got := s.Sample([]float32{1, 5, 5}); got != 1 {
		t.Fatalf("tie picked %d, want 1", got)
	}
}

// counts samples n tokens from fixed logits and returns how often each came.
func counts(p Sampling, logits []float32, n int) []int {
	s := NewSampler(p)
	c := make([]int, len(logits))
	buf := make([]float32, len(logits))
	for range n {
		copy(buf, logits)
		c[s.Sample(buf)]++
	}
	return c
}

func TestSamplerFilters(t *testing.T) {
	// Probabilities at temperature 1: softmax of these logits.
	logits := []float32{2, 1.5, 1, 0, -1, -3}
	for _, tc := range []struct {
		name    string
		p       Sampling
		allowed int // only tokens below this index may appear
		all     bool
	}{
		{"top-k 1 is greedy", Sampling{Temperature: 1, TopK: 1, Seed: 1}, 1, false},
		{"top-k 3", Sampling{Temperature: 1, TopK: 3, Seed: 1}, 3, true},
		// p = .42 .25 .15 .06 .02 .003: the top two reach 0.67.
		{"top-p 0.6", Sampling{Temperature: 1, TopP: 0.6, Seed: 1}, 2, true},
		// min-p 0.3 keeps tokens with p >= 0.3 × 0.42 = 0.126.
		{"min-p 0.3", Sampling{Temperature: 1, MinP: 0.3, Seed: 1}, 3, true},
		{"no filter", Sampling{Temperature: 1, Seed: 1}, 6, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := counts(tc.p, logits, 4000)
			for i, n := range c {
				if i >= tc.allowed && n > 0 {
					t.Fatalf("token %d drawn %d times; only tokens < %d allowed (%v)", i, n, tc.allowed, c)
				}
				if tc.all && i < tc.allowed && n == 0 {
					t.Fatalf("allowed token %d never drawn (%v)", i, c)
				}
			}
		})
	}
}

func TestSamplerTemperature(t *testing.T) {
	logits := []float32{1, 0}
	// At temperature 1 token 0 has p = e/(e+1) ≈ 0.731; at 0.5, e²/(e²+1) ≈ 0.881.
	for _, tc := range []struct {
		temp float32
		want float64
	}{{1, 0.731}, {0.5, 0.881}, {2, 0.622}} {
		c := counts(Sampling{Temperature: tc.temp, Seed: 7}, logits, 20000)
		got := float64(c[0]) / 20000
		if math.Abs(got-tc.want) > 0.015 {
			t.Errorf("temperature %v: token 0 drawn %.3f of the time, want %.3f", tc.temp, got, tc.want)
		}
	}
}

func TestSamplerRepeatPenalty(t *testing.T) {
	s := NewSampler(Sampling{RepeatPenalty: 2, RepeatLastN: 4})
	s.Accept(0)
	// Token 0 leads (3 vs 2) but is penalized to 1.5.
	if got := s.Sample([]float32{3, 2, 1}); got != 1 {
		t.Fatalf("picked %d, want 1 after penalizing 0", got)
	}
	// Negative logits are pushed further down, not up.
	s = NewSampler(Sampling{RepeatPenalty: 2, RepeatLastN: 4})
	s.Accept(1)
	if got := s.Sample([]float32{-2, -1.5, -1.9}); got != 2 {
		t.Fatalf("picked %d, want 2 (token 1 penalized to -3)", got)
	}
	// The window forgets old tokens.
	s = NewSampler(Sampling{RepeatPenalty: 2, RepeatLastN: 2})
	s.Accept(0)
	s.Accept(5)
	s.Accept(6)
	if got := s.Sample([]float32{3, 2, 1, 0, 0, 0, 0}); got != 0 {
		t.Fatalf("picked %d, want 0 (out of the 2-token window)", got)
	}
}

func TestPartialSort(t *testing.T) {
	for n := 1; n < 60; n += 7 {
		for k := 1; k <= n; k += 3 {
			c := make([]candidate, n)
			for i := range c {
				c[i] = candidate{tok: Token(i), logit: float32((i * 37) % 11)}
			}
			partialSortDesc(c, k)
			for i := 1; i < k; i++ {
				if byLogitDesc(c[i-1], c[i]) > 0 {
					t.Fatalf("n=%d k=%d: front not sorted at %d", n, k, i)
				}
			}
			for i := k; i < n; i++ {
				if byLogitDesc(c[i], c[k-1]) < 0 {
					t.Fatalf("n=%d k=%d: element %d (%v) belongs in the top k", n, k, i, c[i])
				}
			}
		}
	}
}

func BenchmarkSample(b *testing.B) {
	for _, n := range []int{512, 32000, 128256} {
		logits := make([]float32, n)
		for i := range logits {
			logits[i] = float32((i*7919)%1000) / 100
		}
		buf := make([]float32, n)
		b.Run("vocab="+itoa(n), func(b *testing.B) {
			s := NewSampler(DefaultSampling())
			b.ReportAllocs()
			for b.Loop() {
				copy(buf, logits)
				s.Sample(buf)
			}
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
