package speech

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Recognizer turns speech into text. The native Whisper implementation
// (Model) satisfies it, and so can other backends.
type Recognizer interface {
	// Transcribe recognizes the speech in samples (16 kHz, mono, in
	// [-1, 1]). Cancelling ctx stops it between decoder steps.
	Transcribe(ctx context.Context, samples []float32, o Options) (*Transcript, error)
	// Close frees the recognizer.
	Close() error
}

// Options control a transcription.
type Options struct {
	Language          string  // language code or name; "" means English
	Translate         bool    // translate into English instead of transcribing
	NoTimestamps      bool    // decode without timestamp tokens (one segment per window)
	SuppressBlank     *bool   // suppress a blank first token (default true)
	SuppressNonSpeech *bool   // suppress symbols that are not speech (default true)
	MaxInitialTS      float64 // latest first timestamp in seconds (default 1.0; negative: none)
	// SilenceThreshold is the peak amplitude below which a window holds no
	// speech and is not decoded (default 1e-4, about −80 dBFS; negative: decode all).
	SilenceThreshold float64
	// OnSegment, when set, is called with each segment as it is decoded.
	OnSegment func(Segment)
}

// Token is a decoded token.
type Token struct {
	ID      int
	Text    string
	Prob    float32 // probability under the filtered distribution it was chosen from
	LogProb float32
}

// Segment is a stretch of recognized speech.
type Segment struct {
	Start, End time.Duration
	Text       string
	Tokens     []Token // text and timestamp tokens
}

// Timings break down where a transcription spent its time.
type Timings struct {
	Mel, Encode, Decode time.Duration
	Windows             int // 30-second windows encoded
	DecodeSteps         int // decoder evaluations (the prompt counts as one)
	Tokens              int // tokens generated
}

// Transcript is the result of a transcription.
type Transcript struct {
	Language string // code of the language transcribed
	Duration time.Duration
	Segments []Segment
	Timings  Timings
}

// Text joins the segments' text.
func (t *Transcript) Text() string {
	var b strings.Builder
	for _, s := range t.Segments {
		b.WriteString(s.Text)
	}
	return strings.TrimSpace(b.String())
}

// ErrBadOption is wrapped by errors about options a model cannot honor.
var ErrBadOption = errors.New("invalid transcription option")

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

// prompt returns the start-of-transcript sequence for o.
func (m *Model) prompt(o Options) ([]int32, string, error) {
	v, s := m.vocab, m.vocab.Special()
	p := []int32{int32(s.SOT)}
	lang := "en"
	if !v.Multilingual() {
		if o.Translate {
			return nil, "", fmt.Errorf("%w: %s is English-only and cannot translate", ErrBadOption, m.Describe())
		}
		if o.Language != "" && o.Language != "en" && o.Language != "english" {
			return nil, "", fmt.Errorf("%w: %s is English-only; it cannot transcribe %q", ErrBadOption, m.Describe(), o.Language)
		}
	} else {
		idx := 0
		if o.Language != "" {
			i, ok := LanguageIndex(strings.ToLower(o.Language))
			if !ok || i >= v.NumLanguages() {
				return nil, "", fmt.Errorf("%w: unknown language %q", ErrBadOption, o.Language)
			}
			idx = i
		}
		lang = Languages[idx].Code
		task := s.Transcribe
		if o.Translate {
			task = s.Translate
		}
		p = append(p, int32(v.LanguageToken(idx)), int32(task))
	}
	if o.NoTimestamps {
		p = append(p, int32(s.NoTimestamps))
	}
	return p, lang, nil
}

// Transcribe recognizes the speech in samples, window by window.
func (m *Model) Transcribe(ctx context.Context, samples []float32, o Options) (*Transcript, error) {
	prompt, lang, err := m.prompt(o)
	if err != nil {
		return nil, err
	}
	tr := &Transcript{Language: lang, Duration: time.Duration(float64(len(samples)) / SampleRate * float64(time.Second))}
	if len(samples) == 0 {
		return tr, nil
	}
	silence := o.SilenceThreshold
	if silence == 0 {
		silence = 1e-4
	}
	maxTS := o.MaxInitialTS
	if maxTS == 0 {
		maxTS = 1
	}
	dopts := decodeOptions{noTimestamps: o.NoTimestamps, suppressBlank: boolOr(o.SuppressBlank, true),
		suppressNonSpeech: boolOr(o.SuppressNonSpeech, true), maxInitialTS: max(maxTS, 0), maxTokens: m.hp.NTextCtx / 2}

	m.mu.Lock()
	defer m.mu.Unlock()

	start := time.Now()
	mel := LogMel(samples, m.file.MelFilters, m.hp.NMels, m.Threads())
	tr.Timings.Mel = time.Since(start)

	st, err := m.newState()
	if err != nil {
		return nil, err
	}
	defer st.close()
	window := make([]float32, m.hp.NMels*WindowFrames)
	for seek := 0; seek < mel.Content; {
		if err := ctx.Err(); err != nil {
			return tr, err
		}
		segFrames := min(WindowFrames, mel.Content-seek)
		if silence > 0 && peak(samples, seek*hopLength, (seek+segFrames)*hopLength) < silence {
			seek += segFrames
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
		st.n = 0
		toks, err := m.greedy(ctx, st, prompt, dopts)
		tr.Timings.Decode += time.Since(t0)
		tr.Timings.Tokens += len(toks)
		tr.Timings.DecodeSteps += len(toks) + 1
		if err != nil {
			return tr, err
		}
		offset := float64(seek) * hopLength / SampleRate
		segs, advance := m.segments(toks, offset, segFrames, o.NoTimestamps)
		for _, sg := range segs {
			if o.OnSegment != nil {
				o.OnSegment(sg)
			}
		}
		tr.Segments = append(tr.Segments, segs...)
		seek += advance
	}
	return tr, nil
}

// peak is the largest absolute sample in samples[from:to].
func peak(samples []float32, from, to int) float64 {
	to = min(to, len(samples))
	p := 0.0
	for _, s := range samples[min(from, to):to] {
		p = max(p, math.Abs(float64(s)))
	}
	return p
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
	nonEmpty := func(sg Segment) bool { return strings.TrimSpace(sg.Text) != "" }

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
		if advance <= 0 {
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
