package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"unicode/utf8"
)

// ErrNotPiper is returned for a voice file that is not a Piper voice.
var ErrNotPiper = errors.New("not a Piper voice")

// PiperConfig is a Piper voice's *.onnx.json: what the model file does not
// say about itself.
type PiperConfig struct {
	Audio struct {
		SampleRate int    `json:"sample_rate"`
		Quality    string `json:"quality,omitempty"` // x_low, low, medium, high
	} `json:"audio"`
	Espeak struct {
		Voice string `json:"voice"` // espeak-ng voice of the phonemes: "en-us"
	} `json:"espeak"`
	Language struct {
		Code string `json:"code,omitempty"` // "en_US"
	} `json:"language"`
	Inference struct {
		NoiseScale  float64 `json:"noise_scale"`
		LengthScale float64 `json:"length_scale"`
		NoiseW      float64 `json:"noise_w"`
	} `json:"inference"`
	// PhonemeType is "espeak" (phonemes from espeak-ng) or "text" (the
	// text's own characters).
	PhonemeType string `json:"phoneme_type"`
	// PhonemeMap replaces phonemes by others before they become ids.
	PhonemeMap map[string][]string `json:"phoneme_map,omitempty"`
	// PhonemeIDMap gives each phoneme (one code point) its ids.
	PhonemeIDMap map[string][]int `json:"phoneme_id_map"`
	NumSymbols   int              `json:"num_symbols"`
	NumSpeakers  int              `json:"num_speakers"`
	SpeakerIDMap map[string]int   `json:"speaker_id_map,omitempty"`
	PiperVersion string           `json:"piper_version,omitempty"`
	Dataset      string           `json:"dataset,omitempty"`
}

// Piper's special phonemes: padding (between every two phonemes), the
// beginning and the end of a sentence.
const (
	PiperPad = "_"
	PiperBOS = "^"
	PiperEOS = "$"
)

// ParsePiperConfig parses and checks a voice's *.onnx.json.
func ParsePiperConfig(b []byte) (*PiperConfig, error) {
	var c PiperConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: its .onnx.json is not valid JSON: %v", ErrNotPiper, err)
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// check reports what a runtime could not use.
func (c *PiperConfig) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: .onnx.json: "+format, append([]any{ErrNotPiper}, args...)...)
	}
	switch {
	case c.Audio.SampleRate < 8000 || c.Audio.SampleRate > 48000:
		return bad("audio.sample_rate %d (want 8000 to 48000)", c.Audio.SampleRate)
	case len(c.PhonemeIDMap) == 0:
		return bad("no phoneme_id_map")
	case c.PhonemeType != "" && c.PhonemeType != "espeak" && c.PhonemeType != "text":
		return bad("phoneme_type %q (want espeak or text)", c.PhonemeType)
	case (c.PhonemeType == "" || c.PhonemeType == "espeak") && c.Espeak.Voice == "":
		return bad("no espeak.voice for its espeak phonemes")
	case c.NumSpeakers < 0 || c.NumSpeakers > 1<<16:
		return bad("num_speakers %d", c.NumSpeakers)
	case c.NumSymbols < 0 || c.NumSymbols > 1<<20:
		return bad("num_symbols %d", c.NumSymbols)
	}
	for _, s := range []struct {
		name  string
		value float64
	}{{"noise_scale", c.Inference.NoiseScale}, {"length_scale", c.Inference.LengthScale}, {"noise_w", c.Inference.NoiseW}} {
		if s.value < 0 || s.value > 100 {
			return bad("inference.%s %v", s.name, s.value)
		}
	}
	for _, p := range []string{PiperPad, PiperBOS, PiperEOS} {
		if len(c.PhonemeIDMap[p]) == 0 {
			return bad("phoneme_id_map has no %q", p)
		}
	}
	for p, ids := range c.PhonemeIDMap {
		if utf8.RuneCountInString(p) != 1 {
			return bad("phoneme_id_map key %q is not one character", p)
		}
		for _, id := range ids {
			if id < 0 || c.NumSymbols > 0 && id >= c.NumSymbols {
				return bad("phoneme %q has id %d (num_symbols %d)", p, id, c.NumSymbols)
			}
		}
	}
	for p := range c.PhonemeMap {
		if utf8.RuneCountInString(p) != 1 {
			return bad("phoneme_map key %q is not one character", p)
		}
	}
	for name, id := range c.SpeakerIDMap {
		if id < 0 || id >= max(c.NumSpeakers, 1) {
			return bad("speaker %q has id %d of %d speakers", name, id, c.NumSpeakers)
		}
	}
	return nil
}

// Speakers lists the named speakers in id order.
func (c *PiperConfig) Speakers() []string {
	names := make([]string, 0, len(c.SpeakerIDMap))
	for n := range c.SpeakerIDMap {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return c.SpeakerIDMap[names[i]] < c.SpeakerIDMap[names[j]] })
	return names
}
