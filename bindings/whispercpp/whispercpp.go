//go:build whispercpp

package whispercpp

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	whisper "github.com/ggerganov/whisper.cpp/bindings/go"
)

// Model is a whisper.cpp model. Its methods may be called from several
// goroutines; transcriptions run one at a time.
type Model struct {
	mu  sync.Mutex // guards ctx
	ctx *whisper.Context
}

// Params are the decoding knobs this binding passes on.
type Params struct {
	Threads         int    // 0: whisper.cpp's default
	BeamSize        int    // 1 or less: greedy
	Language        string // a code, or "auto"
	Translate       bool
	NoContext       bool
	TokenTimestamps bool
	// Temperature is the first temperature; TemperatureInc the step of
	// the fallback ladder (negative: no fallback).
	Temperature, TemperatureInc float32
	InitialPrompt               string
}

// Segment is a stretch of transcribed speech.
type Segment struct {
	Start, End time.Duration
	Text       string
	Tokens     []Token
}

// Token is a decoded token; Start and End are set with TokenTimestamps.
type Token struct {
	ID         int
	Text       string
	Prob       float32
	Start, End time.Duration
}

// ErrLanguage is returned for a language whisper.cpp does not know.
var ErrLanguage = errors.New("unknown language")

// Open loads the whisper.cpp model file at path.
func Open(path string) (*Model, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%s: no such file", path)
	}
	ctx := whisper.Whisper_init(path)
	if ctx == nil {
		return nil, fmt.Errorf("%s: whisper.cpp could not load the model", path)
	}
	return &Model{ctx: ctx}, nil
}

// Close frees the model. It is idempotent.
func (m *Model) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx != nil {
		m.ctx.Whisper_free()
		m.ctx = nil
	}
}

// Transcribe runs whisper_full on 16-kHz samples. keepGoing is asked
// before each window is encoded (false stops); progress, when not nil,
// gets the percentage done. It returns the language and the segments.
func (m *Model) Transcribe(samples []float32, p Params, keepGoing func() bool, progress func(int)) (string, []Segment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil {
		return "", nil, errors.New("whispercpp: model closed")
	}
	strategy := whisper.SAMPLING_GREEDY
	if p.BeamSize > 1 {
		strategy = whisper.SAMPLING_BEAM_SEARCH
	}
	wp := m.ctx.Whisper_full_default_params(strategy)
	if p.Threads > 0 {
		wp.SetThreads(p.Threads)
	}
	wp.SetPrintProgress(false)
	wp.SetPrintRealtime(false)
	wp.SetPrintTimestamps(false)
	wp.SetTranslate(p.Translate)
	wp.SetNoContext(p.NoContext)
	wp.SetTokenTimestamps(p.TokenTimestamps)
	if p.BeamSize > 1 {
		wp.SetBeamSize(p.BeamSize)
	}
	lang := strings.ToLower(p.Language)
	if lang == "" {
		lang = "auto"
	}
	if m.ctx.Whisper_is_multilingual() == 0 {
		lang = "en"
	}
	id := -1
	if lang != "auto" {
		if id = m.ctx.Whisper_lang_id(lang); id < 0 {
			return "", nil, fmt.Errorf("%w %q", ErrLanguage, p.Language)
		}
	}
	if err := wp.SetLanguage(id); err != nil {
		return "", nil, fmt.Errorf("%w %q: %v", ErrLanguage, p.Language, err)
	}
	wp.SetTemperature(p.Temperature)
	wp.SetTemperatureFallback(p.TemperatureInc)
	if p.InitialPrompt != "" {
		wp.SetInitialPrompt(p.InitialPrompt)
	}
	if err := m.ctx.Whisper_full(wp, samples, keepGoing, nil, progress); err != nil {
		return "", nil, fmt.Errorf("whisper.cpp: %w", err)
	}
	cs := func(t int64) time.Duration { return time.Duration(t) * 10 * time.Millisecond }
	var segs []Segment
	for i := range m.ctx.Whisper_full_n_segments() {
		seg := Segment{Start: cs(m.ctx.Whisper_full_get_segment_t0(i)), End: cs(m.ctx.Whisper_full_get_segment_t1(i)), Text: m.ctx.Whisper_full_get_segment_text(i)}
		for j := range m.ctx.Whisper_full_n_tokens(i) {
			d := m.ctx.Whisper_full_get_token_data(i, j)
			tok := Token{ID: int(d.Id()), Text: m.ctx.Whisper_full_get_token_text(i, j), Prob: m.ctx.Whisper_full_get_token_p(i, j)}
			if p.TokenTimestamps {
				tok.Start, tok.End = cs(d.T0()), cs(d.T1())
			}
			seg.Tokens = append(seg.Tokens, tok)
		}
		segs = append(segs, seg)
	}
	return whisper.Whisper_lang_str(m.ctx.Whisper_full_lang_id()), segs, nil
}
