package speech

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/owlengine/owl/audio"
)

// scriptRecognizer answers each transcription with the next text of a script.
type scriptRecognizer struct {
	texts []string
	calls int
	lens  []int
}

func (r *scriptRecognizer) Transcribe(_ context.Context, samples []float32, _ Options) (*Transcript, error) {
	r.lens = append(r.lens, len(samples))
	text := r.texts[min(r.calls, len(r.texts)-1)]
	r.calls++
	return &Transcript{Segments: []Segment{{Text: text}}}, nil
}

func (r *scriptRecognizer) Close() error { return nil }

// tones is speech-like loud audio for the energy detector: bursts of a tone
// (on for speech, off for silence), sec seconds each.
func tones(pattern string, sec float64) []float32 {
	var out []float32
	n := int(sec * SampleRate)
	for _, c := range pattern {
		for i := range n {
			v := float32(0)
			if c == '#' {
				v = float32(0.3 * math.Sin(2*math.Pi*220*float64(i)/SampleRate))
			}
			out = append(out, v)
		}
	}
	return out
}

func TestStreamerLocalAgreement(t *testing.T) {
	rec := &scriptRecognizer{texts: []string{
		"the owl", "the owl sat", "the owl sat in", "the owl sits in the", "the owl sat in the old oak tree",
	}}
	s := NewStreamer(rec, audio.NewEnergyVAD(), StreamOptions{Step: time.Second})
	// 0.5 s silence, 4.5 s speech, 1 s silence, in 100-ms writes.
	samples := tones(".#########..", 0.5)
	var events []Event
	for i := 0; i < len(samples); i += 1600 {
		ev, err := s.Write(context.Background(), samples[i:min(len(samples), i+1600)])
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, ev...)
	}
	ev, err := s.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	events = append(events, ev...)
	var partials []Event
	var finals []Event
	for _, e := range events {
		if e.Type == EventPartial {
			partials = append(partials, e)
		} else {
			finals = append(finals, e)
		}
	}
	if len(partials) != 4 || len(finals) != 1 {
		t.Fatalf("%d partials, %d finals: %+v", len(partials), len(finals), events)
	}
	// Committed: what two hypotheses in a row agree on, never taken back.
	wantCommitted := []string{"", "the owl", "the owl sat", "the owl sat"}
	for i, p := range partials {
		if p.Committed != wantCommitted[i] {
			t.Errorf("partial %d: committed %q, want %q (text %q)", i, p.Committed, wantCommitted[i], p.Text)
		}
		if !strings.HasPrefix(p.Text, p.Committed) {
			t.Errorf("partial %d text %q does not start with its committed %q", i, p.Text, p.Committed)
		}
	}
	// The disagreeing fourth hypothesis keeps the committed words.
	if partials[3].Text != "the owl sat in the" {
		t.Errorf("fourth partial %q", partials[3].Text)
	}
	f := finals[0]
	if f.Text != "the owl sat in the old oak tree" {
		t.Errorf("final %q", f.Text)
	}
	// The utterance spans the tone (0.5 s to 5 s), with a little padding.
	if math.Abs(f.Start.Seconds()-0.5) > 0.1 || math.Abs(f.End.Seconds()-5) > 0.1 {
		t.Errorf("final spans [%v, %v]", f.Start, f.End)
	}
	// Each pass decodes the utterance so far: lengths grow.
	for i := 1; i < len(rec.lens)-1; i++ {
		if rec.lens[i] <= rec.lens[i-1] {
			t.Errorf("pass %d decoded %d samples after %d", i, rec.lens[i], rec.lens[i-1])
		}
	}
}

// Short noises are not utterances; long speech is cut at 30 s.
func TestStreamerLimits(t *testing.T) {
	rec := &scriptRecognizer{texts: []string{"x"}}
	s := NewStreamer(rec, audio.NewEnergyVAD(), StreamOptions{Step: 10 * time.Second})
	ev, _ := s.Write(context.Background(), tones("....#.....", 0.05)) // 50 ms burst
	ev2, _ := s.Close(context.Background())
	if len(ev)+len(ev2) != 0 {
		t.Fatalf("a 50-ms click made events: %+v %+v", ev, ev2)
	}
	s = NewStreamer(rec, audio.NewEnergyVAD(), StreamOptions{Step: 100 * time.Second, MaxUtterance: 2 * time.Second})
	ev, _ = s.Write(context.Background(), tones("#####", 1))
	finals := 0
	for _, e := range ev {
		if e.Type == EventFinal {
			finals++
			if e.End-e.Start > 2*time.Second+50*time.Millisecond {
				t.Fatalf("utterance of %v over a 2-s limit", e.End-e.Start)
			}
		}
	}
	if finals < 2 {
		t.Fatalf("%d finals for 5 s of speech cut every 2 s", finals)
	}
}

// lengthRecognizer names the audio it decodes by its length, noting how
// much of the stream had been written when each pass began; safe for the
// eager pass's goroutine.
type lengthRecognizer struct {
	mu      sync.Mutex
	written *int
	at      map[int]int // samples decoded → stream written then
}

func (r *lengthRecognizer) Transcribe(ctx context.Context, samples []float32, _ Options) (*Transcript, error) {
	r.mu.Lock()
	if _, ok := r.at[len(samples)]; !ok {
		r.at[len(samples)] = *r.written
	}
	r.mu.Unlock()
	time.Sleep(20 * time.Millisecond) // a pass takes time
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &Transcript{Segments: []Segment{{Text: fmt.Sprintf("len%d", len(samples))}}}, nil
}

func (r *lengthRecognizer) Close() error { return nil }

// EagerFinal changes when an utterance's final pass runs, not what it
// says: the same finals as without it, through pauses too short to end an
// utterance (an eager pass begun and thrown away) and long ones (the eager
// pass's text used, its pass begun before the pause was over).
func TestStreamerEagerFinal(t *testing.T) {
	// Speech with 400-ms pauses (over eagerAfter, under the 500 ms that
	// end an utterance) and 1.2-s ones, in 100-ms writes.
	samples := tones(".####....####.###............####......", 0.1)
	run := func(eager bool) ([]Event, map[int]int) {
		written := 0
		rec := &lengthRecognizer{written: &written, at: map[int]int{}}
		s := NewStreamer(rec, audio.NewEnergyVAD(), StreamOptions{Step: time.Hour, EagerFinal: eager})
		defer s.Stop()
		var finals []Event
		for i := 0; i < len(samples); i += 1600 {
			rec.mu.Lock()
			written = i + 1600
			rec.mu.Unlock()
			time.Sleep(5 * time.Millisecond) // the eager pass runs beside the stream
			ev, err := s.Write(context.Background(), samples[i:min(len(samples), i+1600)])
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ev {
				if e.Type == EventFinal {
					finals = append(finals, e)
				}
			}
		}
		ev, err := s.Close(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ev {
			if e.Type == EventFinal {
				finals = append(finals, e)
			}
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return finals, rec.at
	}
	plain, _ := run(false)
	eager, at := run(true)
	if len(plain) != 2 || len(eager) != len(plain) {
		t.Fatalf("finals: %+v without EagerFinal, %+v with it", plain, eager)
	}
	for i := range plain {
		if plain[i] != eager[i] {
			t.Fatalf("final %d: %+v without EagerFinal, %+v with it", i, plain[i], eager[i])
		}
		var n int
		fmt.Sscanf(eager[i].Text, "len%d", &n)
		if end := int(eager[i].End.Seconds()*SampleRate) - int(DefaultStreamVADParams().Pad.Seconds()*SampleRate); at[n] >= end+int(0.5*SampleRate) {
			t.Errorf("final %d: its pass began %d samples into the stream, not before the pause ended (%d)", i, at[n], end+int(0.5*SampleRate))
		}
	}
	if len(at) <= 2 {
		t.Errorf("passes %v: no eager pass was thrown away at the short pauses", at)
	}
}
