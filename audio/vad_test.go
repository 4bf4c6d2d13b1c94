package audio

import (
	"math"
	"slices"
	"testing"
	"time"
)

func probsFrom(pattern string) []float32 {
	out := make([]float32, len(pattern))
	for i, c := range pattern {
		if c == '#' {
			out[i] = 0.9
		} else {
			out[i] = 0.05
		}
	}
	return out
}

func TestSpeechSegments(t *testing.T) {
	const chunk = 512 // 32 ms
	p := DefaultVADParams()
	p.Pad = 0
	for _, tc := range []struct {
		name    string
		pattern string
		want    []Span
	}{
		{"none", "..........", nil},
		{"one", "...##########.......", []Span{{3 * chunk, 13 * chunk}}},
		// A pause of 2 chunks (64 ms) is shorter than 100 ms: one segment.
		{"short pause", "..########..########.......", []Span{{2 * chunk, 20 * chunk}}},
		// A pause ends speech once 100 ms have passed since it began (at
		// its fifth chunk, 128 ms after the first); the next speech is a
		// segment of its own when it starts 200 ms or more after the end.
		{"long pause", "..########.......########.....", []Span{{2 * chunk, 10 * chunk}, {17 * chunk, 25 * chunk}}},
		// Closer than that (160 ms), the two are joined, as whisper.cpp does.
		{"merged", "..########.....########.....", []Span{{2 * chunk, 23 * chunk}}},
		// Under 250 ms of speech is dropped.
		{"too short", "...#####.........", nil},
		{"to the end", "....##########", []Span{{4 * chunk, 14 * chunk}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probs := probsFrom(tc.pattern)
			got := SpeechSegments(probs, chunk, len(probs)*chunk, p)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
	// Padding: 30 ms each side, halved between close neighbours.
	p.Pad = 30 * time.Millisecond
	got := SpeechSegments(probsFrom("..##########........##########..."), chunk, 33*chunk, p)
	pad := 480
	if len(got) != 2 || got[0].Start != 2*chunk-pad || got[0].End != 12*chunk+pad || got[1].Start != 20*chunk-pad {
		t.Fatalf("padded %v", got)
	}
	// Splitting long speech.
	p.Pad, p.MaxSpeech = 0, time.Second
	probs := probsFrom("..####################################################################..")
	for _, s := range SpeechSegments(probs, chunk, len(probs)*chunk, p) {
		if s.End-s.Start > SampleRate {
			t.Fatalf("segment %v longer than 1 s", s)
		}
	}
	// Long speech with a pause of over 98 ms (but under MinSilence) splits
	// there: at the pause's start, and the speech after it resumes where
	// the probability rose; the two are not joined again.
	p.MinSilence = 500 * time.Millisecond
	probs = probsFrom("..####################.....######################..")
	got = SpeechSegments(probs, chunk, len(probs)*chunk, p)
	if want := []Span{{2 * chunk, 22 * chunk}, {27 * chunk, 51 * chunk}}; !slices.Equal(got, want) {
		t.Fatalf("split %v, want %v", got, want)
	}
}

// A tone burst in quiet noise is found by the energy detector.
func TestEnergyVAD(t *testing.T) {
	samples := make([]float32, 3*SampleRate)
	seed := uint32(1)
	for i := range samples {
		seed = seed*1664525 + 1013904223
		samples[i] = 0.001 * (float32(seed>>8)/float32(1<<24) - 0.5)
		if i >= SampleRate && i < 2*SampleRate {
			samples[i] += 0.3 * float32(math.Sin(2*math.Pi*300*float64(i)/SampleRate))
		}
	}
	v := NewEnergyVAD()
	probs, err := v.Probabilities(samples)
	if err != nil {
		t.Fatal(err)
	}
	spans := SpeechSegments(probs, v.ChunkSamples(), len(samples), DefaultVADParams())
	if len(spans) != 1 {
		t.Fatalf("spans %v", spans)
	}
	s := spans[0]
	if math.Abs(float64(s.Start-SampleRate)) > 0.06*SampleRate || math.Abs(float64(s.End-2*SampleRate)) > 0.06*SampleRate {
		t.Fatalf("span [%d, %d], want about [16000, 32000]", s.Start, s.End)
	}
	// Silence gives nothing.
	v.Reset()
	probs, _ = v.Probabilities(make([]float32, SampleRate))
	if len(SpeechSegments(probs, 512, SampleRate, DefaultVADParams())) != 0 {
		t.Fatal("speech in silence")
	}
}
