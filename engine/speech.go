package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/speech"
)

// Types of the speech package that the API passes through.
type (
	// TranscribeOptions control a transcription; see speech.Options.
	TranscribeOptions = speech.Options
	// Transcript is a finished transcription.
	Transcript = speech.Transcript
	// Segment is a stretch of recognized speech.
	Segment = speech.Segment
)

// ErrBadOption is returned for transcription options a model cannot honor.
var ErrBadOption = speech.ErrBadOption

// Decoding defaults.
const (
	DefaultBeamSize          = speech.DefaultBeamSize
	DefaultBestOf            = speech.DefaultBestOf
	DefaultCompressionRatio  = speech.DefaultCompressionRatio
	DefaultLogProbThreshold  = speech.DefaultLogProbThreshold
	DefaultNoSpeechThreshold = speech.DefaultNoSpeechThreshold
)

// TranscriptFormats lists the formats WriteTranscript knows.
var TranscriptFormats = speech.Formats

// WriteTranscript renders t in format ("txt", "json").
var WriteTranscript = speech.Write

// TranscribeRequest is speech to recognize: samples (16 kHz mono), or a file.
type TranscribeRequest struct {
	Model   string    // path of a whisper.cpp model file (ggml-*.bin)
	Samples []float32 // 16-kHz mono samples in [-1, 1]; or
	File    string    // an audio file to read
	// VAD decodes only the speech a detector finds: "energy", or "silero"
	// with VADModel the path of a ggml Silero model (ggml-silero-*.bin).
	VAD      string
	VADModel string
	// KeepAlive, when set, replaces the model's keep-alive once this
	// request ends (0: unload at once when idle; negative: keep loaded).
	KeepAlive *time.Duration
	TranscribeOptions
}

// VADParams tune voice activity detection.
type VADParams = audio.VADParams

// DefaultStreamVADParams are the defaults of live transcription: those of
// DefaultVADParams with utterances ending after 500 ms of silence.
func DefaultStreamVADParams() VADParams { return speech.DefaultStreamVADParams() }

// DefaultVADParams are the usual voice activity parameters (threshold 0.5,
// minimum speech 250 ms, minimum silence 100 ms, padding 30 ms).
func DefaultVADParams() audio.VADParams { return audio.DefaultVADParams() }

// NewVAD returns a voice activity detector: "energy", or "silero" loaded
// from model. Close it when done (a no-op for energy).
func (e *Engine) NewVAD(ctx context.Context, kind, model string) (VAD, error) {
	switch kind {
	case "energy":
		return energyVAD{audio.NewEnergyVAD()}, nil
	case "silero":
		if model == "" {
			return nil, fmt.Errorf("%w: the silero VAD needs a model file (ggml-silero-v5.1.2.bin)", ErrBadOption)
		}
		return speech.LoadSilero(ctx, model, speech.LoadOptions{CacheDir: e.opts.CacheDir})
	}
	return nil, fmt.Errorf("%w: VAD %q (want energy or silero)", ErrBadOption, kind)
}

// VAD is a voice activity detector the engine made.
type VAD interface {
	audio.VAD
	Close() error
}

type energyVAD struct{ *audio.EnergyVAD }

func (energyVAD) Close() error     { return nil }
func (energyVAD) Describe() string { return "energy" }

// SpeechRequest asks where the speech in audio is: samples (16 kHz mono)
// or a file, with a detector as in TranscribeRequest ("energy" when VAD is
// empty).
type SpeechRequest struct {
	Samples  []float32
	File     string
	VAD      string
	VADModel string
	VADParams
}

// SpeechSpan is a stretch of speech in audio.
type SpeechSpan struct {
	Start, End time.Duration
}

// Speech is what DetectSpeech found.
type Speech struct {
	Detector string        // "energy", "silero-16k v6.2.0"
	Duration time.Duration // of the audio
	Segments []SpeechSpan  // in order, not overlapping
}

// DetectSpeech finds the speech segments of req's audio, the segments a
// transcription with the same VAD decodes (whisper.cpp's
// vad-speech-segments). Zero VADParams are the defaults.
func (e *Engine) DetectSpeech(ctx context.Context, req SpeechRequest) (*Speech, error) {
	params := req.VADParams
	if params == (VADParams{}) {
		params = DefaultVADParams()
	}
	if err := params.Check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadOption, err)
	}
	kind := req.VAD
	if kind == "" {
		kind = "energy"
	}
	samples := req.Samples
	if req.File != "" {
		var err error
		if samples, err = ReadAudio(req.File); err != nil {
			return nil, err
		}
	}
	vad, err := e.NewVAD(ctx, kind, req.VADModel)
	if err != nil {
		return nil, err
	}
	defer vad.Close()
	probs, err := vad.Probabilities(samples)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sp := &Speech{Detector: kind, Duration: sampleTime(len(samples))}
	if d, ok := vad.(interface{ Describe() string }); ok {
		sp.Detector = d.Describe()
	}
	for _, s := range audio.SpeechSegments(probs, vad.ChunkSamples(), len(samples), params) {
		sp.Segments = append(sp.Segments, SpeechSpan{sampleTime(s.Start), sampleTime(s.End)})
	}
	return sp, nil
}

// sampleTime is the time of n samples at 16 kHz.
func sampleTime(n int) time.Duration {
	return time.Duration(n) * time.Second / audio.SampleRate
}

// speechModel returns a lease on the speech model at path, loading it
// when needed.
func (e *Engine) speechModel(ctx context.Context, path string) (*speechModel, *lease, error) {
	l, err := e.acquire(ctx, modelRef{path: path, kind: kindSpeech}, func(p placement) (closer, error) {
		rec, err := speech.Open(ctx, e.opts.SpeechBackend, path, speech.LoadOptions{Threads: e.opts.Threads, FlashAttn: e.opts.FlashAttn, CacheDir: e.opts.CacheDir, Gate: e.gate, Device: p.device()})
		if err != nil {
			return nil, err
		}
		return &speechModel{rec: rec, slotQueue: newSlotQueue(e.opts.Parallel, e.opts.MaxQueue, "transcriptions")}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return l.m.val.(*speechModel), l, nil
}

func describe(r speech.Recognizer) string {
	if d, ok := r.(speech.Describer); ok {
		return d.Describe()
	}
	return fmt.Sprintf("%T", r)
}

// ReadAudio decodes an audio file (WAV, FLAC, MP3, Ogg Vorbis; recognized
// by content) into 16-kHz mono samples.
func ReadAudio(path string) ([]float32, error) {
	return audio.Load(path, audio.Limits{})
}

// Transcribe recognizes the speech in req.
func (e *Engine) Transcribe(ctx context.Context, req TranscribeRequest) (*Transcript, error) {
	samples := req.Samples
	if req.File != "" {
		var err error
		if samples, err = ReadAudio(req.File); err != nil {
			return nil, err
		}
	}
	m, l, err := e.speechModel(ctx, req.Model)
	if err != nil {
		return nil, err
	}
	defer l.release(req.KeepAlive)
	done, err := e.admit(ctx, &m.slotQueue, req.Priority, filepath.Base(req.Model))
	if err != nil {
		return nil, err
	}
	o := req.TranscribeOptions
	if req.VAD != "" {
		vad, err := e.NewVAD(ctx, req.VAD, req.VADModel)
		if err != nil {
			done(false)
			return nil, err
		}
		defer vad.Close()
		o.VAD = vad
	}
	tr, err := m.rec.Transcribe(ctx, samples, o)
	done(err == nil)
	return tr, err
}

// DescribeSpeech loads the speech model at path and describes it.
func (e *Engine) DescribeSpeech(ctx context.Context, path string) (string, error) {
	m, l, err := e.speechModel(ctx, path)
	if err != nil {
		return "", err
	}
	defer l.release(nil)
	return describe(m.rec), nil
}
