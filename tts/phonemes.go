package tts

import (
	"errors"
	"fmt"

	"golang.org/x/text/unicode/norm"

	"github.com/owlengine/owl/bindings/espeak"
	"github.com/owlengine/owl/models"
)

// Phonemes is one sentence's phonemes, one code point each.
type Phonemes []rune

// defaultPhonemeMaps are the replacements Piper makes for a voice whose
// configuration names none (Brazilian Portuguese's "c" is spoken "k").
var defaultPhonemeMaps = map[string]map[rune][]rune{"pt-br": {'c': {'k'}}}

// PhonemizeEspeak turns text into sentences of phonemes the way Piper's
// phonemizer does over espeak-ng: each clause's IPA decomposed (NFD) into
// code points, mapped by phonemeMap (nil: Piper's default for the voice),
// language switches such as "(en)" dropped, and the clause's punctuation
// kept — ". ? !" end the sentence, ", : ;" are followed by a space.
func PhonemizeEspeak(voice, text string, phonemeMap map[rune][]rune) ([]Phonemes, error) {
	clauses, err := espeak.Phonemize(voice, text)
	if errors.Is(err, espeak.ErrUnknownVoice) {
		return nil, fmt.Errorf("%w: %v", ErrUnknownVoice, err)
	}
	if err != nil {
		return nil, err
	}
	if phonemeMap == nil {
		phonemeMap = defaultPhonemeMaps[voice]
	}
	var out []Phonemes
	var sentence Phonemes
	open := false
	for _, c := range clauses {
		if !open {
			sentence, open = nil, true
		}
		inFlag := false
		for _, r := range norm.NFD.String(c.Phonemes) {
			switch {
			case inFlag:
				inFlag = r != ')'
			case r == '(':
				inFlag = true
			default:
				if m, ok := phonemeMap[r]; ok {
					sentence = append(sentence, m...)
				} else {
					sentence = append(sentence, r)
				}
			}
		}
		switch c.Terminator {
		case '.', '?', '!':
			sentence = append(sentence, c.Terminator)
		case ',', ':', ';':
			sentence = append(sentence, c.Terminator, ' ')
		}
		if c.Terminator == '.' || c.Terminator == '?' || c.Terminator == '!' {
			out = append(out, sentence)
			open = false
		}
	}
	if open && len(sentence) > 0 {
		out = append(out, sentence)
	}
	return out, nil
}

// PhonemizeText is Piper's "text" phoneme type: the text's own characters,
// decomposed (NFD), as one sentence.
func PhonemizeText(text string, phonemeMap map[rune][]rune) []Phonemes {
	var s Phonemes
	for _, r := range norm.NFD.String(text) {
		if m, ok := phonemeMap[r]; ok {
			s = append(s, m...)
		} else {
			s = append(s, r)
		}
	}
	if len(s) == 0 {
		return nil
	}
	return []Phonemes{s}
}

// PhonemeIDs maps a sentence's phonemes to a voice's ids as Piper does:
// the beginning-of-sentence ids and a pad, each phoneme's ids followed by
// a pad, the end-of-sentence ids. Phonemes the voice has no ids for are
// left out and counted in missing.
func PhonemeIDs(c *models.PiperConfig, s Phonemes) (ids []int64, missing map[rune]int) {
	add := func(p string) {
		for _, id := range c.PhonemeIDMap[p] {
			ids = append(ids, int64(id))
		}
	}
	add(models.PiperBOS)
	add(models.PiperPad)
	for _, r := range s {
		if _, ok := c.PhonemeIDMap[string(r)]; !ok {
			if missing == nil {
				missing = map[rune]int{}
			}
			missing[r]++
			continue
		}
		add(string(r))
		add(models.PiperPad)
	}
	add(models.PiperEOS)
	return ids, missing
}

// ConfigPhonemeMap is a configuration's phoneme_map as code points (nil
// when it has none, so that Piper's defaults apply).
func ConfigPhonemeMap(c *models.PiperConfig) map[rune][]rune {
	if len(c.PhonemeMap) == 0 {
		return nil
	}
	m := map[rune][]rune{}
	for from, to := range c.PhonemeMap {
		r := []rune(from)[0] // ParsePiperConfig checked: one code point
		for _, t := range to {
			m[r] = append(m[r], []rune(t)...)
		}
	}
	return m
}
