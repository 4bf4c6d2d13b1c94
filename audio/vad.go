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

// VADParams turn probabilities into speech segments, as whisper.cpp's VAD
// does (Silero's get_speech_timestamps, with neighbours closer than
// MergeGap joined).
type VADParams struct {
	Threshold  float64       // speech starts at this probability (0.5)
	MinSpeech  time.Duration // shorter speech is dropped (250 ms)
	MinSilence time.Duration // shorter pauses do not end speech (100 ms)
	Pad        time.Duration // added to each side of a segment (30 ms)
	MaxSpeech  time.Duration // longer speech is split (0: no limit); see SpeechSegments
}

// DefaultVADParams are Silero's and whisper.cpp's defaults.
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

const (
	// MergeGap: segments closer than this are joined (whisper.cpp's rule).
	MergeGap = 200 * time.Millisecond
	// splitPause is the pause that marks where speech longer than
	// MaxSpeech may be split (Silero's 98 ms).
	splitPause = 98 * time.Millisecond
)

// SpeechSegments finds the speech in total samples from per-chunk
// probabilities, by the rules whisper.cpp's VAD applies: speech starts
// when the probability reaches the threshold and ends once it has stayed
// below threshold−0.15 (at least 0.01) for MinSilence; speech longer than
// MaxSpeech (less a chunk and both pads) ends at its last pause of over
// 98 ms, or where it reached the limit when it had none; segments closer
// than MergeGap are joined unless that makes them longer than the limit,
// and those shorter than MinSpeech dropped; each is
// padded by Pad (halving the gap between neighbours closer than twice
// that).
func SpeechSegments(probs []float32, chunk, total int, p VADParams) []Span {
	neg := max(p.Threshold-0.15, 0.01)
	minSilence, minSpeech, pad := samplesOf(p.MinSilence), samplesOf(p.MinSpeech), samplesOf(p.Pad)
	maxSpeech := math.MaxInt / 2
	if p.MaxSpeech > 0 {
		if m := samplesOf(p.MaxSpeech) - chunk - 2*pad; m > 0 {
			maxSpeech = m
		}
	}
	pause := samplesOf(splitPause)
	var spans []Span
	inSpeech := false
	// Where the current speech began; where the pause under way began;
	// where the last pause long enough to split at began, and where the
	// speech after it resumed (-1: none).
	start, pauseAt, splitAt, resumeAt := 0, -1, -1, -1
	for i, pr := range probs {
		pos, prob := i*chunk, float64(pr)
		if prob >= p.Threshold && pauseAt >= 0 {
			pauseAt = -1
			if resumeAt < splitAt {
				resumeAt = pos
			}
		}
		if prob >= p.Threshold && !inSpeech {
			inSpeech, start = true, pos
			continue
		}
		if inSpeech && pos-start > maxSpeech {
			if splitAt < 0 {
				spans = append(spans, Span{start, pos})
				inSpeech, pauseAt, splitAt, resumeAt = false, -1, -1, -1
				continue
			}
			spans = append(spans, Span{start, splitAt})
			if resumeAt < splitAt { // still in the pause
				inSpeech = false
			} else {
				start = resumeAt
			}
			pauseAt, splitAt, resumeAt = -1, -1, -1
		}
		if prob < neg && inSpeech {
			if pauseAt < 0 {
				pauseAt = pos
			}
			if pos-pauseAt > pause {
				splitAt = pauseAt
			}
			if pos-pauseAt < minSilence {
				continue
			}
			if pauseAt-start > minSpeech {
				spans = append(spans, Span{start, pauseAt})
			}
			inSpeech, pauseAt, splitAt, resumeAt = false, -1, -1, -1
		}
	}
	if inSpeech && total-start > minSpeech {
		spans = append(spans, Span{start, total})
	}
	merged := spans[:0]
	for _, s := range spans {
		// (whisper.cpp joins them even past MaxSpeech, undoing its splits.)
		if n := len(merged); n > 0 && s.Start-merged[n-1].End < samplesOf(MergeGap) && s.End-merged[n-1].Start <= maxSpeech {
			merged[n-1].End = s.End
			continue
		}
		merged = append(merged, s)
	}
	spans = slices.DeleteFunc(merged, func(s Span) bool { return s.End-s.Start < minSpeech })
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
