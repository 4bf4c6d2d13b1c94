// Package portaudio captures audio from input devices through PortAudio
// (github.com/gordonklaus/portaudio, the system's libportaudio).
//
// An Input delivers mono float32 frames at the device's rate from
// PortAudio's callback thread into a bounded queue; when the reader falls
// behind, whole buffers are dropped and counted, never silently lost.
package portaudio

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	pa "github.com/gordonklaus/portaudio"
)

// ErrNoDevice is returned when there is no audio input device.
var ErrNoDevice = errors.New("no audio input device")

var initMu sync.Mutex // guards users
var users int

// acquire initializes PortAudio for one more user.
func acquire() error {
	initMu.Lock()
	defer initMu.Unlock()
	if users == 0 {
		// Probing the host APIs makes ALSA and JACK print pages of notes
		// about devices that are not there straight to the process's
		// standard error; they are muted for the duration.
		restore := muteStderr()
		err := pa.Initialize()
		restore()
		if err != nil {
			return fmt.Errorf("portaudio: %w", err)
		}
	}
	users++
	return nil
}

func release() {
	initMu.Lock()
	defer initMu.Unlock()
	if users--; users == 0 {
		pa.Terminate()
	}
}

// Device is an input or output device.
type Device struct {
	Index      int // PortAudio's index, what Open and OpenOutput take
	Name       string
	HostAPI    string
	Channels   int
	SampleRate float64 // default rate
	Default    bool
}

// Devices lists the input devices.
func Devices() ([]Device, error) { return devices(false) }

// devices lists the input devices, or the output devices; Channels is the
// direction's channel count.
func devices(output bool) ([]Device, error) {
	if err := acquire(); err != nil {
		return nil, err
	}
	defer release()
	all, err := pa.Devices()
	if err != nil {
		return nil, fmt.Errorf("portaudio: %w", err)
	}
	def, _ := pa.DefaultInputDevice()
	if output {
		def, _ = pa.DefaultOutputDevice()
	}
	var out []Device
	for i, d := range all {
		channels := d.MaxInputChannels
		if output {
			channels = d.MaxOutputChannels
		}
		if channels < 1 {
			continue
		}
		host := ""
		if d.HostApi != nil {
			host = d.HostApi.Name
		}
		out = append(out, Device{Index: i, Name: d.Name, HostAPI: host, Channels: channels,
			SampleRate: d.DefaultSampleRate, Default: def != nil && def.Name == d.Name})
	}
	return out, nil
}

// Input is an open input stream.
type Input struct {
	stream  *pa.Stream
	rate    int
	frames  chan []float32
	dropped atomic.Int64
	// overflows counts the times the driver lost input before the
	// callback saw it (how much is not known).
	overflows atomic.Int64
	once      sync.Once
}

// Open starts capturing from device index (-1: the default input) at its
// default rate, mixing its channels to mono.
func Open(index int) (*Input, error) {
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
		dev, err = pa.DefaultInputDevice()
		if err != nil || dev == nil {
			release()
			return nil, ErrNoDevice
		}
	} else {
		if index >= len(all) || all[index].MaxInputChannels < 1 {
			release()
			return nil, fmt.Errorf("%w: device %d is not an input device (see owl devices)", ErrNoDevice, index)
		}
		dev = all[index]
	}
	channels := min(dev.MaxInputChannels, 2)
	in := &Input{rate: int(dev.DefaultSampleRate), frames: make(chan []float32, 64)}
	params := pa.HighLatencyParameters(dev, nil)
	params.Input.Channels = channels
	params.SampleRate = dev.DefaultSampleRate
	params.FramesPerBuffer = int(dev.DefaultSampleRate / 50) // 20 ms
	in.stream, err = pa.OpenStream(params, func(buf []float32, _ pa.StreamCallbackTimeInfo, flags pa.StreamCallbackFlags) {
		if flags&pa.InputOverflow != 0 {
			in.overflows.Add(1)
		}
		mono := make([]float32, len(buf)/channels)
		for i := range mono {
			sum := float32(0)
			for c := range channels {
				sum += buf[i*channels+c]
			}
			mono[i] = sum / float32(channels)
		}
		select {
		case in.frames <- mono:
		default:
			in.dropped.Add(int64(len(mono)))
		}
	})
	if err != nil {
		release()
		return nil, fmt.Errorf("portaudio: opening %q: %w", dev.Name, err)
	}
	if err := in.stream.Start(); err != nil {
		in.stream.Close()
		release()
		return nil, fmt.Errorf("portaudio: starting %q: %w", dev.Name, err)
	}
	return in, nil
}

// SampleRate is the rate of the samples Read returns.
func (in *Input) SampleRate() int { return in.rate }

// Read returns the next buffer of mono samples, waiting for one.
func (in *Input) Read(ctx context.Context) ([]float32, error) {
	select {
	case b := <-in.frames:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Dropped is the number of samples lost because Read fell behind.
func (in *Input) Dropped() int64 { return in.dropped.Load() }

// Overflows is the number of times the audio driver reported lost input
// because the capture thread was late.
func (in *Input) Overflows() int64 { return in.overflows.Load() }

// Close stops capturing. It is idempotent.
func (in *Input) Close() error {
	var err error
	in.once.Do(func() {
		in.stream.Stop()
		err = in.stream.Close()
		release()
	})
	return err
}
