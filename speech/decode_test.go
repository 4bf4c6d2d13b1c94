package speech

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/owlengine/owl/models"
)

// testVocab is an English-only vocabulary whose stored tokens are "t0",
// "t1", ... with token 220 a space.
func testVocab() *Vocab {
	h := models.WhisperHParams{NVocab: 51864}
	sp := h.SpecialTokens()
	f := &models.WhisperFile{HParams: h}
	for i := range sp.EOT {
		tok := []byte("t" + string(rune('a'+i%26)))
		switch i {
		case 220:
			tok = []byte(" ")
		case 300:
			tok = []byte(" -")
		case 301:
			tok = []byte("♪")
		}
		f.Vocab = append(f.Vocab, tok)
	}
	return newVocab(f)
}

func flat(n int) []float32 { return make([]float32, n) }

func allowed(logits []float32, from, to int) bool {
	for i := from; i < to; i++ {
		if math.IsInf(float64(logits[i]), -1) {
			return false
		}
	}
	return true
}

func suppressed(logits []float32, from, to int) bool {
	for i := from; i < to; i++ {
		if !math.IsInf(float64(logits[i]), -1) {
			return false
		}
	}
	return true
}

func TestLogitFilterTimestampRules(t *testing.T) {
	v := testVocab()
	s := v.Special()
	ts := func(i int) int32 { return int32(s.TimestampBegin + i) }
	f := newLogitFilter(v, decodeOptions{suppressBlank: true, suppressNonSpeech: true, maxInitialTS: 1})
	n := v.Size()

	// First token: a timestamp no later than 1 s (index 50).
	l := flat(n)
	f.apply(l, nil)
	if !suppressed(l, 0, s.TimestampBegin) || !allowed(l, s.TimestampBegin, s.TimestampBegin+51) || !suppressed(l, s.TimestampBegin+51, n) {
		t.Fatal("initial step: want only timestamps 0..50 allowed")
	}
	// Suppressed always: specials, and non-speech symbols. (Text is made
	// likelier than all timestamps together, or the last rule would force one.)
	l = flat(n)
	for i := range s.EOT + 1 {
		l[i] = 10
	}
	f.apply(l, []int32{ts(0), 5})
	for _, id := range []int{s.SOT, s.NoTimestamps, s.Translate, s.Transcribe, s.Prev, s.NoSpeech, 300, 301} {
		if !math.IsInf(float64(l[id]), -1) {
			t.Errorf("token %d (%s) not suppressed", id, v.Name(id))
		}
	}
	if !allowed(l, 1, 10) || !allowed(l, s.EOT, s.EOT+1) {
		t.Error("text and end of text should be allowed mid-segment")
	}
	// Timestamps never go below the last one (+1 outside a pair).
	if !suppressed(l, s.TimestampBegin, s.TimestampBegin+1) || !allowed(l, s.TimestampBegin+1, s.TimestampBegin+2) {
		t.Error("after <|0.00|> text: timestamps from 0.02 on, not 0.00")
	}
	// After text then a timestamp, the next is a timestamp (or the end).
	l = flat(n)
	f.apply(l, []int32{ts(0), 5, ts(10)})
	if !suppressed(l, 0, s.EOT) || !allowed(l, s.TimestampBegin+10, s.TimestampBegin+11) || !suppressed(l, s.TimestampBegin, s.TimestampBegin+10) {
		t.Error("after text <|0.20|>: want timestamps from 0.20 or end of text")
	}
	// After a timestamp pair, text follows.
	l = flat(n)
	f.apply(l, []int32{ts(0), 5, ts(10), ts(10)})
	if !suppressed(l, s.TimestampBegin, n) || !allowed(l, 1, 10) {
		t.Error("after a timestamp pair: want text, no timestamps")
	}
	// Timestamps together likelier than any text: text is suppressed.
	l = flat(n)
	for i := s.TimestampBegin; i < n; i++ {
		l[i] = 1
	}
	l[7] = 2
	lse := f.apply(l, []int32{ts(0), 5})
	if !suppressed(l, 0, s.TimestampBegin) {
		t.Error("timestamp mass above the best text token should force a timestamp")
	}
	// The normalizer makes what is left a distribution.
	sum := 0.0
	for _, x := range l {
		sum += math.Exp(float64(x - lse))
	}
	if math.Abs(sum-1) > 1e-4 {
		t.Errorf("probabilities sum to %v", sum)
	}
}

func TestLogitFilterNoTimestamps(t *testing.T) {
	v := testVocab()
	s := v.Special()
	f := newLogitFilter(v, decodeOptions{noTimestamps: true, suppressBlank: true})
	l := flat(v.Size())
	f.apply(l, nil)
	if !suppressed(l, s.TimestampBegin, v.Size()) || !allowed(l, 0, 10) || !math.IsInf(float64(l[220]), -1) || !math.IsInf(float64(l[s.EOT]), -1) {
		t.Fatal("without timestamps: text allowed, timestamps, blank and end of text suppressed at first")
	}
}

func TestSegments(t *testing.T) {
	v := testVocab()
	m := &Model{vocab: v}
	s := v.Special()
	ts := func(i int) sampledToken { return sampledToken{id: int32(s.TimestampBegin + i)} }
	txt := func(i int32) sampledToken { return sampledToken{id: i} }
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	for _, tc := range []struct {
		name    string
		toks    []sampledToken
		offset  float64
		starts  []time.Duration
		ends    []time.Duration
		advance int
	}{
		{"two segments, single ending", []sampledToken{ts(0), txt(1), txt(2), ts(10), ts(10), txt(3), ts(20)}, 0,
			[]time.Duration{0, sec(0.2)}, []time.Duration{sec(0.2), sec(0.4)}, 3000},
		// The unfinished segment after <|0.24|> is dropped and decoded again
		// from the end of the last complete one.
		{"ends mid-segment: re-seek to the last complete segment", []sampledToken{ts(0), txt(1), ts(10), ts(12), txt(2)}, 30,
			[]time.Duration{sec(30)}, []time.Duration{sec(30.2)}, 20},
		{"no pair: one segment to the last timestamp", []sampledToken{ts(5), txt(1), txt(2), ts(50)}, 0,
			[]time.Duration{sec(0.1)}, []time.Duration{sec(1)}, 3000},
		{"nothing", nil, 0, nil, nil, 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			segs, adv := m.segments(tc.toks, tc.offset, 3000, false)
			if adv != tc.advance || len(segs) != len(tc.starts) {
				t.Fatalf("%d segments, advance %d; want %d, %d", len(segs), adv, len(tc.starts), tc.advance)
			}
			for i, sg := range segs {
				if sg.Start != tc.starts[i] || sg.End != tc.ends[i] {
					t.Errorf("segment %d: [%v, %v], want [%v, %v]", i, sg.Start, sg.End, tc.starts[i], tc.ends[i])
				}
			}
		})
	}
}

func TestExpNeg(t *testing.T) {
	for x := float32(-30); x <= 0; x += 0.001 {
		want := math.Exp(float64(x))
		if got := float64(expNeg(x)); math.Abs(got-want) > 2e-6*want {
			t.Fatalf("expNeg(%v) = %v, want %v", x, got, want)
		}
	}
}

func BenchmarkLogitFilter(b *testing.B) {
	v := testVocab()
	f := newLogitFilter(v, decodeOptions{suppressBlank: true, suppressNonSpeech: true, maxInitialTS: 1})
	logits := make([]float32, v.Size())
	for i := range logits {
		logits[i] = float32(i%97) / 10
	}
	l := make([]float32, len(logits))
	sampled := []int32{int32(v.Special().TimestampBegin), 5}
	b.ReportAllocs()
	for b.Loop() {
		copy(l, logits)
		f.apply(l, sampled)
	}
}

// DTW recovers a known monotone alignment: token k attends to frames
// [10k, 10k+10) (plus noise); each token's first frame is found to within
// one frame (20 ms).
func TestDTWRecoversBoundaries(t *testing.T) {
	const tokens, perToken = 8, 10
	frames := tokens * perToken
	sim := make([][]float64, tokens)
	seed := uint64(9)
	for r := range sim {
		sim[r] = make([]float64, frames)
		for f := range frames {
			seed = seed*6364136223846793005 + 1442695040888963407
			sim[r][f] = 0.3 * float64(seed>>40) / float64(1<<24)
			if f/perToken == r {
				sim[r][f] += 1
			}
		}
	}
	normalizeColumns(sim)
	for r := range sim {
		sim[r] = medianFilter(sim[r], alignMedianWidth)
	}
	path := dtw(sim)
	if path[0] != [2]int{0, 0} || path[len(path)-1] != [2]int{tokens - 1, frames - 1} {
		t.Fatalf("path from %v to %v", path[0], path[len(path)-1])
	}
	first := map[int]int{}
	for _, p := range path {
		if _, ok := first[p[0]]; !ok {
			first[p[0]] = p[1]
		}
	}
	for r := range tokens {
		if d := first[r] - r*perToken; d < -1 || d > 1 {
			t.Errorf("token %d starts at frame %d, want %d", r, first[r], r*perToken)
		}
	}
}

func TestMedianFilter(t *testing.T) {
	got := medianFilter([]float64{1, 9, 2, 8, 3, 7, 4}, 3)
	want := []float64{9, 2, 8, 3, 7, 4, 7}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
