package audio

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/owlengine/owl/bindings/portaudio"
)

// Source is a stream of 16-kHz mono samples: a file or a microphone.
type Source interface {
	// Read returns the next samples, waiting for them if the source is
	// live; io.EOF ends the stream.
	Read(ctx context.Context) ([]float32, error)
	// Dropped is the number of samples the source lost because it was read
	// too slowly (always 0 for files).
	Dropped() int64
	// Close releases the source.
	Close() error
}

// FileSource plays an audio file as a stream, in real time or as fast as
// it is read.
type FileSource struct {
	samples  []float32
	pos      int
	chunk    int
	realtime bool
	start    time.Time
}

// NewFileSource decodes the audio file at path (any format Load reads) and
// streams it in chunks of 100 ms; with realtime, each chunk is delivered
// when it would have been heard.
func NewFileSource(path string, realtime bool, l Limits) (*FileSource, error) {
	s, err := Load(path, l)
	if err != nil {
		return nil, err
	}
	return NewSampleSource(s, realtime), nil
}

// NewSampleSource streams samples (16 kHz mono) like a file.
func NewSampleSource(samples []float32, realtime bool) *FileSource {
	return &FileSource{samples: samples, chunk: SampleRate / 10, realtime: realtime}
}

// Read returns the next chunk.
func (f *FileSource) Read(ctx context.Context) ([]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if f.pos >= len(f.samples) {
		return nil, io.EOF
	}
	if f.start.IsZero() {
		f.start = time.Now()
	}
	end := min(f.pos+f.chunk, len(f.samples))
	if f.realtime {
		due := f.start.Add(time.Duration(float64(end) / SampleRate * float64(time.Second)))
		select {
		case <-time.After(time.Until(due)):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out := f.samples[f.pos:end]
	f.pos = end
	return out, nil
}

// Dropped is 0: a file loses nothing.
func (f *FileSource) Dropped() int64 { return 0 }

// Close does nothing.
func (f *FileSource) Close() error { return nil }

// Mic captures an input device and resamples it to 16 kHz.
type Mic struct {
	in *portaudio.Input
	rs *Resampler
}

// InputDevice describes a capture device.
type InputDevice = portaudio.Device

// ErrNoDevice is returned when there is no input device.
var ErrNoDevice = portaudio.ErrNoDevice

// InputDevices lists the capture devices.
func InputDevices() ([]InputDevice, error) { return portaudio.Devices() }

// OpenMic starts capturing from device index (-1: the default input).
func OpenMic(index int) (*Mic, error) {
	in, err := portaudio.Open(index)
	if err != nil {
		return nil, err
	}
	rs, err := NewResampler(in.SampleRate(), SampleRate)
	if err != nil {
		in.Close()
		return nil, fmt.Errorf("microphone: %w", err)
	}
	return &Mic{in: in, rs: rs}, nil
}

// Read returns the next captured samples at 16 kHz.
func (m *Mic) Read(ctx context.Context) ([]float32, error) {
	for {
		b, err := m.in.Read(ctx)
		if err != nil {
			return nil, err
		}
		if out := m.rs.Write(b); len(out) > 0 {
			return out, nil
		}
	}
}

// Dropped is the number of samples (at the device's rate) lost because the
// reader fell behind.
func (m *Mic) Dropped() int64 { return m.in.Dropped() }

// Overflows is the number of times the audio driver reported input lost
// before owl saw it.
func (m *Mic) Overflows() int64 { return m.in.Overflows() }

// Close stops capturing.
func (m *Mic) Close() error { return m.in.Close() }

// Speaker plays mono samples of any rate on an output device, resampled
// to the device's rate.
type Speaker struct {
	out  *portaudio.Output
	rate int
	rs   *Resampler
}

// OutputDevices lists the playback devices.
func OutputDevices() ([]InputDevice, error) { return portaudio.OutputDevices() }

// ErrNoOutput is returned when there is no output device.
var ErrNoOutput = portaudio.ErrNoOutput

// OpenSpeaker starts playback on device index (-1: the default output) of
// samples at rate.
func OpenSpeaker(index, rate int) (*Speaker, error) {
	out, err := portaudio.OpenOutput(index)
	if err != nil {
		return nil, err
	}
	rs, err := NewResampler(rate, out.SampleRate())
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("speaker: %w", err)
	}
	return &Speaker{out: out, rate: rate, rs: rs}, nil
}

// Play plays samples, blocking until the device has taken them; it stops
// when ctx ends.
func (s *Speaker) Play(ctx context.Context, samples []float32) error {
	return s.out.Write(ctx, s.rs.Write(samples))
}

// Close plays what the resampler holds and what the device holds, then
// closes it.
func (s *Speaker) Close() error {
	err := s.out.Write(context.Background(), s.rs.Flush())
	if cerr := s.out.Close(); err == nil {
		err = cerr
	}
	return err
}
