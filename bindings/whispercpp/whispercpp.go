//go:build whispercpp

package whispercpp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	whisper "github.com/ggerganov/whisper.cpp/bindings/go"

	"github.com/owlengine/owl/speech"
)

func init() {
	speech.RegisterBackend("whispercpp", func(_ context.Context, path string, o speech.LoadOptions) (speech.Recognizer, error) {
		return Open(path, o)
	})
}

// Recognizer transcribes with whisper.cpp. Transcriptions run one at a time.
type Recognizer struct {
	mu      sync.Mutex // guards ctx
	ctx     *whisper.Context
	path    string
	threads int
}

// Open loads the whisper.cpp model file at path.
func Open(path string, o speech.LoadOptions) (*Recognizer, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%s: no such file", path)
	}
	ctx := whisper.Whisper_init(path)
	if ctx == nil {
		return nil, fmt.Errorf("%s: whisper.cpp could not load the model", path)
	}
	return &Recognizer{ctx: ctx, path: path, threads: o.Threads}, nil
}

// Close frees the model. It is idempotent.
func (r *Recognizer) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx != nil {
		r.ctx.Whisper_free()
		r.ctx = nil
	}
	return nil
}

// Describe names the backend and model.
func (r *Recognizer) Describe() string { return "whisper.cpp " + r.path }

// Transcribe runs whisper_full with o mapped onto whisper.cpp's parameters.
// Cancellation is checked before each window is encoded.
func (r *Recognizer) Transcribe(ctx context.Context, samples []float32, o speech.Options) (*speech.Transcript, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx == nil {
		return nil, errors.New("whispercpp: recognizer closed")
	}
	tr := &speech.Transcript{Duration: time.Duration(float64(len(samples)) / speech.SampleRate * float64(time.Second))}
	if len(samples) == 0 {
		tr.Language = "en"
		return tr, nil
	}
	strategy := whisper.SAMPLING_GREEDY
	if o.BeamSize > 1 {
		strategy = whisper.SAMPLING_BEAM_SEARCH
	}
	p := r.ctx.Whisper_full_default_params(strategy)
	if r.threads > 0 {
		p.SetThreads(r.threads)
	}
	p.SetPrintProgress(false)
	p.SetPrintRealtime(false)
	p.SetPrintTimestamps(false)
	p.SetTranslate(o.Translate)
	p.SetNoContext(o.NoContext)
	p.SetTokenTimestamps(o.WordTimestamps)
	if o.BeamSize > 1 {
		p.SetBeamSize(o.BeamSize)
	}
	lang := strings.ToLower(o.Language)
	if lang == "" {
		lang = "auto"
	}
	if r.ctx.Whisper_is_multilingual() == 0 {
		lang = "en"
	}
	if lang != "auto" {
		id := r.ctx.Whisper_lang_id(lang)
		if id < 0 {
			return nil, fmt.Errorf("%w: unknown language %q", speech.ErrBadOption, o.Language)
		}
		if err := p.SetLanguage(id); err != nil {
			return nil, fmt.Errorf("%w: %v", speech.ErrBadOption, err)
		}
	} else if err := p.SetLanguage(-1); err != nil {
		return nil, err
	}
	if len(o.Temperatures) > 0 {
		p.SetTemperature(float32(o.Temperatures[0]))
		if len(o.Temperatures) > 1 {
			p.SetTemperatureFallback(float32(o.Temperatures[1] - o.Temperatures[0]))
		} else {
			p.SetTemperatureFallback(-1)
		}
	}
	if o.Prompt != "" {
		p.SetInitialPrompt(o.Prompt)
	}
	encoderBegin := func() bool { return ctx.Err() == nil }
	var progress func(int)
	if o.OnProgress != nil {
		progress = func(pct int) { o.OnProgress(tr.Duration*time.Duration(pct)/100, tr.Duration) }
	}
	if err := r.ctx.Whisper_full(p, samples, encoderBegin, nil, progress); err != nil {
		if ctx.Err() != nil {
			return tr, ctx.Err()
		}
		return tr, fmt.Errorf("whisper.cpp: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return tr, err
	}
	tr.Language = whisper.Whisper_lang_str(r.ctx.Whisper_full_lang_id())
	cs := func(t int64) time.Duration { return time.Duration(t) * 10 * time.Millisecond }
	for i := range r.ctx.Whisper_full_n_segments() {
		seg := speech.Segment{Start: cs(r.ctx.Whisper_full_get_segment_t0(i)), End: cs(r.ctx.Whisper_full_get_segment_t1(i)), Text: r.ctx.Whisper_full_get_segment_text(i)}
		for j := range r.ctx.Whisper_full_n_tokens(i) {
			d := r.ctx.Whisper_full_get_token_data(i, j)
			tok := speech.Token{ID: int(d.Id()), Text: r.ctx.Whisper_full_get_token_text(i, j), Prob: r.ctx.Whisper_full_get_token_p(i, j)}
			if o.WordTimestamps {
				tok.Start, tok.End = cs(d.T0()), cs(d.T1())
			}
			seg.Tokens = append(seg.Tokens, tok)
		}
		if o.OnSegment != nil {
			o.OnSegment(seg)
		}
		tr.Segments = append(tr.Segments, seg)
	}
	return tr, nil
}
