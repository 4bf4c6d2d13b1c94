package speech

import (
	"context"
	"math"
	"slices"
)

// nonSpeechSymbols are the strings OpenAI's tokenizer marks as not speech:
// they are suppressed alone and after a space, as are " -" and " '" at the
// start of a word.
var nonSpeechSymbols = []string{
	"\"", "#", "(", ")", "*", "+", "/", ":", ";", "<", "=", ">", "@", "[", "\\", "]", "^", "_", "`",
	"{", "|", "}", "~", "「", "」", "『", "』", "<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[",
	"('", "(\"", "((", "))", "(((", ")))", "[[", "]]", "{{", "}}", "♪♪", "♪♪♪",
	"♩", "♪", "♫", "♬", "♭", "♮", "♯",
}

// decodeOptions are the knobs of decoding one window.
type decodeOptions struct {
	noTimestamps      bool
	whisperCpp        bool // whisper.cpp's timestamp rules
	suppressBlank     bool
	suppressNonSpeech bool
	maxInitialTS      float64 // seconds; 0 for no limit
	maxTokens         int
}

// logitFilter applies Whisper's rules to the logits of the next token.
type logitFilter struct {
	v          *Vocab
	o          decodeOptions
	suppressed []int // always suppressed
	blank      int   // the " " token, or -1
}

func newLogitFilter(v *Vocab, o decodeOptions) *logitFilter {
	s := v.Special()
	f := &logitFilter{v: v, o: o, blank: -1}
	f.suppressed = []int{s.NoTimestamps, s.SOT, s.NoSpeech, s.SOLM, s.Translate, s.Transcribe, s.Prev}
	if v.Multilingual() {
		for i := range v.NumLanguages() {
			f.suppressed = append(f.suppressed, v.LanguageToken(i))
		}
	}
	if o.suppressNonSpeech {
		for _, sym := range nonSpeechSymbols {
			for _, s := range []string{sym, " " + sym} {
				if id, ok := v.Lookup(s); ok {
					f.suppressed = append(f.suppressed, id)
				}
			}
		}
		for _, s := range []string{" -", " '"} {
			if id, ok := v.Lookup(s); ok {
				f.suppressed = append(f.suppressed, id)
			}
		}
	}
	if id, ok := v.Lookup(" "); ok {
		f.blank = id
	}
	return f
}

var negInf = float32(math.Inf(-1))

// apply masks logits (one per vocabulary entry) for the token that follows
// sampled (the tokens generated so far in this window, prompt excluded) and
// returns the log of the filtered distribution's normalizer: the
// log-probability of token t is logits[t] minus it.
func (f *logitFilter) apply(logits []float32, sampled []int32) float32 {
	v, s := f.v, f.v.Special()
	n := len(logits)
	initial := len(sampled) == 0
	if initial && f.o.suppressBlank {
		logits[s.EOT] = negInf
		if f.blank >= 0 {
			logits[f.blank] = negInf
		}
	}
	for _, t := range f.suppressed {
		logits[t] = negInf
	}
	tsBegin := s.TimestampBegin
	if f.o.noTimestamps {
		for i := tsBegin; i < n; i++ {
			logits[i] = negInf
		}
	} else {
		// Timestamps come in pairs (end of one segment, start of the
		// next), except just before the end of text.
		last := len(sampled) > 0 && v.IsTimestamp(int(sampled[len(sampled)-1]))
		penultimate := len(sampled) < 2 || v.IsTimestamp(int(sampled[len(sampled)-2]))
		if last {
			if penultimate {
				for i := tsBegin; i < n; i++ {
					logits[i] = negInf
				}
			} else {
				for i := 0; i < s.EOT; i++ {
					logits[i] = negInf
				}
			}
		}
		// Timestamps never decrease, and a segment has a non-zero length.
		lastTS := -1
		for _, t := range slices.Backward(sampled) {
			if v.IsTimestamp(int(t)) {
				lastTS = int(t)
				break
			}
		}
		if lastTS >= 0 {
			limit := lastTS + 1
			if last && !penultimate || f.o.whisperCpp {
				limit = lastTS
			}
			for i := tsBegin; i < limit; i++ {
				logits[i] = negInf
			}
		}
		if initial {
			// The first token is a timestamp, and not a late one.
			if !f.o.whisperCpp {
				for i := 0; i < tsBegin; i++ {
					logits[i] = negInf
				}
			}
			if f.o.maxInitialTS > 0 {
				maxIdx := int(math.Round(f.o.maxInitialTS / 0.02))
				for i := tsBegin + maxIdx + 1; i < n; i++ {
					logits[i] = negInf
				}
			}
		}
	}
	if !f.o.noTimestamps {
		// When timestamps together are likelier than any text token, the
		// next token is a timestamp. (Both sides share the normalizer, so
		// the comparison needs none.)
		maxText := maxOf(logits[:tsBegin])
		if logSumExp(logits[tsBegin:]) > maxText {
			for i := 0; i < tsBegin; i++ {
				logits[i] = negInf
			}
		}
	}
	return logSumExp(logits)
}

// logSumExp is log Σ exp(x). Terms more than 30 below the largest (each
// under 1e-13 of it) are skipped, which spares most of the exponentials
// over a vocabulary.
func logSumExp(x []float32) float32 {
	m := maxOf(x)
	if math.IsInf(float64(m), -1) {
		return m
	}
	floor := m - 30
	sum := float32(0)
	for _, v := range x {
		if v > floor {
			sum += expNeg(v - m)
		}
	}
	return m + float32(math.Log(float64(sum)))
}

// maxOf is the largest of x (-Inf when empty). A plain comparison: the
// builtin max's NaN and signed-zero rules cost several times more here.
func maxOf(x []float32) float32 {
	m := negInf
	for _, v := range x {
		if v > m {
			m = v
		}
	}
	return m
}

// expNeg is e^x for x in [-30, 0] to a relative 2e-6, several times faster
// than math.Exp: x = k·ln2 + r with |r| ≤ ln2, e^r by its Taylor series to
// the 8th power, scaled by 2^k through the exponent bits.
func expNeg(x float32) float32 {
	const ln2, invLn2 = 0.6931471805599453, 1.4426950408889634
	k := int32(x*invLn2 - 0.5) // x ≤ 0: truncation rounds to nearest
	r := x - float32(k)*ln2
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040+r*(1.0/40320))))))))
	return p * math.Float32frombits(uint32(k+127)<<23)
}

// sampledToken is a decoded token with its probability under the filtered
// distribution.
type sampledToken struct {
	id      int32
	logprob float32
}

// greedy decodes one window: the prompt, then the most likely token at each
// step until end of text, maxTokens, or a full text context. Cancelling ctx
// stops it between steps.
func (m *Model) greedy(ctx context.Context, st *state, prompt []int32, o decodeOptions) ([]sampledToken, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	v := m.vocab
	filter := newLogitFilter(v, o)
	logits, err := m.decode(st, prompt)
	if err != nil {
		return nil, err
	}
	var out []sampledToken
	var ids []int32
	for len(out) < o.maxTokens {
		lse := filter.apply(logits, ids)
		best, top := int32(0), logits[0]
		for i, l := range logits {
			if l > top {
				best, top = int32(i), l
			}
		}
		if int(best) == v.Special().EOT {
			break
		}
		out = append(out, sampledToken{id: best, logprob: logits[best] - lse})
		ids = append(ids, best)
		if st.n >= m.hp.NTextCtx {
			break
		}
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if logits, err = m.decode(st, []int32{best}); err != nil {
			return out, err
		}
	}
	return out, nil
}
