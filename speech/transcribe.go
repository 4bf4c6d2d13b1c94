package speech

import (
	"bytes"
	"compress/zlib"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

const (
	timePrecision = 0.02 // seconds per timestamp token and per encoder position
	framesPerPos  = 2    // mel frames per encoder position
)

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

// resolveLanguage checks o's language and task against the model and returns
// the language index (-1: detect it; English-only models: 0).
func (m *Model) resolveLanguage(o Options) (int, error) {
	v := m.vocab
	if !v.Multilingual() {
		if o.Translate {
			return 0, fmt.Errorf("%w: %s is English-only and cannot translate", ErrBadOption, m.Describe())
		}
		if o.Language != "" && o.Language != "en" && o.Language != "english" {
			return 0, fmt.Errorf("%w: %s is English-only; it cannot transcribe %q", ErrBadOption, m.Describe(), o.Language)
		}
		return 0, nil
	}
	if o.Language == "" {
		return -1, nil
	}
	i, ok := LanguageIndex(o.Language)
	if !ok || i >= v.NumLanguages() {
		return 0, fmt.Errorf("%w: unknown language %q", ErrBadOption, o.Language)
	}
	return i, nil
}

// sotSequence returns the start-of-transcript sequence for language index
// lang (ignored by English-only models) and o's task.
func (m *Model) sotSequence(o Options) ([]int32, string, error) {
	lang, err := m.resolveLanguage(o)
	if err != nil {
		return nil, "", err
	}
	return m.sotFor(max(lang, 0), o), Languages[max(lang, 0)].Code, nil
}

func (m *Model) sotFor(lang int, o Options) []int32 {
	v, s := m.vocab, m.vocab.Special()
	p := []int32{int32(s.SOT)}
	if v.Multilingual() {
		task := s.Transcribe
		if o.Translate {
			task = s.Translate
		}
		p = append(p, int32(v.LanguageToken(lang)), int32(task))
	}
	if o.NoTimestamps {
		p = append(p, int32(s.NoTimestamps))
	}
	return p
}

// detectLanguage scores the language tokens after SOT on the encoded window
// in st and returns each language's probability.
func (m *Model) detectLanguage(st *state) ([]float64, error) {
	st.n = 0
	logits, err := m.decode(st, []int32{int32(m.vocab.Special().SOT)})
	if err != nil {
		return nil, err
	}
	n := m.vocab.NumLanguages()
	lang := make([]float32, n)
	for i := range n {
		lang[i] = logits[m.vocab.LanguageToken(i)]
	}
	lse := logSumExp(lang)
	probs := make([]float64, n)
	for i, l := range lang {
		probs[i] = math.Exp(float64(l - lse))
	}
	return probs, nil
}

// modelLM runs decoding strategies on the network.
type modelLM struct {
	ctx    context.Context
	m      *Model
	st     *state
	steps  int
	graphs time.Duration // spent in decoder evaluations
}

func (l *modelLM) start(prompt []int32, rows []int, nSeq int) ([][]float32, error) {
	if err := l.ctx.Err(); err != nil {
		return nil, err
	}
	defer l.timed(time.Now())
	l.st.n = 0
	l.steps++
	return l.m.prompt(l.st, prompt, rows)
}

func (l *modelLM) next(parents []int, tokens []int32) ([][]float32, error) {
	if err := l.ctx.Err(); err != nil {
		return nil, err
	}
	defer l.timed(time.Now())
	if err := l.m.reorder(l.st, parents); err != nil {
		return nil, err
	}
	l.steps++
	return l.m.step(l.st, tokens)
}

func (l *modelLM) timed(start time.Time) { l.graphs += time.Since(start) }

// compressionRatio is the size of text over its zlib-compressed size.
func compressionRatio(text []byte) float64 {
	if len(text) == 0 {
		return 0
	}
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	w.Write(text)
	w.Close()
	return float64(len(text)) / float64(b.Len())
}

// Transcribe recognizes the speech in samples, window by window. With
// o.VAD set, only the speech it finds is decoded (times stay those of the
// original audio).
func (m *Model) Transcribe(ctx context.Context, samples []float32, o Options) (*Transcript, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, err := m.resolveLanguage(o); err != nil {
		return nil, err
	}
	if o.VAD != nil {
		return m.transcribeSpeech(ctx, samples, o)
	}
	return m.transcribeSamples(ctx, samples, o)
}

func (m *Model) transcribeSamples(ctx context.Context, samples []float32, o Options) (*Transcript, error) {
	lang, err := m.resolveLanguage(o)
	if err != nil {
		return nil, err
	}
	v, sp := m.vocab, m.vocab.Special()
	var initial []int32
	if p := strings.TrimSpace(o.Prompt); p != "" {
		initial = v.Encode(" " + p)
		if limit := m.hp.NTextCtx/2 - 1; len(initial) > limit {
			return nil, fmt.Errorf("%w: the prompt has %d tokens; the model takes at most %d", ErrBadOption, len(initial), limit)
		}
	}
	tr := &Transcript{Duration: time.Duration(float64(len(samples)) / SampleRate * float64(time.Second))}
	if lang >= 0 {
		tr.Language = Languages[lang].Code
	}
	if len(samples) == 0 {
		if tr.Language == "" {
			tr.Language = "en"
		}
		return tr, nil
	}
	filterOpts := decodeOptions{noTimestamps: o.NoTimestamps, whisperCpp: o.WhisperCppRules, suppressBlank: boolOr(o.SuppressBlank, true),
		suppressNonSpeech: boolOr(o.SuppressNonSpeech, true), maxInitialTS: max(o.MaxInitialTS, 0), maxTokens: m.hp.NTextCtx / 2}
	if o.MaxTokens > 0 {
		filterOpts.maxTokens = min(o.MaxTokens, filterOpts.maxTokens)
	}
	filter := newLogitFilter(v, filterOpts)
	nSeq := max(o.BeamSize, o.BestOf)
	rng := rand.New(rand.NewPCG(o.Seed, 0x77686973))

	start := time.Now()
	mel := LogMel(samples, m.file.MelFilters, m.hp.NMels, m.Threads())
	tr.Timings.Mel = time.Since(start)

	st, err := m.newState(nSeq)
	if err != nil {
		return nil, err
	}
	defer st.close()
	st.priority = o.Priority
	model := &modelLM{ctx: ctx, m: m, st: st}
	// A window is 30 s, or what the model's audio context covers when it
	// is shorter (as whisper.cpp windows such a model), or what
	// Options.AudioCtx asks for.
	windowFrames := min(WindowFrames, framesPerPos*m.hp.NAudioCtx)
	if o.AudioCtx > 0 && o.AudioCtx < m.hp.NAudioCtx {
		windowFrames = min(windowFrames, framesPerPos*o.AudioCtx)
	}
	window := make([]float32, m.hp.NMels*windowFrames)
	all := slices.Clone(initial) // tokens the next window may be conditioned on
	resetSince := 0
	total := time.Duration(mel.Content) * 10 * time.Millisecond
	for seek := 0; seek < mel.Content; {
		if err := ctx.Err(); err != nil {
			return tr, err
		}
		segFrames := min(windowFrames, mel.Content-seek)
		offset := float64(seek) * hopLength / SampleRate
		if o.SilenceThreshold > 0 && rms(samples, seek*hopLength, (seek+segFrames)*hopLength) < o.SilenceThreshold {
			seek += segFrames
			m.progress(o, seek, total)
			continue
		}
		mel.Window(window, seek)
		t0 := time.Now()
		if err := m.encode(window, st, nil); err != nil {
			return tr, err
		}
		tr.Timings.Encode += time.Since(t0)
		tr.Timings.Windows++

		t0 = time.Now()
		if lang < 0 {
			probs, err := m.detectLanguage(st)
			if err != nil {
				return tr, err
			}
			tr.LanguageProbs = map[string]float64{}
			for i, p := range probs {
				tr.LanguageProbs[Languages[i].Code] = p
				if lang < 0 || p > probs[lang] {
					lang = i
				}
			}
			tr.Language, tr.LanguageProb = Languages[lang].Code, probs[lang]
			model.steps++
		}
		var prompt []int32
		if ctxToks := all[resetSince:]; len(ctxToks) > 0 {
			keep := min(len(ctxToks), m.hp.NTextCtx/2-1)
			prompt = append([]int32{int32(sp.Prev)}, ctxToks[len(ctxToks)-keep:]...)
		}
		sotRow := len(prompt)
		prompt = append(prompt, m.sotFor(lang, o)...)

		res, temp, ratio, fallbacks, err := decodeWindow(model, filter, prompt, sotRow, o, filterOpts.maxTokens, rng, v)
		tr.Timings.Fallbacks += fallbacks
		tr.Timings.Tokens += res.generated
		if err != nil {
			return tr, err
		}
		tr.Timings.Decode += time.Since(t0)

		if res.noSpeech(o) {
			seek += segFrames // no speech in this window
			m.progress(o, seek, total)
			continue
		}
		segs, advance := m.segments(res.tokens, offset, segFrames, o.NoTimestamps)
		if o.WordTimestamps && len(segs) > 0 {
			t0 = time.Now()
			if err := m.align(st, lang, o, segs, offset, segFrames); err != nil {
				return tr, err
			}
			tr.Timings.Align += time.Since(t0)
		}
		for i := range segs {
			segs[i].Temperature, segs[i].AvgLogProb, segs[i].CompressionRatio, segs[i].NoSpeechProb = temp, res.avgLogProb(), ratio, res.noSpeechProb
			if o.OnSegment != nil {
				o.OnSegment(segs[i])
			}
			for _, tok := range segs[i].Tokens {
				all = append(all, int32(tok.ID))
			}
		}
		tr.Segments = append(tr.Segments, segs...)
		if o.NoContext || temp > 0.5 {
			resetSince = len(all) // a high-temperature window is no context to build on
		}
		seek += advance
		m.progress(o, seek, total)
	}
	tr.Timings.DecodeSteps = model.steps
	tr.Timings.DecodeGraphs = model.graphs
	if tr.Language == "" {
		tr.Language = "en"
	}
	return tr, nil
}

// decodeWindow decodes a window at each temperature in turn until the result
// passes the compression-ratio and log-probability thresholds (or the window
// looks like silence), and returns the last decoding with its temperature,
// compression ratio and how many decodings were repeated.
func decodeWindow(model lm, filter *logitFilter, prompt []int32, sotRow int, o Options, maxTokens int, rng *rand.Rand, v *Vocab) (res decoded, temp, ratio float64, fallbacks int, err error) {
	for i, t := range o.Temperatures {
		if i > 0 {
			fallbacks++
		}
		var r decoded
		r, err = runDecode(model, filter, prompt, sotRow, strategy{temperature: t, beamSize: o.BeamSize, bestOf: o.BestOf,
			maxTokens: maxTokens, rng: rng}, v.Special().NoSpeech)
		res.generated += r.generated
		generated := res.generated
		res, temp = r, t
		res.generated = generated
		if err != nil {
			return
		}
		ratio = compressionRatio([]byte(v.Text(ids(res.tokens))))
		failed := (o.CompressionRatioThreshold > 0 && ratio > o.CompressionRatioThreshold) || res.avgLogProb() < o.LogProbThreshold
		if res.noSpeechProb > o.NoSpeechThreshold {
			failed = false // silence: no temperature will do better
		}
		if !failed {
			return
		}
	}
	return
}

func (m *Model) progress(o Options, seek int, total time.Duration) {
	if o.OnProgress != nil {
		o.OnProgress(min(time.Duration(seek)*10*time.Millisecond, total), total)
	}
}

func ids(toks []sampledToken) []int {
	out := make([]int, len(toks))
	for i, t := range toks {
		out[i] = int(t.id)
	}
	return out
}

// rms is the root mean square of samples[from:to].
func rms(samples []float32, from, to int) float64 {
	to = min(to, len(samples))
	from = min(from, to)
	if to == from {
		return 0
	}
	sum := 0.0
	for _, s := range samples[from:to] {
		sum += float64(s) * float64(s)
	}
	return math.Sqrt(sum / float64(to-from))
}

// segments splits a window's tokens into segments at timestamp pairs, as
// OpenAI's transcribe does, and returns how many mel frames to advance: to
// the last complete segment when the window ends mid-segment, otherwise the
// whole window.
func (m *Model) segments(toks []sampledToken, offset float64, segFrames int, noTS bool) ([]Segment, int) {
	v := m.vocab
	isTS := func(i int) bool { return v.IsTimestamp(int(toks[i].id)) }
	tsPos := func(i int) float64 { return float64(int(toks[i].id) - v.Special().TimestampBegin) }
	at := func(sec float64) time.Duration { return time.Duration(math.Round(sec * float64(time.Second))) }
	windowEnd := offset + float64(segFrames)*hopLength/SampleRate

	make1 := func(from, to int, start, end float64) Segment {
		// Timestamps past the audio of the window (its last one may be
		// shorter than 30 s) are clipped to its end.
		start, end = min(start, windowEnd), min(end, windowEnd)
		sg := Segment{Start: at(start), End: at(end)}
		var text []byte
		for _, t := range toks[from:to] {
			b := v.Bytes(int(t.id))
			text = append(text, b...)
			sg.Tokens = append(sg.Tokens, Token{ID: int(t.id), Text: v.Name(int(t.id)), LogProb: t.logprob, Prob: float32(math.Exp(float64(t.logprob)))})
		}
		sg.Text = string(text)
		return sg
	}
	nonEmpty := func(sg Segment) bool { return strings.TrimSpace(sg.Text) != "" && sg.Start < at(windowEnd) }

	n := len(toks)
	if n == 0 {
		return nil, segFrames
	}
	var cuts []int // indexes where a new segment starts after a timestamp pair
	for i := 1; i < n; i++ {
		if isTS(i-1) && isTS(i) {
			cuts = append(cuts, i)
		}
	}
	singleEnding := n >= 2 && !isTS(n-2) && isTS(n-1) || n == 1 && isTS(0)
	var segs []Segment
	if len(cuts) > 0 && !noTS {
		if singleEnding {
			cuts = append(cuts, n)
		}
		last := 0
		for _, c := range cuts {
			sg := make1(last, c, offset+tsPos(last)*timePrecision, offset+tsPos(c-1)*timePrecision)
			if nonEmpty(sg) {
				segs = append(segs, sg)
			}
			last = c
		}
		if singleEnding {
			return segs, segFrames
		}
		// The window ends mid-segment: continue from the last timestamp.
		advance := int(tsPos(last-1)) * framesPerPos
		if advance <= 0 || advance > segFrames {
			advance = segFrames
		}
		return segs, advance
	}
	end := windowEnd
	for i := n - 1; i >= 0 && !noTS; i-- {
		if isTS(i) {
			if p := tsPos(i); p > 0 {
				end = offset + p*timePrecision
			}
			break
		}
	}
	start := offset
	if !noTS && isTS(0) {
		start = offset + tsPos(0)*timePrecision
	}
	if sg := make1(0, n, start, end); nonEmpty(sg) {
		segs = append(segs, sg)
	}
	return segs, segFrames
}
