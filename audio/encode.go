package audio

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/mewkiz/flac"
	"github.com/mewkiz/flac/frame"
	"github.com/mewkiz/flac/meta"
)

// Writer encodes mono samples in [-1, 1] as they come (beyond the range
// they are clipped), for audio streamed while it is made.
type Writer interface {
	Write(samples []float32) error
	// Close writes what is pending; it does not close the underlying writer.
	Close() error
}

// EncodeFormats are the formats NewWriter writes.
var EncodeFormats = []string{"wav", "pcm", "flac"}

// NewWriter returns a Writer of format at rate: "wav" (16-bit PCM; its
// lengths are unknown when it starts, so they are set to the largest
// value, as streamed WAV is), "pcm" (raw 16-bit little-endian, no header)
// or "flac" (16-bit, lossless).
func NewWriter(w io.Writer, format string, rate int) (Writer, error) {
	switch format {
	case "wav":
		return newPCMWriter(w, rate, true)
	case "pcm":
		return newPCMWriter(w, rate, false)
	case "flac":
		return newFLACWriter(w, rate)
	}
	return nil, fmt.Errorf("audio format %q: want one of wav, pcm, flac", format)
}

// toInt16 is v as a 16-bit sample, clipped to [-1, 1] (NaN is silence).
func toInt16(v float32) int16 {
	if v != v {
		return 0
	}
	return int16(max(-1, min(1, v)) * 32767)
}

type pcmWriter struct {
	w   io.Writer
	buf []byte
}

func newPCMWriter(w io.Writer, rate int, header bool) (*pcmWriter, error) {
	p := &pcmWriter{w: w}
	if header {
		h := EncodeWAV(nil, rate)
		binary.LittleEndian.PutUint32(h[4:], 0xffffffff)  // RIFF size: unknown
		binary.LittleEndian.PutUint32(h[40:], 0xffffffff) // data size: unknown
		if _, err := w.Write(h); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *pcmWriter) Write(samples []float32) error {
	p.buf = AppendPCM16(p.buf[:0], samples)
	_, err := p.w.Write(p.buf)
	return err
}

// AppendPCM16 appends samples to b as 16-bit little-endian PCM (clipped to
// [-1, 1]).
func AppendPCM16(b []byte, samples []float32) []byte {
	for _, v := range samples {
		b = binary.LittleEndian.AppendUint16(b, uint16(toInt16(v)))
	}
	return b
}

// DecodePCM16 turns 16-bit little-endian PCM into samples; an odd last
// byte is ignored.
func DecodePCM16(b []byte) []float32 {
	out := make([]float32, len(b)/2)
	for i := range out {
		out[i] = float32(int16(binary.LittleEndian.Uint16(b[2*i:]))) / 32768
	}
	return out
}

func (p *pcmWriter) Close() error { return nil }

// flacBlock is the block size of the FLAC frames written.
const flacBlock = 4096

type flacWriter struct {
	enc     *flac.Encoder
	rate    int
	pending []int32
	frames  uint64
}

// nopCloser keeps the encoder from closing (or seeking in) the writer: the
// stream's length stays "unknown" in its header, as streams allow.
type nopCloser struct{ io.Writer }

func newFLACWriter(w io.Writer, rate int) (*flacWriter, error) {
	info := &meta.StreamInfo{BlockSizeMin: 16, BlockSizeMax: flacBlock, SampleRate: uint32(rate), NChannels: 1, BitsPerSample: 16}
	enc, err := flac.NewEncoder(nopCloser{w}, info)
	if err != nil {
		return nil, fmt.Errorf("flac: %w", err)
	}
	return &flacWriter{enc: enc, rate: rate}, nil
}

func (f *flacWriter) Write(samples []float32) error {
	for _, v := range samples {
		f.pending = append(f.pending, int32(toInt16(v)))
		if len(f.pending) == flacBlock {
			if err := f.frame(); err != nil {
				return err
			}
		}
	}
	return nil
}

// frame writes the pending samples as one frame (fixed blocks; only the
// last may be shorter).
func (f *flacWriter) frame() error {
	if len(f.pending) == 0 {
		return nil
	}
	fr := &frame.Frame{
		Header: frame.Header{HasFixedBlockSize: true, BlockSize: uint16(len(f.pending)), SampleRate: uint32(f.rate),
			Channels: frame.ChannelsMono, BitsPerSample: 16, Num: f.frames},
		Subframes: []*frame.Subframe{{SubHeader: frame.SubHeader{Pred: frame.PredVerbatim}, Samples: f.pending, NSamples: len(f.pending)}},
	}
	if err := f.enc.WriteFrame(fr); err != nil {
		return fmt.Errorf("flac: %w", err)
	}
	f.frames++
	f.pending = make([]int32, 0, flacBlock)
	return nil
}

func (f *flacWriter) Close() error {
	if err := f.frame(); err != nil {
		return err
	}
	return f.enc.Close()
}
