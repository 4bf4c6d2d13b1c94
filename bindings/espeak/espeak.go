// Package espeak speaks and phonemizes text through libespeak-ng (the
// system's, Debian's libespeak-ng-dev), over the C glue in cgo/espeakshim.
//
// espeak-ng keeps one voice and one set of parameters for the whole
// process, so every call here takes one lock, sets the voice and the
// parameters it asks for, and does its whole work before letting go: calls
// from many goroutines are safe and never see each other's settings.
package espeak

/*
#cgo CPPFLAGS: -I${SRCDIR}/../../cgo/espeakshim
#cgo pkg-config: espeak-ng
#include <stdlib.h>
#include <espeak-ng/speak_lib.h>
#include "owl_espeak.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"

	_ "github.com/owlengine/owl/cgo/espeakshim"
)

var (
	mu      sync.Mutex
	started bool
	rate    int
	initErr error
)

// Errors.
var (
	// ErrUnavailable: espeak-ng could not start (its data is missing).
	ErrUnavailable = errors.New("espeak-ng is unavailable")
	// ErrUnknownVoice: no espeak-ng voice has the name.
	ErrUnknownVoice = errors.New("unknown espeak-ng voice")
)

// start initializes espeak-ng once; mu is held.
func start() error {
	if !started {
		started = true
		r := int(C.owl_espeak_init(nil))
		if r <= 0 {
			initErr = fmt.Errorf("%w: espeak_Initialize returned %d (is espeak-ng-data installed?)", ErrUnavailable, r)
		}
		rate = r
	}
	return initErr
}

// SampleRate is the rate of espeak-ng's samples (22,050 Hz).
func SampleRate() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	if err := start(); err != nil {
		return 0, err
	}
	return rate, nil
}

// Voice is an espeak-ng voice.
type Voice struct {
	Name       string   // "English_(America)"
	Identifier string   // its file in espeak-ng-data/voices: "gmw/en-US"
	Languages  []string // most preferred first: "en-us"
	Gender     string   // "male", "female" or ""
	Age        int      // 0: not given
}

// Voices lists espeak-ng's voices (its languages; variants are not listed).
func Voices() ([]Voice, error) {
	mu.Lock()
	defer mu.Unlock()
	if err := start(); err != nil {
		return nil, err
	}
	list := C.espeak_ListVoices(nil)
	if list == nil {
		return nil, nil
	}
	var out []Voice
	for _, v := range unsafe.Slice(list, 1<<16) {
		if v == nil {
			break
		}
		voice := Voice{Name: C.GoString(v.name), Identifier: C.GoString(v.identifier), Age: int(v.age)}
		switch v.gender {
		case 1:
			voice.Gender = "male"
		case 2:
			voice.Gender = "female"
		}
		// Languages: (priority byte, NUL-terminated name)… then a NUL.
		p := unsafe.Pointer(v.languages)
		for p != nil && *(*C.char)(p) != 0 {
			name := C.GoString((*C.char)(unsafe.Add(p, 1)))
			voice.Languages = append(voice.Languages, name)
			p = unsafe.Add(p, 1+len(name)+1)
		}
		out = append(out, voice)
	}
	return out, nil
}

// Params choose the voice and how it speaks; zero fields take espeak-ng's
// defaults (those of its command's -s, -p, -a, -g).
type Params struct {
	Voice   string // a voice name, identifier or language ("en-us"); "" is "en"
	Rate    int    // words per minute, 80 to 450 (175)
	Pitch   int    // 0 to 100 (50)
	Volume  int    // amplitude, 0 to 200 (100)
	WordGap int    // extra pause between words, in 10 ms units at the default rate (0)
}

// Defaults of espeak-ng's command.
const (
	DefaultRate   = 175
	DefaultPitch  = 50
	DefaultVolume = 100
)

// Check reports parameters outside espeak-ng's ranges.
func (p Params) Check() error {
	switch {
	case p.Rate != 0 && (p.Rate < 80 || p.Rate > 450):
		return fmt.Errorf("espeak-ng rate %d words per minute: want 80 to 450", p.Rate)
	case p.Pitch < 0 || p.Pitch > 100:
		return fmt.Errorf("espeak-ng pitch %d: want 0 to 100", p.Pitch)
	case p.Volume < 0 || p.Volume > 200:
		return fmt.Errorf("espeak-ng volume %d: want 0 to 200", p.Volume)
	case p.WordGap < 0 || p.WordGap > 1000:
		return fmt.Errorf("espeak-ng word gap %d: want 0 to 1000", p.WordGap)
	}
	return nil
}

// use sets the voice and parameters; mu is held.
func use(p Params) error {
	if err := start(); err != nil {
		return err
	}
	if err := p.Check(); err != nil {
		return err
	}
	voice := p.Voice
	if voice == "" {
		voice = "en"
	}
	if !validVoiceName(voice) {
		return fmt.Errorf("%w %.60q", ErrUnknownVoice, voice)
	}
	cv := C.CString(voice)
	defer C.free(unsafe.Pointer(cv))
	if C.owl_espeak_set_voice(cv) != 0 {
		return fmt.Errorf("%w %q (owl voices lists them)", ErrUnknownVoice, voice)
	}
	orDefault := func(v, d int) C.int {
		if v == 0 {
			return C.int(d)
		}
		return C.int(v)
	}
	for _, s := range []struct {
		param C.espeak_PARAMETER
		value C.int
	}{{C.espeakRATE, orDefault(p.Rate, DefaultRate)}, {C.espeakPITCH, orDefault(p.Pitch, DefaultPitch)},
		{C.espeakVOLUME, orDefault(p.Volume, DefaultVolume)}, {C.espeakWORDGAP, C.int(p.WordGap)}} {
		if C.espeak_SetParameter(s.param, s.value, 0) != C.EE_OK {
			return fmt.Errorf("espeak-ng refused parameter %d = %d", s.param, s.value)
		}
	}
	return nil
}

// maxVoiceName bounds the names passed to espeak-ng, which copies them into
// fixed buffers (40 bytes) and aborts the process on a longer one.
const maxVoiceName = 32

// validVoiceName reports whether name can be a voice's name, identifier
// or language: short, of letters, digits and "-_+/.".
func validVoiceName(name string) bool {
	if len(name) == 0 || len(name) > maxVoiceName {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_+/.", c) >= 0) {
			return false
		}
	}
	return !strings.Contains(name, "..")
}

// maxWord bounds a run of bytes without a space handed to espeak-ng.
const maxWord = 64

// cleanText makes text safe for espeak-ng 1.51, whose reader has memory
// errors on malformed input: NUL bytes (which would end the text early)
// dropped, bytes that are no UTF-8 replaced by spaces, and words longer
// than maxWord bytes broken with spaces (no language has such words; the
// long runs are what overflows its buffers).
func cleanText(text string) string {
	text = strings.ToValidUTF8(strings.ReplaceAll(text, "\x00", ""), " ")
	var b strings.Builder
	run := 0
	for _, r := range text {
		if r == ' ' || r == '\n' || r == '\t' || r == '\r' {
			run = 0
		} else if run += utf8.RuneLen(r); run > maxWord {
			b.WriteByte(' ')
			run = utf8.RuneLen(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Synthesize speaks text (UTF-8; [[…]] holds espeak phoneme codes, as in
// the espeak-ng command; cleaned first: NUL bytes dropped, bytes that are
// no UTF-8 and overlong words broken by spaces) and returns 16-bit samples at SampleRate. The
// first synthesis of a process gives exactly the espeak-ng command's
// samples; later ones differ a little after the first few milliseconds
// (espeak-ng's generator keeps state from one text to the next), as a
// second run of the same text inside one espeak-ng process does.
func Synthesize(text string, p Params) ([]int16, error) {
	mu.Lock()
	defer mu.Unlock()
	if err := use(p); err != nil {
		return nil, err
	}
	ct := C.CString(cleanText(text))
	defer C.free(unsafe.Pointer(ct))
	var out *C.short
	var n C.size_t
	if rc := C.owl_espeak_synth(ct, &out, &n); rc != 0 {
		return nil, fmt.Errorf("espeak-ng synthesis failed (error %d)", int(rc))
	}
	defer C.free(unsafe.Pointer(out))
	samples := make([]int16, int(n))
	if n > 0 {
		copy(samples, unsafe.Slice((*int16)(unsafe.Pointer(out)), int(n)))
	}
	return samples, nil
}

// Clause is one clause of phonemized text.
type Clause struct {
	Phonemes string // espeak-ng's IPA for it
	// Text is the text espeak-ng read for the clause: the text from the
	// end of the one before to where espeak_TextToPhonemes left its
	// pointer, which is past the clause's punctuation and the character
	// after it. It is taken from the text as espeak-ng was given it
	// (cleaned: see Synthesize).
	Text string
	// Terminator is the clause's last character that is not a space before
	// the one espeak-ng stepped over ('.', ',', '?', …, or a letter when
	// the clause ended without punctuation), found as Piper's phonemizer
	// finds it.
	Terminator rune
}

// Phonemize returns the IPA phonemes of text in the voice's language,
// clause by clause, as espeak_TextToPhonemes gives them.
func Phonemize(voice, text string) ([]Clause, error) {
	mu.Lock()
	defer mu.Unlock()
	if err := use(Params{Voice: voice}); err != nil {
		return nil, err
	}
	text = cleanText(text)
	ct := C.CString(text)
	defer C.free(unsafe.Pointer(ct))
	var out []Clause
	ptr := ct
	prev := 0
	for ptr != nil {
		ph := C.owl_espeak_phonemes(&ptr)
		next := len(text) + 1
		if ptr != nil {
			next = int(uintptr(unsafe.Pointer(ptr)) - uintptr(unsafe.Pointer(ct)))
		}
		if next <= prev || next > len(text)+1 {
			break // espeak-ng moves forward; never loop or read out of bounds
		}
		c := Clause{Text: text[prev:min(next, len(text))]}
		if ph != nil {
			c.Phonemes = C.GoString(ph)
		}
		for i := next - 2; i > 0; i-- { // the byte before the one stepped over, back over spaces
			if i < len(text) && text[i] != ' ' {
				r, _ := utf8.DecodeLastRuneInString(text[:i+1])
				c.Terminator = r
				break
			}
		}
		out = append(out, c)
		prev = next
	}
	return out, nil
}
