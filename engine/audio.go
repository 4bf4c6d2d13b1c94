package engine

import (
	"io"
	"time"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/speech"
)

// Errors about audio input.
var (
	// ErrBadAudio is wrapped by errors about audio data that cannot be
	// decoded.
	ErrBadAudio = audio.ErrBadAudio
	// ErrAudioTooLong (which wraps ErrBadAudio) is returned for audio over
	// the limits.
	ErrAudioTooLong = audio.ErrTooLong
	// ErrUnsupportedAudio is returned for audio in a format owl does not
	// decode (Opus, AAC, or not audio at all).
	ErrUnsupportedAudio = audio.ErrUnsupported
)

// SampleRate is the rate of the samples the engine takes: 16 kHz mono.
const SampleRate = audio.SampleRate

// DecodeAudio decodes size bytes of an audio file read from r (WAV, FLAC,
// MP3, Ogg Vorbis; recognized by content) into 16-kHz mono samples. Audio
// longer than maxDuration (0: 4 hours) is ErrAudioTooLong, found before
// the samples are allocated where the format states its length.
func DecodeAudio(r io.ReaderAt, size int64, maxDuration time.Duration) ([]float32, error) {
	a, err := audio.Decode(r, size, audio.Limits{MaxDuration: maxDuration.Seconds()})
	if err != nil {
		return nil, err
	}
	return audio.Resample(a.Samples, a.SampleRate, audio.SampleRate)
}

// Resampler converts a stream of mono samples from one rate to another; see
// audio.Resampler. It is used by one goroutine.
type Resampler = audio.Resampler

// NewResampler returns a streaming resampler from rate from to rate to.
func NewResampler(from, to int) (*Resampler, error) { return audio.NewResampler(from, to) }

// LanguageName returns the English name of a Whisper language given by
// code or name ("en" → "english"), or "" when Whisper does not know it.
func LanguageName(code string) string {
	i, ok := speech.LanguageIndex(code)
	if !ok {
		return ""
	}
	return speech.Languages[i].Name
}

// AudioWriter encodes mono samples as they come; see audio.Writer.
type AudioWriter = audio.Writer

// AudioFormats are the formats NewAudioWriter writes: wav, pcm, flac.
var AudioFormats = audio.EncodeFormats

// NewAudioWriter returns a writer of format ("wav", "pcm", "flac") at rate.
func NewAudioWriter(w io.Writer, format string, rate int) (AudioWriter, error) {
	return audio.NewWriter(w, format, rate)
}

// Speaker plays audio on an output device; see audio.Speaker.
type Speaker = audio.Speaker

// ErrNoOutput is returned when there is no audio output device.
var ErrNoOutput = audio.ErrNoOutput

// OpenSpeaker starts playback on output device index (-1: the default) of
// mono samples at rate.
func OpenSpeaker(index, rate int) (*Speaker, error) { return audio.OpenSpeaker(index, rate) }

// 16-bit little-endian PCM, the raw sample format of the APIs; see
// audio.DecodePCM16.
var (
	DecodePCM16 = audio.DecodePCM16
	AppendPCM16 = audio.AppendPCM16
)

// G.711 telephone audio, 8 kHz and a byte a sample (μ-law and A-law); see
// audio.DecodeMuLaw.
var (
	DecodeMuLaw = audio.DecodeMuLaw
	EncodeMuLaw = audio.EncodeMuLaw
	DecodeALaw  = audio.DecodeALaw
	EncodeALaw  = audio.EncodeALaw
)

// G711Rate is the sample rate of G.711 audio.
const G711Rate = audio.G711Rate
