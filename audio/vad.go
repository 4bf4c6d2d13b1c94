package audio

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// VAD gives the probability of speech in consecutive chunks of a 16-kHz
// stream. Implementations carry state from call to call; Reset starts a new
// stream.
type VAD interface {
	// ChunkSamples is the number of samples each probability covers.
	ChunkSamples() int
	// Probabilities returns one probability per whole chunk of samples (a
	// partial last chunk counts as a chunk, padded with silence).
	Probabilities(samples []float32) ([]float32, error)
	// Reset forgets the stream so far.
	Reset()
}

// VADParams turn probabilities into speech segments, as Silero's
// get_speech_timestamps does.
type VADParams struct {
	Threshold  float64       // speech starts at this probability (0.5)
	MinSpeech  time.Duration // shorter speech is dropped (250 ms)
	MinSilence time.Duration // shorter pauses do not end speech (100 ms)
	Pad        time.Duration // added to each side of a segment (30 ms)
	MaxSpeech  time.Duration // longer speech is split at its longest pause (0: no limit)
}

// DefaultVADParams are Silero's defaults.
func DefaultVADParams() VADParams {
	return VADParams{Threshold: 0.5, MinSpeech: 250 * time.Millisecond, MinSilence: 100 * time.Millisecond, Pad: 30 * time.Millisecond}
}

// Check reports parameters out of range.
func (p VADParams) Check() error {
	switch {
	case !(p.Threshold > 0 && p.Threshold < 1):
		return fmt.Errorf("VAD threshold %v (want between 0 and 1)", p.Threshold)
	case p.MinSpeech < 0 || p.MinSilence < 0 || p.Pad < 0 || p.MaxSpeech < 0:
		return fmt.Errorf("VAD durations must not be negative")
	case p.MaxSpeech > 0 && p.MaxSpeech < p.MinSpeech:
		return fmt.Errorf("VAD maximum speech %v is under the minimum %v", p.MaxSpeech, p.MinSpeech)
	}
	return nil
}

// Span is a stretch of samples [Start, End).
type Span struct{ Start, End int }

func samplesOf(d time.Duration) int { return int(d.Seconds() * SampleRate) }

// SpeechSegments finds the speech in total samples from per-chunk
// probabilities: speech starts when the probability reaches the threshold
// and ends after MinSilence below threshold−0.15; segments shorter than
// MinSpeech are dropped; each is padded by Pad (halving the gap between
// neighbours closer than twice that).
func SpeechSegments(probs []float32, chunk, total int, p VADParams) []Span {
	neg := p.Threshold - 0.15
	minSilence, minSpeech, pad := samplesOf(p.MinSilence), samplesOf(p.MinSpeech), samplesOf(p.Pad)
	var spans []Span
	triggered := false
	start, tempEnd := 0, -1
	for i, pr := range probs {
		pos := i * chunk
		prob := float64(pr)
		if prob >= p.Threshold {
			tempEnd = -1
			if !triggered {
				triggered, start = true, pos
			}
			continue
		}
		if prob < neg && triggered {
			if tempEnd < 0 {
				tempEnd = pos
			}
			if pos-tempEnd < minSilence {
				continue
			}
			if tempEnd-start > minSpeech {
				spans = append(spans, Span{start, tempEnd})
			}
			triggered, tempEnd = false, -1
		}
	}
	if triggered && total-start > minSpeech {
		spans = append(spans, Span{start, total})
	}
	if limit := samplesOf(p.MaxSpeech); limit > 0 {
		spans = splitLong(spans, probs, chunk, limit)
	}
	for i := range spans {
		if i == 0 {
			spans[i].Start = max(0, spans[i].Start-pad)
		}
		if i < len(spans)-1 {
			gap := spans[i+1].Start - spans[i].End
			if gap < 2*pad {
				spans[i].End += gap / 2
				spans[i+1].Start -= gap / 2
			} else {
				spans[i].End = min(total, spans[i].End+pad)
				spans[i+1].Start = max(0, spans[i+1].Start-pad)
			}
		} else {
			spans[i].End = min(total, spans[i].End+pad)
		}
	}
	return spans
}

// splitLong cuts spans longer than max at their least probable chunk.
func splitLong(spans []Span, probs []float32, chunk, limit int) []Span {
	var out []Span
	for len(spans) > 0 {
		s := spans[0]
		spans = spans[1:]
		if s.End-s.Start <= limit {
			out = append(out, s)
			continue
		}
		// The quietest chunk in the middle half of the allowed length.
		lo, hi := (s.Start+limit/4)/chunk, min((s.Start+limit)/chunk, len(probs))
		cut := lo
		for i := lo; i < hi; i++ {
			if probs[i] < probs[cut] {
				cut = i
			}
		}
		at := max(cut*chunk, s.Start+chunk)
		out = append(out, Span{s.Start, at})
		spans = append([]Span{{at, s.End}}, spans...)
	}
	return out
}

// EnergyVAD is a baseline detector: a chunk is speech when its level rises
// well above the noise floor, which it tracks as the stream goes (quickly
// down to quieter chunks, slowly up). It needs no model.
type EnergyVAD struct {
	floor float64 // dBFS
	fresh bool
}

// NewEnergyVAD returns an energy-based detector.
func NewEnergyVAD() *EnergyVAD { return &EnergyVAD{fresh: true} }

// ChunkSamples is 512 samples (32 ms), as Silero's.
func (e *EnergyVAD) ChunkSamples() int { return 512 }

// Reset forgets the noise floor.
func (e *EnergyVAD) Reset() { e.fresh = true }

const (
	energyAboveFloor = 15.0  // dB above the floor at which speech is likely
	energyMinLevel   = -55.0 // dBFS below which nothing is speech
	energyFloorRise  = 0.05  // dB per chunk the floor may rise (1.5 dB/s)
)

// Probabilities maps each chunk's level over the noise floor to (0, 1).
func (e *EnergyVAD) Probabilities(samples []float32) ([]float32, error) {
	n := e.ChunkSamples()
	var levels []float64
	for c := 0; c < len(samples); c += n {
		sum := 0.0
		for _, s := range samples[c:min(len(samples), c+n)] {
			sum += float64(s) * float64(s)
		}
		levels = append(levels, 10*math.Log10(sum/float64(n)+1e-12))
	}
	if e.fresh && len(levels) > 0 {
		// Given half a second or more, start from a low percentile of its
		// levels; a live stream starts from a quiet room's -60 dBFS (it may
		// open with speech, which must not become the floor).
		e.floor = -60
		if len(levels) >= 16 {
			sorted := slices.Clone(levels)
			slices.Sort(sorted)
			e.floor = max(sorted[len(sorted)/10], -90)
		}
		e.fresh = false
	}
	out := make([]float32, len(levels))
	for i, db := range levels {
		e.floor = math.Min(e.floor+energyFloorRise, math.Max(db, -90))
		if db < energyMinLevel {
			continue
		}
		out[i] = float32(1 / (1 + math.Exp(-(db-e.floor-energyAboveFloor)/2)))
	}
	return out, nil
}
