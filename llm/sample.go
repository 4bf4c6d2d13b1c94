package llm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Sampling chooses the next token from a distribution. The zero value is
// greedy decoding; DefaultSampling gives llama.cpp's defaults.
type Sampling struct {
	Temperature   float32 // <= 0 picks the most likely token (greedy)
	TopK          int     // keep the K most likely tokens; <= 0 keeps all
	TopP          float32 // keep the smallest set whose probability reaches P; 0 or >= 1 keeps all
	MinP          float32 // drop tokens below MinP × the top probability; 0 keeps all
	RepeatPenalty float32 // > 1 discourages tokens seen in the last RepeatLastN; 0 or 1 is off
	RepeatLastN   int     // how many recent tokens the penalty looks at
	Seed          int64   // seed of the random choice; negative picks one at random
}

// DefaultSampling is llama.cpp's default sampling.
func DefaultSampling() Sampling {
	return Sampling{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1, RepeatLastN: 64, Seed: -1}
}

// Validate reports a parameter out of range.
func (s Sampling) Validate() error {
	switch {
	case math.IsNaN(float64(s.Temperature)) || s.Temperature > 100:
		return fmt.Errorf("temperature %v out of range [0, 100]", s.Temperature)
	case s.TopP < 0 || s.TopP > 1 || math.IsNaN(float64(s.TopP)):
		return fmt.Errorf("top-p %v out of range [0, 1]", s.TopP)
	case s.MinP < 0 || s.MinP > 1 || math.IsNaN(float64(s.MinP)):
		return fmt.Errorf("min-p %v out of range [0, 1]", s.MinP)
	case s.RepeatPenalty < 0 || math.IsNaN(float64(s.RepeatPenalty)):
		return fmt.Errorf("repeat penalty %v must not be negative", s.RepeatPenalty)
	case s.RepeatLastN < 0:
		return fmt.Errorf("repeat-last-n %d must not be negative", s.RepeatLastN)
	}
	return nil
}

// Sampler applies a Sampling to successive logit vectors. It is not safe for
// concurrent use.
type Sampler struct {
	p      Sampling
	rng    *rand.Rand
	recent []Token // the last RepeatLastN accepted tokens, oldest first
	cand   []candidate
	seen   map[Token]bool
}

type candidate struct {
	tok   Token
	logit float32
	p     float64
}

// NewSampler returns a sampler for p.
func NewSampler(p Sampling) *Sampler {
	seed := uint64(p.Seed)
	if p.Seed < 0 {
		seed = rand.Uint64()
	}
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(seed, 0x6f776c)), seen: map[Token]bool{}}
}

// Accept records a token chosen (or forced, such as a prompt token) so the
// repeat penalty sees it.
func (s *Sampler) Accept(t Token) {
	if s.p.RepeatLastN <= 0 {
		return
	}
	if len(s.recent) == s.p.RepeatLastN {
		copy(s.recent, s.recent[1:])
		s.recent = s.recent[:len(s.recent)-1]
	}
	s.recent = append(s.recent, t)
}

// Sample picks a token from logits (one float per vocabulary entry). logits
// is modified by the repeat penalty.
func (s *Sampler) Sample(logits []float32) Token {
	if pen := s.p.RepeatPenalty; pen > 0 && pen != 1 && len(s.recent) > 0 {
		clear(s.seen)
		for _, t := range s.recent {
			if int(t) < len(logits) && !s.seen[t] {
				s.seen[t] = true
				if logits[t] > 0 {
					logits[t] /= pen
				} else {
					logits[t] *= pen
				}
			}
		}
	}
	if s.p.Temperature <= 0 {
		return argmax(logits)
	}

	// Candidates, most likely first, cut to top-k.
	s.cand = s.cand[:0]
	for i, l := range logits {
		s.cand = append(s.cand, candidate{tok: Token(i), logit: l})
	}
	k := len(s.cand)
	if s.p.TopK > 0 && s.p.TopK < k {
		k = s.p.TopK
		partialSortDesc(s.cand, k)
		s.cand = s.cand[:k]
	} else if s.p.TopP > 0 && s.p.TopP < 1 || s.p.MinP > 0 {
		slices.SortFunc(s.cand, byLogitDesc)
	}
	softmax(s.cand, 1)

	if p := float64(s.p.TopP); p > 0 && p < 1 {
		if !slices.IsSortedFunc(s.cand, byLogitDesc) {
			slices.SortFunc(s.cand, byLogitDesc)
		}
		cum := 0.0
		for i, c := range s.cand {
			cum += c.p
			if cum >= p {
				s.cand = s.cand[:i+1]
				break
			}
		}
	}
	if s.p.MinP > 0 {
		maxP := 0.0
		for _, c := range s.cand {
			maxP = max(maxP, c.p)
		}
		floor := float64(s.p.MinP) * maxP
		kept := s.cand[:0]
		for _, c := range s.cand {
			if c.p >= floor {
				kept = append(kept, c)
			}
		}
		s.cand = kept
	}
	softmax(s.cand, s.p.Temperature)
	r := s.rng.Float64()
	cum := 0.0
	for _, c := range s.cand {
		cum += c.p
		if r < cum {
			return c.tok
		}
	}
	return s.cand[len(s.cand)-1].tok
}

func byLogitDesc(a, b candidate) int {
	switch {
	case a.logit > b.logit:
		return -1
	case a.logit < b.logit:
		return 1
	}
	return int(a.tok - b.tok)
}

// argmax returns the index of the largest logit, the lowest index on ties.
func argmax(logits []float32) Token {
	best := 0
	for i, l := range logits {
		if l > logits[best] {
			best = i
		}
	}
	return Token(best)
}

// softmax sets c[i].p from logits divided by temp.
func softmax(c []candidate, temp float32) {
	if len(c) == 0 {
		return
	}
	m := c[0].logit
	for _, x := range c {
		m = max(m, x.logit)
	}
	sum := 0.0
	for i := range c {
		c[i].p = math.Exp(float64((c[i].logit - m) / temp))
		sum += c[i].p
	}
	for i := range c {
		c[i].p /= sum
	}
}

// partialSortDesc moves the k largest candidates to the front, sorted.
func partialSortDesc(c []candidate, k int) {
	// Quickselect around the k-th element, then sort the front.
	lo, hi := 0, len(c)-1
	for lo < hi {
		pivot := c[(lo+hi)/2]
		i, j := lo, hi
		for i <= j {
			for byLogitDesc(c[i], pivot) < 0 {
				i++
			}
			for byLogitDesc(c[j], pivot) > 0 {
				j--
			}
			if i <= j {
				c[i], c[j] = c[j], c[i]
				i++
				j--
			}
		}
		if k-1 <= j {
			hi = j
		} else if k-1 >= i {
			lo = i
		} else {
			break
		}
	}
	slices.SortFunc(c[:k], byLogitDesc)
}
