package speech

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/owlengine/owl/audio"
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

// ErrBadOption is wrapped by errors about options a model cannot honor.
var ErrBadOption = errors.New("invalid transcription option")

// Options control a transcription. The zero value gives the defaults of
// OpenAI's transcribe: beam search with 5 beams, temperature fallback, the
// usual thresholds, conditioning on the previous window's text.
type Options struct {
	// Language is the spoken language's code or name; "" or "auto" detects
	// it from the first window (English-only models are always English).
	Language  string
	Translate bool // translate into English instead of transcribing

	BeamSize int // beams at temperature 0 (default 5; 1 is greedy)
	BestOf   int // candidates sampled at temperatures above 0 (default 5)
	// Temperatures are tried in order until a window's decoding passes the
	// thresholds (default 0, 0.2, …, 1.0; one value disables the fallback).
	Temperatures []float64
	// CompressionRatioThreshold fails a decoding whose text compresses
	// better than this (zlib), the mark of repetition loops (default 2.4;
	// negative: off).
	CompressionRatioThreshold float64
	// LogProbThreshold fails a decoding whose average token log-probability
	// is lower (default -1; -Inf: off).
	LogProbThreshold float64
	// NoSpeechThreshold: a window whose no-speech probability exceeds it and
	// whose decoding fails LogProbThreshold holds no speech (default 0.6;
	// above 1: off).
	NoSpeechThreshold float64

	Prompt    string // initial prompt: words or style to condition the first window on
	NoContext bool   // do not condition each window on the previous window's text

	// MaxTokens caps the tokens decoded per window (default and most: half
	// the text context, 224).
	MaxTokens int

	NoTimestamps   bool // decode without timestamp tokens (one segment per window)
	WordTimestamps bool // align tokens and words to the audio (DTW over cross-attention)

	// WhisperCppRules applies whisper.cpp's variant of the timestamp rules
	// instead of OpenAI's: the first token need not be a timestamp, and a
	// timestamp may repeat the last one. For comparisons with whisper.cpp.
	WhisperCppRules bool

	SuppressBlank     *bool   // suppress a blank first token (default true)
	SuppressNonSpeech *bool   // suppress symbols that are not speech (default true)
	MaxInitialTS      float64 // latest first timestamp in seconds (default 1.0; negative: none)
	// SilenceThreshold is the RMS level below which a window holds no
	// speech and is not decoded: digital silence and faint hiss (default
	// 1e-3, −60 dBFS; negative: decode every window).
	SilenceThreshold float64
	Seed             uint64 // of the sampling at temperatures above 0

	// AudioCtx, when positive and below the model's 1500, encodes windows
	// of that many positions (AudioCtx/50 seconds) instead of 30 s: the
	// encoder's cost falls with it, which live dictation of short
	// utterances wants, at some cost in accuracy (the model was trained on
	// 30-s windows).
	AudioCtx int
	// Priority orders this transcription's graph evaluations before those
	// of concurrent transcriptions on the same model with a lower one
	// (live dictation before batch work).
	Priority int
	// VAD, when set, finds the speech first: only it is decoded, and all
	// times remain those of the original audio. VADParams tune it (zero:
	// Silero's defaults).
	VAD       audio.VAD
	VADParams audio.VADParams

	OnSegment  func(Segment)                   // called with each segment as it is decoded
	OnProgress func(done, total time.Duration) // called after each window
}

// Default values of Options.
const (
	DefaultBeamSize          = 5
	DefaultBestOf            = 5
	DefaultCompressionRatio  = 2.4
	DefaultLogProbThreshold  = -1.0
	DefaultNoSpeechThreshold = 0.6
)

// DefaultTemperatures is the fallback ladder.
var DefaultTemperatures = []float64{0, 0.2, 0.4, 0.6, 0.8, 1.0}

// withDefaults fills in the defaults and checks ranges.
func (o Options) withDefaults() (Options, error) {
	switch {
	case o.BeamSize == 0:
		o.BeamSize = DefaultBeamSize
	case o.BeamSize < 1 || o.BeamSize > maxSeq:
		return o, fmt.Errorf("%w: beam size %d (want 1 to %d)", ErrBadOption, o.BeamSize, maxSeq)
	}
	switch {
	case o.BestOf == 0:
		o.BestOf = DefaultBestOf
	case o.BestOf < 1 || o.BestOf > maxSeq:
		return o, fmt.Errorf("%w: best-of %d (want 1 to %d)", ErrBadOption, o.BestOf, maxSeq)
	}
	if o.Temperatures == nil {
		o.Temperatures = DefaultTemperatures
	}
	for _, t := range o.Temperatures {
		if t < 0 || t > 2 || math.IsNaN(t) {
			return o, fmt.Errorf("%w: temperature %v (want 0 to 2)", ErrBadOption, t)
		}
	}
	if len(o.Temperatures) == 0 {
		return o, fmt.Errorf("%w: no temperatures", ErrBadOption)
	}
	if o.AudioCtx < 0 {
		return o, fmt.Errorf("%w: audio context %d", ErrBadOption, o.AudioCtx)
	}
	if o.MaxTokens < 0 {
		return o, fmt.Errorf("%w: max tokens %d", ErrBadOption, o.MaxTokens)
	}
	if o.CompressionRatioThreshold == 0 {
		o.CompressionRatioThreshold = DefaultCompressionRatio
	}
	if o.LogProbThreshold == 0 {
		o.LogProbThreshold = DefaultLogProbThreshold
	}
	if o.NoSpeechThreshold == 0 {
		o.NoSpeechThreshold = DefaultNoSpeechThreshold
	}
	if math.IsNaN(o.CompressionRatioThreshold) || math.IsNaN(o.LogProbThreshold) || math.IsNaN(o.NoSpeechThreshold) {
		return o, fmt.Errorf("%w: a threshold is NaN", ErrBadOption)
	}
	if o.MaxInitialTS == 0 {
		o.MaxInitialTS = 1
	}
	if o.SilenceThreshold == 0 {
		o.SilenceThreshold = 1e-3
	}
	if o.VADParams != (audio.VADParams{}) {
		if err := o.VADParams.Check(); err != nil {
			return o, fmt.Errorf("%w: %v", ErrBadOption, err)
		}
	}
	o.Language = strings.ToLower(strings.TrimSpace(o.Language))
	if o.Language == "auto" {
		o.Language = ""
	}
	return o, nil
}

// Token is a decoded token.
type Token struct {
	ID         int
	Text       string
	Prob       float32 // probability under the filtered distribution it was chosen from
	LogProb    float32
	Start, End time.Duration // when aligned (WordTimestamps)
}

// Word is a word aligned to the audio.
type Word struct {
	Text       string
	Start, End time.Duration
	Prob       float32 // mean probability of its tokens
}

// Segment is a stretch of recognized speech.
type Segment struct {
	Start, End       time.Duration
	Text             string
	Tokens           []Token // text and timestamp tokens
	Words            []Word  // when aligned (WordTimestamps)
	Temperature      float64 // of the decoding kept for its window
	AvgLogProb       float64
	CompressionRatio float64
	NoSpeechProb     float64
}

// Timings break down where a transcription spent its time.
type Timings struct {
	Mel, Encode, Decode, Align time.Duration
	// DecodeGraphs is the part of Decode spent evaluating the decoder
	// (steps, prompts and beam reordering); the rest is the decoding
	// rules and search over the logits.
	DecodeGraphs time.Duration
	Windows      int // 30-second windows encoded
	DecodeSteps  int // decoder evaluations (a prompt counts as one)
	Tokens       int // tokens generated, over all decodings
	Fallbacks    int // decodings repeated at a higher temperature
}

// Transcript is the result of a transcription.
type Transcript struct {
	Language      string             // code of the language transcribed
	LanguageProb  float64            // its probability, when detected
	LanguageProbs map[string]float64 // every language's, when detected
	Duration      time.Duration
	Segments      []Segment
	Timings       Timings
}

// Text joins the segments' text.
func (t *Transcript) Text() string {
	var b strings.Builder
	for _, s := range t.Segments {
		b.WriteString(s.Text)
	}
	return strings.TrimSpace(b.String())
}
