package engine

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/owlengine/owl/tts"
)

// Types of the tts package that the API passes through.
type (
	// SpeakOptions tune a synthesis; see tts.Options.
	SpeakOptions = tts.Options
	// SpokenAudio is one sentence's speech.
	SpokenAudio = tts.Audio
	// EspeakVoice is one of espeak-ng's voices.
	EspeakVoice = tts.EspeakVoice
)

// ErrUnknownVoice is returned for a voice that does not exist.
var ErrUnknownVoice = tts.ErrUnknownVoice

// BuiltinVoice is the model name of espeak-ng's own voice, which needs no
// model file.
const BuiltinVoice = tts.EspeakName

// Voice is an open voice: its sample rate, and a way to speak with it.
// Close it when done.
type Voice struct {
	e     *Engine
	synth tts.Synthesizer
	model string
}

// OpenVoice opens the voice of model: "" or BuiltinVoice for espeak-ng's,
// or the path of a Piper voice's model (NAME.onnx) with its configuration
// at config ("": NAME.onnx.json beside it).
func (e *Engine) OpenVoice(ctx context.Context, model, config string) (*Voice, error) {
	if model != "" && model != BuiltinVoice {
		if _, err := os.Stat(model); err != nil {
			return nil, fmt.Errorf("%w: %v (owl voices lists the voices; %q is espeak-ng's)", ErrUnknownVoice, err, BuiltinVoice)
		}
		p, err := tts.LoadPiper(ctx, model, tts.PiperOptions{Threads: e.opts.Threads, CacheDir: e.opts.CacheDir, Config: config})
		if err != nil {
			return nil, err
		}
		return &Voice{e: e, synth: p, model: model}, nil
	}
	s, err := tts.NewEspeak()
	if err != nil {
		return nil, err
	}
	return &Voice{e: e, synth: s, model: BuiltinVoice}, nil
}

// SampleRate is the rate of the voice's samples.
func (v *Voice) SampleRate() int { return v.synth.SampleRate() }

// Describe names the voice.
func (v *Voice) Describe() string { return v.synth.Describe() }

// Check reports options the voice cannot honor (ErrBadOption,
// ErrUnknownVoice) before anything is spoken.
func (v *Voice) Check(o SpeakOptions) error {
	if err := o.Check(); err != nil {
		return speakError(err)
	}
	if v.model == BuiltinVoice && o.Voice != "" {
		return speakError(tts.CheckEspeakVoice(o.Voice))
	}
	return nil
}

// Speak says text sentence by sentence, handing each sentence's audio to
// emit as soon as it is ready (see tts.Synthesizer).
func (v *Voice) Speak(ctx context.Context, text string, o SpeakOptions, emit func(SpokenAudio) error) error {
	return speakError(v.synth.Synthesize(ctx, text, o, emit))
}

// Close releases the voice.
func (v *Voice) Close() error { return v.synth.Close() }

// speakError marks the tts package's option errors as the engine's.
func speakError(err error) error {
	if errors.Is(err, tts.ErrBadOption) && !errors.Is(err, ErrBadOption) {
		return fmt.Errorf("%w: %v", ErrBadOption, err)
	}
	return err
}

// EspeakVoices lists espeak-ng's voices.
func EspeakVoices() ([]EspeakVoice, error) { return tts.EspeakVoices() }
