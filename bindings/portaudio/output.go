package portaudio

import (
	"context"
	"errors"
	"fmt"
	"sync"

	pa "github.com/gordonklaus/portaudio"
)

// ErrNoOutput is returned when there is no audio output device.
var ErrNoOutput = errors.New("no audio output device")

// Output is an open output stream: mono float32 samples at the device's
// rate, written with blocking writes.
type Output struct {
	stream *pa.Stream
	rate   int
	buf    []float32 // the stream's buffer, one period
	fill   int       // samples in buf not yet written
	once   sync.Once
}

// OutputDevices lists the output devices.
func OutputDevices() ([]Device, error) { return devices(true) }

// OpenOutput starts a mono stream on device index (-1: the default output)
// at its default rate.
func OpenOutput(index int) (*Output, error) {
	if err := acquire(); err != nil {
		return nil, err
	}
	all, err := pa.Devices()
	if err != nil {
		release()
		return nil, fmt.Errorf("portaudio: %w", err)
	}
	var dev *pa.DeviceInfo
	if index < 0 {
		dev, err = pa.DefaultOutputDevice()
		if err != nil || dev == nil {
			release()
			return nil, ErrNoOutput
		}
	} else {
		if index >= len(all) || all[index].MaxOutputChannels < 1 {
			release()
			return nil, fmt.Errorf("%w: device %d is not an output device (see owl devices)", ErrNoOutput, index)
		}
		dev = all[index]
	}
	o := &Output{rate: int(dev.DefaultSampleRate)}
	o.buf = make([]float32, o.rate/50) // 20 ms
	params := pa.HighLatencyParameters(nil, dev)
	params.Output.Channels = 1
	params.SampleRate = dev.DefaultSampleRate
	params.FramesPerBuffer = len(o.buf)
	if o.stream, err = pa.OpenStream(params, &o.buf); err != nil {
		release()
		return nil, fmt.Errorf("portaudio: opening %q: %w", dev.Name, err)
	}
	if err := o.stream.Start(); err != nil {
		o.stream.Close()
		release()
		return nil, fmt.Errorf("portaudio: starting %q: %w", dev.Name, err)
	}
	return o, nil
}

// SampleRate is the rate Write expects.
func (o *Output) SampleRate() int { return o.rate }

// Write plays samples, blocking until the device has taken all but the
// last partial period (kept for the next call, so pieces play without
// gaps). It stops early, with the context's error, when ctx ends.
func (o *Output) Write(ctx context.Context, samples []float32) error {
	for len(samples) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := copy(o.buf[o.fill:], samples)
		o.fill += n
		samples = samples[n:]
		if o.fill == len(o.buf) {
			if err := o.period(); err != nil {
				return err
			}
		}
	}
	return nil
}

// period hands the device the buffer, padded with silence.
func (o *Output) period() error {
	clear(o.buf[o.fill:])
	o.fill = 0
	if err := o.stream.Write(); err != nil && !errors.Is(err, pa.OutputUnderflowed) {
		return fmt.Errorf("portaudio: %w", err)
	}
	return nil
}

// Close plays the last partial period, lets what was written play out
// and closes the stream. It is
// idempotent.
func (o *Output) Close() error {
	var err error
	o.once.Do(func() {
		if o.fill > 0 {
			err = o.period()
		}
		o.stream.Stop()
		if cerr := o.stream.Close(); err == nil {
			err = cerr
		}
		release()
	})
	return err
}
