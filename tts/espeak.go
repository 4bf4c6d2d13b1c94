package tts

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/owlengine/owl/bindings/espeak"
)

// Espeak is espeak-ng's own voice: every language espeak-ng has, no model
// file. It is the voice owl speaks with when no other is given.
type Espeak struct {
	rate int
}

// EspeakName is the model name of the built-in voice.
const EspeakName = "espeak"

// NewEspeak starts espeak-ng.
func NewEspeak() (*Espeak, error) {
	rate, err := espeak.SampleRate()
	if err != nil {
		return nil, err
	}
	return &Espeak{rate: rate}, nil
}

// SampleRate is espeak-ng's rate (22,050 Hz).
func (e *Espeak) SampleRate() int { return e.rate }

// Describe names the voice.
func (e *Espeak) Describe() string { return "espeak-ng" }

// Close does nothing.
func (e *Espeak) Close() error { return nil }

// EspeakParams maps options to espeak-ng's: Speed scales its 175 words per
// minute, clamped to the 80 to 450 it takes.
func EspeakParams(o Options) espeak.Params {
	p := espeak.Params{Voice: o.Voice, Pitch: o.Pitch}
	if o.Speed != 0 && o.Speed != 1 {
		p.Rate = max(80, min(450, int(math.Round(espeak.DefaultRate*o.Speed))))
	}
	return p
}

// Synthesize speaks text sentence by sentence.
func (e *Espeak) Synthesize(ctx context.Context, text string, o Options, emit func(Audio) error) error {
	if err := o.Check(); err != nil {
		return err
	}
	p := EspeakParams(o)
	for i, s := range Sentences(text) {
		if err := ctx.Err(); err != nil {
			return err
		}
		pcm, err := espeak.Synthesize(s, p)
		if errors.Is(err, espeak.ErrUnknownVoice) {
			return fmt.Errorf("%w: %v", ErrUnknownVoice, err)
		}
		if err != nil {
			return err
		}
		samples := make([]float32, len(pcm))
		for j, v := range pcm {
			samples[j] = float32(v) / 32768
		}
		if err := emit(Audio{Samples: samples, Sentence: s, Index: i}); err != nil {
			return err
		}
	}
	return nil
}

// EspeakVoice is one of espeak-ng's voices.
type EspeakVoice = espeak.Voice

// EspeakVoices lists espeak-ng's voices.
func EspeakVoices() ([]EspeakVoice, error) { return espeak.Voices() }

// CheckEspeakVoice reports whether espeak-ng has the voice.
func CheckEspeakVoice(voice string) error {
	if _, err := espeak.Phonemize(voice, ""); err != nil {
		if errors.Is(err, espeak.ErrUnknownVoice) {
			return fmt.Errorf("%w: %v", ErrUnknownVoice, err)
		}
		return err
	}
	return nil
}
