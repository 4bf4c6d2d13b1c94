package speech

import (
	"context"
	"time"

	"github.com/owlengine/owl/audio"
)

// Silero satisfies audio.VAD.
var _ audio.VAD = (*Silero)(nil)

// vadGap is the silence put between speech segments when they are joined.
const vadGap = SampleRate / 10

// timeline maps times in the joined speech back to the original audio.
type timeline struct {
	spans  []audio.Span // in the original, in samples
	starts []int        // where each span begins in the joined audio
}

// original maps a time in the joined audio to the original: inside a span
// by its offset, inside a gap to the end of the span before it.
func (tl timeline) original(d time.Duration) time.Duration {
	pos := int(d.Seconds() * SampleRate)
	for i := len(tl.spans) - 1; i >= 0; i-- {
		if pos >= tl.starts[i] {
			s := tl.spans[i]
			orig := min(s.Start+pos-tl.starts[i], s.End)
			return time.Duration(float64(orig) / SampleRate * float64(time.Second))
		}
	}
	return 0
}

// transcribeSpeech runs the VAD over samples, transcribes only the speech
// it finds (joined with short gaps) and maps every time back to the
// original audio.
func (m *Model) transcribeSpeech(ctx context.Context, samples []float32, o Options) (*Transcript, error) {
	vad := o.VAD
	o.VAD = nil
	vad.Reset()
	probs, err := vad.Probabilities(samples)
	if err != nil {
		return nil, err
	}
	params := o.VADParams
	if params == (audio.VADParams{}) {
		params = audio.DefaultVADParams()
	}
	tl := timeline{spans: audio.SpeechSegments(probs, vad.ChunkSamples(), len(samples), params)}
	var joined []float32
	for _, s := range tl.spans {
		if len(joined) > 0 {
			joined = append(joined, make([]float32, vadGap)...)
		}
		tl.starts = append(tl.starts, len(joined))
		joined = append(joined, samples[s.Start:s.End]...)
	}
	onSegment := o.OnSegment
	o.OnSegment = nil
	if onProgress := o.OnProgress; onProgress != nil {
		full := time.Duration(float64(len(samples)) / SampleRate * float64(time.Second))
		o.OnProgress = func(done, total time.Duration) {
			if done >= total {
				onProgress(full, full)
			} else {
				onProgress(tl.original(done), full)
			}
		}
	}
	tr, err := m.transcribeSamples(ctx, joined, o)
	if tr != nil {
		tr.Duration = time.Duration(float64(len(samples)) / SampleRate * float64(time.Second))
		for i := range tr.Segments {
			s := &tr.Segments[i]
			s.Start, s.End = tl.original(s.Start), tl.original(s.End)
			for j := range s.Tokens {
				if s.Tokens[j].End > 0 {
					s.Tokens[j].Start, s.Tokens[j].End = tl.original(s.Tokens[j].Start), tl.original(s.Tokens[j].End)
				}
			}
			for j := range s.Words {
				s.Words[j].Start, s.Words[j].End = tl.original(s.Words[j].Start), tl.original(s.Words[j].End)
			}
			if onSegment != nil {
				onSegment(*s)
			}
		}
	}
	return tr, err
}
