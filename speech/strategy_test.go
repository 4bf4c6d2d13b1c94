package speech

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// fakeLM serves logits from a function of each sequence's tokens so far.
type fakeLM struct {
	n      int
	seqs   [][]int32
	logits func(prefix []int32) []float32
	sot    []float32 // logits at the SOT row
	steps  int
}

func (f *fakeLM) start(prompt []int32, rows []int, nSeq int) ([][]float32, error) {
	f.seqs = make([][]int32, nSeq)
	f.steps++
	sot := f.sot
	if sot == nil {
		sot = make([]float32, f.n)
	}
	return [][]float32{slices.Clone(sot), f.logits(nil)}, nil
}

func (f *fakeLM) next(parents []int, tokens []int32) ([][]float32, error) {
	seqs := make([][]int32, len(f.seqs))
	out := make([][]float32, len(tokens))
	for i, p := range parents {
		seqs[i] = append(slices.Clone(f.seqs[p]), tokens[i])
		out[i] = f.logits(seqs[i])
	}
	f.seqs = seqs
	f.steps++
	return out, nil
}

// distribution makes logits whose softmax is probs (other tokens -Inf).
func distribution(n int, probs map[int]float64) []float32 {
	l := make([]float32, n)
	for i := range l {
		l[i] = negInf
	}
	for t, p := range probs {
		l[t] = float32(math.Log(p))
	}
	return l
}

// plainFilter applies no timestamp rules, so tests see their own logits.
func plainFilter(v *Vocab) *logitFilter {
	return newLogitFilter(v, decodeOptions{noTimestamps: true})
}

func TestBeamSearchBeatsGreedy(t *testing.T) {
	v := testVocab()
	eot := v.Special().EOT
	const A, B, C, D, E, F = 100, 101, 102, 103, 104, 105
	lm := &fakeLM{n: v.Size(), logits: func(p []int32) []float32 {
		switch {
		case len(p) == 0:
			return distribution(v.Size(), map[int]float64{A: 0.6, B: 0.4})
		case slices.Equal(p, []int32{A}):
			return distribution(v.Size(), map[int]float64{C: 0.3, D: 0.3, E: 0.4})
		case slices.Equal(p, []int32{B}):
			return distribution(v.Size(), map[int]float64{F: 0.95, C: 0.05})
		}
		return distribution(v.Size(), map[int]float64{eot: 1})
	}}
	greedy, err := runDecode(lm, plainFilter(v), []int32{1}, 0, strategy{beamSize: 1, maxTokens: 10}, v.Special().NoSpeech)
	if err != nil {
		t.Fatal(err)
	}
	beam, err := runDecode(lm, plainFilter(v), []int32{1}, 0, strategy{beamSize: 3, maxTokens: 10}, v.Special().NoSpeech)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(greedy.tokens); !slices.Equal(got, []int{A, E}) {
		t.Fatalf("greedy took %v, want A E", got)
	}
	if got := ids(beam.tokens); !slices.Equal(got, []int{B, F}) {
		t.Fatalf("beam search took %v, want B F (log-prob %.3f vs greedy's %.3f)", got, beam.sumLogProb, greedy.sumLogProb)
	}
	want := math.Log(0.4) + math.Log(0.95)
	if math.Abs(beam.sumLogProb-want) > 1e-5 || beam.sumLogProb <= greedy.sumLogProb {
		t.Fatalf("beam log-prob %.5f, want %.5f (greedy %.5f)", beam.sumLogProb, want, greedy.sumLogProb)
	}
}

// Beam search returns the best finished hypothesis even when a longer beam
// is still running and a worse one ends first.
func TestBeamSearchRanksFinished(t *testing.T) {
	v := testVocab()
	eot := v.Special().EOT
	lm := &fakeLM{n: v.Size(), logits: func(p []int32) []float32 {
		switch len(p) {
		case 0:
			return distribution(v.Size(), map[int]float64{10: 0.5, 11: 0.3, eot: 0.2})
		case 1:
			if p[0] == 10 {
				return distribution(v.Size(), map[int]float64{eot: 0.9, 12: 0.1})
			}
			return distribution(v.Size(), map[int]float64{eot: 0.99, 13: 0.01})
		}
		return distribution(v.Size(), map[int]float64{eot: 1})
	}}
	res, err := runDecode(lm, plainFilter(v), []int32{1}, 0, strategy{beamSize: 2, maxTokens: 10}, v.Special().NoSpeech)
	if err != nil {
		t.Fatal(err)
	}
	// [10]: log .5+log .9 = -0.798 over 1 token; [11]: log .3 + log .99 = -1.214.
	if got := ids(res.tokens); !slices.Equal(got, []int{10}) {
		t.Fatalf("got %v, want [10]", got)
	}
}

func TestSamplingSeededAndBestOf(t *testing.T) {
	v := testVocab()
	eot := v.Special().EOT
	lm := &fakeLM{n: v.Size(), logits: func(p []int32) []float32 {
		if len(p) >= 5 {
			return distribution(v.Size(), map[int]float64{eot: 1})
		}
		return distribution(v.Size(), map[int]float64{20: 0.25, 21: 0.25, 22: 0.25, 23: 0.25})
	}}
	run := func(seed uint64, bestOf int) decoded {
		r, err := runDecode(lm, plainFilter(v), []int32{1}, 0, strategy{temperature: 1, bestOf: bestOf, maxTokens: 10,
			rng: rand.New(rand.NewPCG(seed, 1))}, v.Special().NoSpeech)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := run(7, 5), run(7, 5)
	if !slices.Equal(ids(a.tokens), ids(b.tokens)) || len(a.tokens) != 5 {
		t.Fatalf("same seed, different samples: %v %v", ids(a.tokens), ids(b.tokens))
	}
	if a.generated != 5*5 {
		t.Fatalf("%d tokens generated for 5 samples of 5", a.generated)
	}
}

// The first temperature's decoding loops (it compresses too well); a later
// temperature's is kept.
func TestFallbackOnCompressionRatio(t *testing.T) {
	v := testVocab()
	eot := v.Special().EOT
	lm := &fakeLM{n: v.Size(), logits: func(p []int32) []float32 {
		if len(p) >= 60 {
			return distribution(v.Size(), map[int]float64{eot: 1})
		}
		probs := map[int]float64{500: 0.2} // the loop token
		for i := range 200 {
			probs[1000+i*7] = 0.004 // many others, each less likely
		}
		return distribution(v.Size(), probs)
	}}
	o, _ := Options{BeamSize: 2, BestOf: 2, LogProbThreshold: math.Inf(-1)}.withDefaults()
	res, temp, ratio, fallbacks, err := decodeWindow(lm, plainFilter(v), []int32{1}, 0, o, 100, rand.New(rand.NewPCG(1, 2)), v)
	if err != nil {
		t.Fatal(err)
	}
	if temp == 0 || fallbacks == 0 {
		t.Fatalf("kept temperature %v after %d fallbacks (ratio %.2f)", temp, fallbacks, ratio)
	}
	if ratio > o.CompressionRatioThreshold {
		t.Fatalf("kept a decoding with compression ratio %.2f", ratio)
	}
	if res.generated <= len(res.tokens) {
		t.Fatalf("generated %d tokens over all decodings, kept %d", res.generated, len(res.tokens))
	}
}

func TestFallbackOnLogProb(t *testing.T) {
	v := testVocab()
	eot := v.Special().EOT
	lm := &fakeLM{n: v.Size(), logits: func(p []int32) []float32 {
		if len(p) >= 4 {
			return distribution(v.Size(), map[int]float64{eot: 1})
		}
		// Flat over 50 tokens: log-probability about -3.9 per token.
		probs := map[int]float64{}
		for i := range 50 {
			probs[2000+i] = 0.02
		}
		return distribution(v.Size(), probs)
	}}
	o, _ := Options{BeamSize: 1, BestOf: 1, Temperatures: []float64{0, 0.5}}.withDefaults()
	res, temp, _, fallbacks, err := decodeWindow(lm, plainFilter(v), []int32{1}, 0, o, 100, rand.New(rand.NewPCG(1, 2)), v)
	if err != nil {
		t.Fatal(err)
	}
	// Every temperature fails; the last decoding is kept.
	if fallbacks != 1 || temp != 0.5 || res.avgLogProb() > -1 {
		t.Fatalf("temperature %v after %d fallbacks, average log-prob %.2f", temp, fallbacks, res.avgLogProb())
	}
}

// A window whose no-speech token is likely and whose text is not gives no
// segments, and is not retried at higher temperatures.
func TestNoSpeechRule(t *testing.T) {
	v := testVocab()
	sp := v.Special()
	sot := distribution(v.Size(), map[int]float64{sp.NoSpeech: 0.8, 5: 0.2})
	lm := &fakeLM{n: v.Size(), sot: sot, logits: func(p []int32) []float32 {
		if len(p) >= 3 {
			return distribution(v.Size(), map[int]float64{sp.EOT: 1})
		}
		probs := map[int]float64{}
		for i := range 40 {
			probs[3000+i] = 0.025
		}
		return distribution(v.Size(), probs)
	}}
	o, _ := Options{BeamSize: 1}.withDefaults()
	res, _, _, fallbacks, err := decodeWindow(lm, plainFilter(v), []int32{1}, 0, o, 100, rand.New(rand.NewPCG(1, 2)), v)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(res.noSpeechProb-0.8) > 1e-5 || fallbacks != 0 || !res.noSpeech(o) {
		t.Fatalf("no-speech %.3f, %d fallbacks, skipped %v", res.noSpeechProb, fallbacks, res.noSpeech(o))
	}
	// The same text with a confident decoding is kept.
	o.LogProbThreshold = -10
	if res.noSpeech(o) {
		t.Fatal("a window decoded with confidence was skipped")
	}
}

func TestOptionErrors(t *testing.T) {
	for _, o := range []Options{{BeamSize: 100}, {BeamSize: -1}, {BestOf: 17}, {Temperatures: []float64{0, 3}}, {Temperatures: []float64{}}} {
		if _, err := o.withDefaults(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}
