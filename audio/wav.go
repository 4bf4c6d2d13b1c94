package audio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// ErrNotWAV is returned for data that is not a RIFF/WAVE file.
var ErrNotWAV = errors.New("not a WAV file")

// ErrBadAudio is wrapped by errors about audio data that cannot be decoded.
var ErrBadAudio = errors.New("bad audio data")

// ErrTooLong is returned (wrapping ErrBadAudio) for audio over the Limits.
var ErrTooLong = fmt.Errorf("%w: over the limit", ErrBadAudio)

// Limits bound what a file may make owl allocate.
type Limits struct {
	MaxDuration float64 // seconds of audio; 0 means 4 hours
	MaxBytes    int64   // size of the file; 0 means 4 GiB
}

func (l Limits) maxSeconds() float64 {
	if l.MaxDuration <= 0 {
		return 4 * 3600
	}
	return l.MaxDuration
}

func (l Limits) maxBytes() int64 {
	if l.MaxBytes <= 0 {
		return 4 << 30
	}
	return l.MaxBytes
}

// Audio is decoded audio: mono samples in [-1, 1] at SampleRate.
type Audio struct {
	Samples    []float32
	SampleRate int
	Channels   int // of the source, before downmixing
}

// Duration is the length of the audio in seconds.
func (a Audio) Duration() float64 { return float64(len(a.Samples)) / float64(a.SampleRate) }

const (
	formatPCM        = 1
	formatFloat      = 3
	formatExtensible = 0xFFFE
)

// DecodeWAV decodes a RIFF/WAVE stream of size bytes: PCM of 8, 16, 24 or 32
// bits, IEEE float of 32 or 64 bits, plain or WAVE_FORMAT_EXTENSIBLE, any
// number of channels (averaged to mono).
func DecodeWAV(r io.ReaderAt, size int64, l Limits) (Audio, error) {
	var hdr [12]byte
	if _, err := r.ReadAt(hdr[:], 0); err != nil || string(hdr[0:4]) != "RIFF" || string(hdr[8:12]) != "WAVE" {
		return Audio{}, ErrNotWAV
	}
	var (
		format, channels, bits int
		rate                   int
		haveFmt                bool
	)
	le := binary.LittleEndian
	for off := int64(12); off+8 <= size; {
		var ch [8]byte
		if _, err := r.ReadAt(ch[:], off); err != nil {
			return Audio{}, fmt.Errorf("%w: truncated chunk header at byte %d", ErrBadAudio, off)
		}
		id, n := string(ch[0:4]), int64(le.Uint32(ch[4:8]))
		body := off + 8
		switch id {
		case "fmt ":
			if n < 16 || body+n > size {
				return Audio{}, fmt.Errorf("%w: fmt chunk of %d bytes", ErrBadAudio, n)
			}
			buf := make([]byte, min(n, 40))
			if _, err := r.ReadAt(buf, body); err != nil {
				return Audio{}, fmt.Errorf("%w: truncated fmt chunk", ErrBadAudio)
			}
			format = int(le.Uint16(buf[0:2]))
			channels = int(le.Uint16(buf[2:4]))
			rate = int(le.Uint32(buf[4:8]))
			bits = int(le.Uint16(buf[14:16]))
			if format == formatExtensible {
				if len(buf) < 26 {
					return Audio{}, fmt.Errorf("%w: WAVE_FORMAT_EXTENSIBLE without a sub-format", ErrBadAudio)
				}
				format = int(le.Uint16(buf[24:26])) // first two bytes of the sub-format GUID
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return Audio{}, fmt.Errorf("%w: data chunk before the fmt chunk", ErrBadAudio)
			}
			if n > size-body || n == 0xFFFFFFFF {
				n = size - body // streamed files leave the size unset or too large
			}
			return decodePCM(io.NewSectionReader(r, body, n), n, format, channels, rate, bits, l)
		}
		off = body + n + n%2 // chunks are padded to even sizes
	}
	if !haveFmt {
		return Audio{}, fmt.Errorf("%w: no fmt chunk", ErrBadAudio)
	}
	return Audio{}, fmt.Errorf("%w: no data chunk", ErrBadAudio)
}

func decodePCM(r io.Reader, n int64, format, channels, rate, bits int, l Limits) (Audio, error) {
	switch {
	case channels < 1 || channels > 64:
		return Audio{}, fmt.Errorf("%w: %d channels", ErrBadAudio, channels)
	case rate < 1000 || rate > 768000:
		return Audio{}, fmt.Errorf("%w: sample rate %d Hz", ErrBadAudio, rate)
	}
	var conv func([]byte) float64
	le := binary.LittleEndian
	switch {
	case format == formatPCM && bits == 8:
		conv = func(b []byte) float64 { return (float64(b[0]) - 128) / 128 }
	case format == formatPCM && bits == 16:
		conv = func(b []byte) float64 { return float64(int16(le.Uint16(b))) / 32768 }
	case format == formatPCM && bits == 24:
		conv = func(b []byte) float64 {
			return float64(int32(uint32(b[0])<<8|uint32(b[1])<<16|uint32(b[2])<<24)>>8) / 8388608
		}
	case format == formatPCM && bits == 32:
		conv = func(b []byte) float64 { return float64(int32(le.Uint32(b))) / 2147483648 }
	case format == formatFloat && bits == 32:
		conv = func(b []byte) float64 { return float64(math.Float32frombits(le.Uint32(b))) }
	case format == formatFloat && bits == 64:
		conv = func(b []byte) float64 { return math.Float64frombits(le.Uint64(b)) }
	default:
		return Audio{}, fmt.Errorf("%w: unsupported encoding (format %d, %d bits)", ErrBadAudio, format, bits)
	}
	frame := int64(channels * bits / 8)
	frames := n / frame
	if secs := float64(frames) / float64(rate); secs > l.maxSeconds() {
		return Audio{}, fmt.Errorf("%w: %.0f s of audio exceeds the limit of %.0f s", ErrTooLong, secs, l.maxSeconds())
	}
	out := make([]float32, 0, frames)
	buf := make([]byte, frame*4096)
	for len(out) < int(frames) {
		k, err := io.ReadFull(r, buf[:min(int64(len(buf)), (frames-int64(len(out)))*frame)])
		for i := 0; i+int(frame) <= k; i += int(frame) {
			sum := 0.0
			for c := range channels {
				v := conv(buf[i+c*bits/8:])
				if math.IsNaN(v) || math.IsInf(v, 0) {
					v = 0
				}
				sum += v
			}
			out = append(out, float32(sum/float64(channels)))
		}
		if err != nil {
			break // a truncated last block keeps the frames read so far
		}
	}
	return Audio{Samples: out, SampleRate: rate, Channels: channels}, nil
}

// EncodeWAV encodes mono samples in [-1, 1] at rate as a 16-bit PCM WAV
// file (samples beyond the range are clipped).
func EncodeWAV(samples []float32, rate int) []byte {
	le := binary.LittleEndian
	b := make([]byte, 0, 44+2*len(samples))
	b = append(b, "RIFF"...)
	b = le.AppendUint32(b, uint32(36+2*len(samples)))
	b = append(b, "WAVEfmt "...)
	b = le.AppendUint32(b, 16)
	b = le.AppendUint16(b, 1) // PCM
	b = le.AppendUint16(b, 1) // mono
	b = le.AppendUint32(b, uint32(rate))
	b = le.AppendUint32(b, uint32(2*rate))
	b = le.AppendUint16(b, 2)
	b = le.AppendUint16(b, 16)
	b = append(b, "data"...)
	b = le.AppendUint32(b, uint32(2*len(samples)))
	for _, s := range samples {
		b = le.AppendUint16(b, uint16(int16(max(-1, min(1, s))*32767)))
	}
	return b
}
