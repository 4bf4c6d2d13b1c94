package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
// Close it when done. A Piper voice is a model like the others: loaded on
// first use within the memory budget, shared by every request that opens
// it, kept loaded for the keep-alive after the last one, its syntheses
// admitted Parallel at a time, most urgent first.
type Voice struct {
	e     *Engine
	synth tts.Synthesizer
	model string
	vm    *voiceModel // nil for the built-in voice
	lease *lease
	// Priority orders this voice's syntheses among those waiting (a live
	// conversation's sentence before a batch job's); see Priority.
	Priority Priority
}

// voiceModel is a loaded Piper voice.
type voiceModel struct {
	synth *tts.Piper
	slotQueue
}

func (m *voiceModel) Close() error { return m.synth.Close() }

// OpenVoice opens the voice of model: "" or BuiltinVoice for espeak-ng's,
// or the path of a Piper voice's model (NAME.onnx) with its configuration
// at config ("": NAME.onnx.json beside it).
func (e *Engine) OpenVoice(ctx context.Context, model, config string) (*Voice, error) {
	if model == "" || model == BuiltinVoice {
		s, err := tts.NewEspeak()
		if err != nil {
			return nil, err
		}
		return &Voice{e: e, synth: s, model: BuiltinVoice}, nil
	}
	if _, err := os.Stat(model); err != nil {
		return nil, fmt.Errorf("%w: %v (owl voices lists the voices; %q is espeak-ng's)", ErrUnknownVoice, err, BuiltinVoice)
	}
	l, err := e.acquire(ctx, modelRef{path: model, kind: kindVoice}, func(pl placement) (closer, error) {
		p, err := tts.LoadPiper(ctx, model, tts.PiperOptions{Threads: e.opts.Threads, CacheDir: e.opts.CacheDir, Config: config, Device: pl.device()})
		if err != nil {
			return nil, err
		}
		return &voiceModel{synth: p, slotQueue: newSlotQueue(e.opts.Parallel, e.opts.MaxQueue, "syntheses")}, nil
	})
	if err != nil {
		return nil, err
	}
	vm := l.m.val.(*voiceModel)
	return &Voice{e: e, synth: vm.synth, model: model, vm: vm, lease: l}, nil
}

// Speakers names a multi-speaker Piper voice's speakers in id order (nil
// for a voice of one speaker).
func (v *Voice) Speakers() []string {
	if v.vm == nil {
		return nil
	}
	return v.vm.synth.Speakers()
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
// emit as soon as it is ready (see tts.Synthesizer). A Piper voice's
// synthesis first waits for one of its places.
func (v *Voice) Speak(ctx context.Context, text string, o SpeakOptions, emit func(SpokenAudio) error) error {
	if v.vm == nil {
		return speakError(v.synth.Synthesize(ctx, text, o, emit))
	}
	done, err := v.e.admit(ctx, &v.vm.slotQueue, int(v.Priority), filepath.Base(v.model))
	if err != nil {
		return err
	}
	err = v.synth.Synthesize(ctx, text, o, emit)
	done(err == nil)
	return speakError(err)
}

// Close releases the voice (a Piper voice stays loaded for its keep-alive).
func (v *Voice) Close() error {
	if v.lease != nil {
		v.lease.release(nil)
		v.lease = nil
		return nil
	}
	return v.synth.Close()
}

// speakError marks the tts package's option errors as the engine's.
// The error keeps its own words ("bad synthesis option: …"), which
// ErrBadOption's ("invalid transcription option") would not fit.
func speakError(err error) error {
	if errors.Is(err, tts.ErrBadOption) && !errors.Is(err, ErrBadOption) {
		return badSpeakOption{err}
	}
	return err
}

// badSpeakOption is a synthesis option error that is also ErrBadOption.
type badSpeakOption struct{ error }

func (e badSpeakOption) Unwrap() error        { return e.error }
func (e badSpeakOption) Is(target error) bool { return target == ErrBadOption }

// EspeakVoices lists espeak-ng's voices.
func EspeakVoices() ([]EspeakVoice, error) { return tts.EspeakVoices() }
