package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/speech"
)

// Types for live transcription.
type (
	// AudioSource is a stream of 16-kHz mono samples (a file or a microphone).
	AudioSource = audio.Source
	// InputDevice describes a capture device.
	InputDevice = audio.InputDevice
	// StreamOptions configure live transcription; see speech.StreamOptions.
	StreamOptions = speech.StreamOptions
)

// The types of live transcription events; see speech.Event.
const (
	EventPartial       = speech.EventPartial
	EventFinal         = speech.EventFinal
	EventSpeechStarted = speech.EventSpeechStarted // with StreamOptions.SpeechEvents
	EventSpeechStopped = speech.EventSpeechStopped
)

// ErrNoDevice is returned when there is no audio input device.
var ErrNoDevice = audio.ErrNoDevice

// InputDevices lists the capture devices.
func InputDevices() ([]InputDevice, error) { return audio.InputDevices() }

// OpenMic starts capturing from device index (-1: the default input).
func OpenMic(index int) (AudioSource, error) { return audio.OpenMic(index) }

// OpenFileSource streams an audio file, in real time or as fast as read.
func OpenFileSource(path string, realtime bool) (AudioSource, error) {
	return audio.NewFileSource(path, realtime, audio.Limits{})
}

// SampleSource streams samples (16 kHz mono), in real time or as fast as read.
func SampleSource(samples []float32, realtime bool) AudioSource {
	return audio.NewSampleSource(samples, realtime)
}

// ListenRequest is live transcription of a source.
type ListenRequest struct {
	Model  string // whisper.cpp model file
	Source AudioSource
	// VAD delimits utterances: "energy" (default) or "silero" with VADModel.
	VAD      string
	VADModel string
	StreamOptions
}

// ListenEvent is a partial or final text; Latency is, for a final text, the
// time from the moment the end of its speech was read from the source to
// the moment the text was ready.
//
// An event of type EventDropped reports that the source lost audio since
// the last such event: Dropped is the total of samples lost so far and
// Overflows the times the audio driver reported lost input.
type ListenEvent struct {
	speech.Event
	Latency   time.Duration
	Dropped   int64
	Overflows int64
}

// EventDropped is the type of a ListenEvent that reports lost audio.
const EventDropped = "dropped"

// overflower is a source whose driver reports input it lost.
type overflower interface{ Overflows() int64 }

// ListenStats sum up a live transcription.
type ListenStats struct {
	Audio     time.Duration // read from the source
	Dropped   int64         // samples the source lost
	Overflows int64         // times the driver reported lost input
	Finals    int
}

// Listen transcribes req.Source until it ends (io.EOF) or ctx is cancelled,
// calling onEvent with each event.
func (e *Engine) Listen(ctx context.Context, req ListenRequest, onEvent func(ListenEvent) error) (ListenStats, error) {
	var st ListenStats
	if p := req.StreamOptions.VADParams; p != (audio.VADParams{}) {
		if err := p.Check(); err != nil {
			return st, fmt.Errorf("%w: %v", ErrBadOption, err)
		}
	}
	rec, l, err := e.speechModel(ctx, req.Model)
	if err != nil {
		return st, err
	}
	defer l.release(nil)
	kind := req.VAD
	if kind == "" {
		kind = "energy"
	}
	vad, err := e.NewVAD(ctx, kind, req.VADModel)
	if err != nil {
		return st, err
	}
	defer vad.Close()
	so := req.StreamOptions
	if so.Priority == 0 {
		so.Priority = int(PriorityInteractive) // someone is speaking and waiting
	}
	s := speech.NewStreamer(rec.rec, vad, so)
	defer s.Stop() // before the model's lease goes
	pad := req.StreamOptions.VADParams.Pad
	if req.StreamOptions.VADParams == (audio.VADParams{}) {
		pad = speech.DefaultStreamVADParams().Pad
	}
	// When each part of the stream was read, to measure latency.
	type mark struct {
		end  int
		wall time.Time
	}
	var marks []mark
	pos := 0
	emit := func(events []speech.Event) error {
		for _, ev := range events {
			le := ListenEvent{Event: ev}
			if ev.Type == speech.EventFinal {
				st.Finals++
				speechEnd := int((ev.End - pad).Seconds() * speech.SampleRate)
				for _, m := range marks {
					if m.end >= speechEnd {
						le.Latency = time.Since(m.wall)
						break
					}
				}
			}
			if err := onEvent(le); err != nil {
				return err
			}
		}
		return nil
	}
	// Lost audio is reported as it happens, at most once a second.
	var lastDrop time.Time
	checkDrops := func(force bool) error {
		d := req.Source.Dropped()
		var o int64
		if ov, ok := req.Source.(overflower); ok {
			o = ov.Overflows()
		}
		if d == st.Dropped && o == st.Overflows {
			return nil
		}
		if !force && time.Since(lastDrop) < time.Second {
			return nil
		}
		st.Dropped, st.Overflows, lastDrop = d, o, time.Now()
		return onEvent(ListenEvent{Event: speech.Event{Type: EventDropped}, Dropped: d, Overflows: o})
	}
	for {
		samples, err := req.Source.Read(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			checkDrops(true)
			return st, err
		}
		if err := checkDrops(false); err != nil {
			return st, err
		}
		pos += len(samples)
		marks = append(marks, mark{pos, time.Now()})
		if len(marks) > 4096 {
			marks = marks[len(marks)-2048:]
		}
		st.Audio = time.Duration(float64(pos) / speech.SampleRate * float64(time.Second))
		events, err := s.Write(ctx, samples)
		if err := emit(events); err != nil {
			return st, err
		}
		if err != nil {
			return st, err
		}
	}
	events, err := s.Close(ctx)
	if err := checkDrops(true); err != nil {
		return st, err
	}
	if err := emit(events); err != nil {
		return st, err
	}
	return st, err
}
