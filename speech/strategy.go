package speech

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
)

// lm is what decoding needs from the network, so that the strategies can
// also run on crafted logits in tests.
type lm interface {
	// start evaluates prompt for nSeq sequences and returns the logits
	// after the prompt tokens at the indexes in rows.
	start(prompt []int32, rows []int, nSeq int) ([][]float32, error)
	// next makes sequence i continue sequence parents[i], evaluates one
	// token for each (tokens[i]) and returns each one's logits.
	next(parents []int, tokens []int32) ([][]float32, error)
}

// strategy says how to choose tokens.
type strategy struct {
	temperature float64 // 0: the most likely tokens (greedy or beam search)
	beamSize    int     // with temperature 0: beams (1 is greedy)
	bestOf      int     // with temperature > 0: independent samples
	maxTokens   int
	rng         *rand.Rand
}

// decoded is a window's decoding.
type decoded struct {
	tokens       []sampledToken
	sumLogProb   float64
	noSpeechProb float64
	generated    int // tokens generated over all sequences
}

// avgLogProb is the mean log-probability per token, counting the end of text.
func (d decoded) avgLogProb() float64 { return d.sumLogProb / float64(len(d.tokens)+1) }

// noSpeech is OpenAI's rule for skipping a window: the no-speech token is
// likely after the start of transcript, and the decoded text is not.
func (d decoded) noSpeech(o Options) bool {
	return d.noSpeechProb > o.NoSpeechThreshold && d.avgLogProb() < o.LogProbThreshold
}

// hypothesis is one sequence being decoded.
type hypothesis struct {
	tokens    []sampledToken
	ids       []int32
	sum       float64
	finished  bool
	generated int // tokens evaluated for this search (set on the returned one)
}

// rankScore orders finished hypotheses: log-probability over length, as
// OpenAI's maximum-likelihood ranker does without a length penalty.
func rankScore(h hypothesis) float64 { return h.sum / float64(max(1, len(h.tokens))) }

// runDecode decodes one window: the prompt (whose SOT is at sotRow), then
// tokens by s until every sequence ends or maxTokens.
func runDecode(model lm, filter *logitFilter, prompt []int32, sotRow int, s strategy, noSpeech int) (decoded, error) {
	nSeq := 1
	switch {
	case s.temperature > 0:
		nSeq = max(1, s.bestOf)
	case s.beamSize > 1:
		nSeq = s.beamSize
	}
	rows, err := model.start(prompt, []int{sotRow, len(prompt) - 1}, nSeq)
	if err != nil {
		return decoded{}, err
	}
	out := decoded{noSpeechProb: softmaxAt(rows[0], noSpeech)}
	var best hypothesis
	switch {
	case s.temperature > 0:
		best, err = sampleSequences(model, filter, rows[1], s, nSeq)
	case nSeq > 1:
		best, err = beamSearch(model, filter, rows[1], s, nSeq)
	default:
		best, err = sampleSequences(model, filter, rows[1], s, 1)
	}
	out.tokens, out.sumLogProb, out.generated = best.tokens, best.sum, best.generated
	return out, err
}

// softmaxAt is the probability of token t under the unfiltered logits.
func softmaxAt(logits []float32, t int) float64 {
	if t < 0 || t >= len(logits) {
		return 0
	}
	return math.Exp(float64(logits[t] - logSumExp(logits)))
}

// sampleSequences runs n independent sequences, each taking the most likely
// token (temperature 0) or a sample at the temperature, and returns the
// best-ranked. All start from the same prompt logits.
func sampleSequences(model lm, filter *logitFilter, first []float32, s strategy, n int) (hypothesis, error) {
	hyps := make([]hypothesis, n)
	logits := make([][]float32, n)
	for i := range logits {
		logits[i] = slices.Clone(first)
	}
	eot := filter.v.Special().EOT
	active := make([]int, n) // hypothesis index of each live sequence slot
	for i := range active {
		active[i] = i
	}
	generated := 0
	for len(active) > 0 {
		var parents []int
		var tokens []int32
		var next []int
		for slot, h := range active {
			l := logits[slot]
			lse := filter.apply(l, hyps[h].ids)
			tok := pick(l, s.temperature, s.rng)
			if int(tok) == eot {
				hyps[h].finished = true
				continue
			}
			hyps[h].tokens = append(hyps[h].tokens, sampledToken{id: tok, logprob: l[tok] - lse})
			hyps[h].ids = append(hyps[h].ids, tok)
			hyps[h].sum += float64(l[tok] - lse)
			if len(hyps[h].tokens) >= s.maxTokens {
				continue
			}
			parents = append(parents, slot)
			tokens = append(tokens, tok)
			next = append(next, h)
		}
		if len(tokens) == 0 {
			break
		}
		generated += len(tokens)
		var err error
		if logits, err = model.next(parents, tokens); err != nil {
			b := best(hyps)
			b.generated = generated
			return b, err
		}
		active = next
	}
	b := best(hyps)
	b.generated = generated
	return b, nil
}

// pick chooses a token from filtered logits: the most likely at temperature
// 0, otherwise a sample of softmax(logits/temperature).
func pick(logits []float32, temperature float64, rng *rand.Rand) int32 {
	bestID, top := int32(0), logits[0]
	for i, l := range logits {
		if l > top {
			bestID, top = int32(i), l
		}
	}
	if temperature <= 0 {
		return bestID
	}
	inv := float32(1 / temperature)
	sum := 0.0
	for _, l := range logits {
		if d := (l - top) * inv; d > -30 {
			sum += float64(expNeg(d))
		}
	}
	r := rng.Float64() * sum
	for i, l := range logits {
		if d := (l - top) * inv; d > -30 {
			r -= float64(expNeg(d))
			if r <= 0 {
				return int32(i)
			}
		}
	}
	return bestID
}

// best is the hypothesis with the highest rank score, finished ones first.
func best(hyps []hypothesis) hypothesis {
	return slices.MaxFunc(hyps, func(a, b hypothesis) int {
		if a.finished != b.finished {
			if a.finished {
				return 1
			}
			return -1
		}
		return cmp.Compare(rankScore(a), rankScore(b))
	})
}

// beamSearch keeps the beamSize most probable sequences at every step (each
// beam proposes its beamSize+1 best continuations) and collects those that
// end, until beamSize of them have, then returns the best-ranked finished
// sequence.
func beamSearch(model lm, filter *logitFilter, first []float32, s strategy, beams int) (hypothesis, error) {
	eot := filter.v.Special().EOT
	generated := 0
	live := []hypothesis{{}}
	logits := [][]float32{slices.Clone(first)}
	var finished []hypothesis
	type cand struct {
		parent int
		tok    int32
		lp     float32
		sum    float64
	}
	for step := 0; ; step++ {
		var cands []cand
		for i, h := range live {
			l := logits[i]
			lse := filter.apply(l, h.ids)
			for _, t := range topK(l, beams+1) {
				lp := l[t] - lse
				if math.IsInf(float64(lp), -1) {
					continue
				}
				cands = append(cands, cand{parent: i, tok: t, lp: lp, sum: h.sum + float64(lp)})
			}
		}
		slices.SortStableFunc(cands, func(a, b cand) int { return cmp.Compare(b.sum, a.sum) })
		var next []hypothesis
		var parents []int
		var tokens []int32
		for _, c := range cands {
			p := live[c.parent]
			if int(c.tok) == eot {
				if len(finished) < beams {
					finished = append(finished, hypothesis{tokens: p.tokens, ids: p.ids, sum: c.sum, finished: true})
				}
				continue
			}
			if len(next) == beams {
				continue
			}
			h := hypothesis{
				tokens: append(slices.Clip(p.tokens), sampledToken{id: c.tok, logprob: c.lp}),
				ids:    append(slices.Clip(p.ids), c.tok),
				sum:    c.sum,
			}
			next = append(next, h)
			parents = append(parents, c.parent)
			tokens = append(tokens, c.tok)
		}
		if len(finished) >= beams || len(next) == 0 || len(next[0].tokens) >= s.maxTokens {
			// Out of room: the live beams count as candidates too.
			for _, h := range next {
				if len(finished) >= beams {
					break
				}
				finished = append(finished, h)
			}
			break
		}
		generated += len(tokens)
		var err error
		if logits, err = model.next(parents, tokens); err != nil {
			b := best(append(finished, next...))
			b.generated = generated
			return b, err
		}
		live = next
	}
	if len(finished) == 0 {
		return hypothesis{generated: generated}, nil
	}
	b := best(finished)
	b.generated = generated
	return b, nil
}

// topK returns the indexes of the k largest logits, largest first.
func topK(logits []float32, k int) []int32 {
	idx := make([]int32, 0, k+1)
	for i, l := range logits {
		if len(idx) == k && l <= logits[idx[k-1]] {
			continue
		}
		pos := len(idx)
		for pos > 0 && logits[idx[pos-1]] < l {
			pos--
		}
		idx = slices.Insert(idx, pos, int32(i))
		if len(idx) > k {
			idx = idx[:k]
		}
	}
	return idx
}
