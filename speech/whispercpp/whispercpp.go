//go:build whispercpp

package whispercpp

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/owlengine/owl/bindings/whispercpp"
	"github.com/owlengine/owl/speech"
)

func init() {
	speech.RegisterBackend("whispercpp", func(_ context.Context, path string, o speech.LoadOptions) (speech.Recognizer, error) {
		return Open(path, o)
	})
}

// Recognizer transcribes with whisper.cpp, one transcription at a time.
type Recognizer struct {
	m       *whispercpp.Model
	path    string
	threads int
}

// Open loads the whisper.cpp model file at path.
func Open(path string, o speech.LoadOptions) (*Recognizer, error) {
	m, err := whispercpp.Open(path)
	if err != nil {
		return nil, err
	}
	return &Recognizer{m: m, path: path, threads: o.Threads}, nil
}

// Close frees the model. It is idempotent.
func (r *Recognizer) Close() error {
	r.m.Close()
	return nil
}

// Describe names the backend and model.
func (r *Recognizer) Describe() string { return "whisper.cpp " + r.path }

// Transcribe runs whisper.cpp with o mapped onto its parameters.
// Cancellation is checked before each window is encoded.
func (r *Recognizer) Transcribe(ctx context.Context, samples []float32, o speech.Options) (*speech.Transcript, error) {
	tr := &speech.Transcript{Duration: time.Duration(float64(len(samples)) / speech.SampleRate * float64(time.Second))}
	if len(samples) == 0 {
		tr.Language = "en"
		return tr, nil
	}
	p := whispercpp.Params{Threads: r.threads, BeamSize: o.BeamSize, Language: o.Language, Translate: o.Translate,
		NoContext: o.NoContext, TokenTimestamps: o.WordTimestamps, InitialPrompt: o.Prompt, TemperatureInc: -1}
	if len(o.Temperatures) > 0 {
		p.Temperature = float32(o.Temperatures[0])
		if len(o.Temperatures) > 1 {
			p.TemperatureInc = float32(o.Temperatures[1] - o.Temperatures[0])
		}
	}
	var progress func(int)
	if o.OnProgress != nil {
		progress = func(pct int) { o.OnProgress(tr.Duration*time.Duration(pct)/100, tr.Duration) }
	}
	lang, segs, err := r.m.Transcribe(samples, p, func() bool { return ctx.Err() == nil }, progress)
	switch {
	case ctx.Err() != nil:
		return tr, ctx.Err()
	case errors.Is(err, whispercpp.ErrLanguage):
		return nil, fmt.Errorf("%w: %v", speech.ErrBadOption, err)
	case err != nil:
		return tr, err
	}
	tr.Language = lang
	for _, s := range segs {
		seg := speech.Segment{Start: s.Start, End: s.End, Text: s.Text}
		for _, t := range s.Tokens {
			seg.Tokens = append(seg.Tokens, speech.Token{ID: t.ID, Text: t.Text, Prob: t.Prob, Start: t.Start, End: t.End})
		}
		if o.OnSegment != nil {
			o.OnSegment(seg)
		}
		tr.Segments = append(tr.Segments, seg)
	}
	return tr, nil
}
