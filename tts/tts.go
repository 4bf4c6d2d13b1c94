// Package tts speaks text: the synthesizers owl has (espeak-ng's own
// voice, always there; Piper's VITS voices on ggml) behind one interface,
// and what they share — sentence splitting, so a long text is spoken
// sentence by sentence and the first sentence's audio is ready while the
// rest is computed, and the Piper phonemizer over espeak-ng.
package tts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Synthesizer turns text into speech.
type Synthesizer interface {
	// SampleRate is the rate of the samples it emits.
	SampleRate() int
	// Synthesize speaks text sentence by sentence, handing each
	// sentence's samples to emit as soon as they are ready; an error from
	// emit stops it and is returned. It stops between sentences when ctx
	// ends.
	Synthesize(ctx context.Context, text string, o Options, emit func(Audio) error) error
	// Describe names the voice for people: "espeak-ng en-us".
	Describe() string
	Close() error
}

// Options tune a synthesis; zero values take the voice's defaults.
type Options struct {
	// Voice selects espeak-ng's voice or language ("en-us", "de"); Piper
	// voices are chosen by their model and ignore it.
	Voice string
	// Speaker is a multi-speaker Piper voice's speaker id.
	Speaker int
	// Speed scales the pace: 2 speaks twice as fast (0: 1).
	Speed float64
	// Pitch is espeak-ng's base pitch, 0 to 100 (0: its 50).
	Pitch int
	// NoiseScale and NoiseW replace a Piper voice's noise of the prior and
	// of the duration predictor (nil: the voice's own, from its
	// configuration; 0 is no noise).
	NoiseScale, NoiseW *float64
}

// Audio is the speech of one sentence.
type Audio struct {
	Samples  []float32 // mono, in [-1, 1], at the synthesizer's SampleRate
	Sentence string    // the text spoken
	Index    int       // of the sentence, from 0
}

// Errors.
var (
	// ErrBadOption: options a voice cannot honor.
	ErrBadOption = errors.New("bad synthesis option")
	// ErrUnknownVoice: no such voice.
	ErrUnknownVoice = errors.New("unknown voice")
)

// MaxSpeed and MinSpeed bound Options.Speed (OpenAI's speech API takes
// 0.25 to 4).
const (
	MinSpeed = 0.25
	MaxSpeed = 4
)

// Check reports options out of range.
func (o Options) Check() error {
	switch {
	case o.Speed != 0 && (o.Speed < MinSpeed || o.Speed > MaxSpeed):
		return errorf("speed %v: want %v to %v", o.Speed, MinSpeed, MaxSpeed)
	case o.Pitch < 0 || o.Pitch > 100:
		return errorf("pitch %d: want 0 to 100", o.Pitch)
	case o.Speaker < 0:
		return errorf("speaker %d must not be negative", o.Speaker)
	case o.NoiseScale != nil && (*o.NoiseScale < 0 || *o.NoiseScale > 2):
		return errorf("noise scale %v: want 0 to 2", *o.NoiseScale)
	case o.NoiseW != nil && (*o.NoiseW < 0 || *o.NoiseW > 2):
		return errorf("noise width %v: want 0 to 2", *o.NoiseW)
	}
	return nil
}

// Sentences splits text into the sentences it is spoken in: each ends
// after ., !, ?, … (or their full-width forms, and ; and : when the piece
// is long) followed by a space or the end, or at a blank line or a line
// break; each keeps its punctuation, spaces around are dropped, empty
// pieces are skipped. Decimal points ("3.5") and common abbreviations
// ("Dr.", "e.g.") do not end a sentence.
func Sentences(text string) []string {
	var out []string
	start := 0
	emit := func(end int) {
		if s := strings.TrimSpace(text[start:end]); s != "" && strings.IndexFunc(s, isSpoken) >= 0 {
			out = append(out, s)
		}
		start = end
	}
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		next := i + size
		switch {
		case r == '\n':
			emit(next)
		case strings.ContainsRune("。！？", r):
			emit(next)
		case strings.ContainsRune(".!?…", r):
			// Runs of punctuation and closing quotes stay with the sentence.
			for next < len(text) {
				r2, s2 := utf8.DecodeRuneInString(text[next:])
				if !strings.ContainsRune(".!?…\"'”’)]", r2) {
					break
				}
				next += s2
			}
			after, _ := utf8.DecodeRuneInString(text[next:])
			if next < len(text) && !unicode.IsSpace(after) {
				break // "3.5", "e.g.x", "owl.example"
			}
			if r == '.' && abbreviation(text[start:i]) {
				break
			}
			emit(next)
		}
		i = next
	}
	emit(len(text))
	return out
}

// isSpoken reports whether r is something a voice says (a letter or digit).
func isSpoken(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// abbreviations end with a period without ending a sentence.
var abbreviations = map[string]bool{"mr": true, "mrs": true, "ms": true, "dr": true, "prof": true, "st": true,
	"vs": true, "etc": false, "e.g": true, "i.e": true, "jr": true, "sr": true, "no": false, "fig": true, "approx": true}

// abbreviation reports whether the word before a period is a known
// abbreviation or a single letter ("J. Smith").
func abbreviation(before string) bool {
	f := strings.Fields(before)
	if len(f) == 0 {
		return false
	}
	w := strings.ToLower(strings.TrimLeft(f[len(f)-1], "(\"'"))
	return abbreviations[w] || utf8.RuneCountInString(w) == 1 && unicode.IsLetter([]rune(w)[0])
}

func errorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadOption}, args...)...)
}
