package testmodel

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/owlengine/owl/models"
)

// SileroConfig describes a generated Silero VAD model in whisper.cpp's
// ggml format.
type SileroConfig struct {
	Encoder []models.SileroConv
	Hidden  int
	Seed    uint64
	F32     bool   // every tensor f32 (whisper.cpp's files keep convolutions f16)
	Version [3]int // the header's version (5.1.2 unless set)
}

// SileroV5 has the shape of Silero VAD v5 (and v6): four convolutions
// 129→128→64→64→128, a 128-unit LSTM, 512-sample chunks at 16 kHz.
func SileroV5() SileroConfig {
	conv := func(in, out int) models.SileroConv { return models.SileroConv{In: in, Out: out, Kernel: 3} }
	return SileroConfig{Encoder: []models.SileroConv{conv(129, 128), conv(128, 64), conv(64, 64), conv(64, 128)}, Hidden: 128, Seed: 23, Version: [3]int{5, 1, 2}}
}

// SileroV6 is SileroV5 with v6.2.0 in the header, as whisper.cpp's
// ggml-silero-v6.2.0.bin.
func SileroV6() SileroConfig {
	c := SileroV5()
	c.Version, c.Seed = [3]int{6, 2, 0}, 29
	return c
}

// WriteSilero writes the model: the real STFT basis (a periodic Hann window
// times cosines and sines) and seeded random weights elsewhere, in the
// layout of whisper.cpp's converter (its files read so): tensors in its
// order, convolutions, the STFT basis and the output layer's weight (a
// vector of 128) f16, biases and the LSTM f32, the output bias a scalar
// (0 dimensions).
func WriteSilero(w io.Writer, c SileroConfig) error {
	le := binary.LittleEndian
	var b []byte
	b = le.AppendUint32(b, 0x67676d6c)
	typ := "silero-16k"
	b = le.AppendUint32(b, uint32(len(typ)))
	b = append(b, typ...)
	version := c.Version
	if version == ([3]int{}) {
		version = [3]int{5, 1, 2}
	}
	for _, v := range []int{version[0], version[1], version[2], 512, 64, len(c.Encoder)} {
		b = le.AppendUint32(b, uint32(v))
	}
	for _, e := range c.Encoder {
		b = le.AppendUint32(b, uint32(e.In))
		b = le.AppendUint32(b, uint32(e.Out))
		b = le.AppendUint32(b, uint32(e.Kernel))
	}
	last := c.Encoder[len(c.Encoder)-1].Out
	for _, v := range []int{last, c.Hidden, c.Hidden, 1} {
		b = le.AppendUint32(b, uint32(v))
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	f := &models.SileroFile{Encoder: c.Encoder, LSTMInput: last, LSTMHidden: c.Hidden, FinalIn: c.Hidden, FinalOut: 1}
	shapes := models.SileroTensorShapes(f)
	for _, name := range models.SileroTensorNames(f) {
		dims := shapes[name]
		if name == models.SileroFinalW || name == models.SileroFinalB {
			dims = dims[:len(dims)-1] // the converter squeezes the 1×128×1 kernel and the 1-element bias
		}
		typ := models.TypeF16
		if c.F32 || len(dims) <= 1 && name != models.SileroFinalW || name == models.SileroLSTMWIH || name == models.SileroLSTMWHH {
			typ = models.TypeF32
		}
		var th []byte
		th = le.AppendUint32(th, uint32(len(dims)))
		th = le.AppendUint32(th, uint32(len(name)))
		th = le.AppendUint32(th, uint32(typ))
		count := 1
		for _, d := range dims {
			th = le.AppendUint32(th, uint32(d))
			count *= int(d)
		}
		th = append(th, name...)
		if _, err := w.Write(th); err != nil {
			return err
		}
		r := newRNG(seedFor(c.Seed, name))
		var gen func() float32
		rowLen := count
		if len(dims) > 0 {
			rowLen = int(dims[0])
		}
		switch {
		case name == models.SileroSTFT:
			basis := STFTBasis(256)
			i := 0
			gen = func() float32 { i++; return basis[i-1] }
		case len(dims) <= 1 && name != models.SileroFinalW:
			gen = func() float32 { return r.uniform(0.1) }
		case name == models.SileroFinalW:
			a := float32(math.Sqrt(3 / float64(dims[0])))
			gen = func() float32 { return r.uniform(a) }
		default:
			fanIn := float64(dims[0])
			if len(dims) == 3 {
				fanIn *= float64(dims[1])
			}
			a := float32(math.Sqrt(3 / fanIn)) // unit-variance outputs
			gen = func() float32 { return r.uniform(a) }
		}
		if err := encodeRows(w, typ, count, rowLen, gen); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// WriteSileroFile writes the model to path atomically.
func WriteSileroFile(path string, c SileroConfig) error {
	return writeFileAtomic(path, func(w io.Writer) error { return WriteSilero(w, c) })
}

// STFTBasis is the Silero STFT basis for n-sample frames: n/2+1 filters of
// Hann-windowed cosines (the real parts), then as many of negated sines
// (the imaginary parts), each of n taps.
func STFTBasis(n int) []float32 {
	bins := n/2 + 1
	out := make([]float32, 2*bins*n)
	for k := range bins {
		for t := range n {
			w := 0.5 * (1 - math.Cos(2*math.Pi*float64(t)/float64(n)))
			a := 2 * math.Pi * float64(k*t) / float64(n)
			out[k*n+t] = float32(w * math.Cos(a))
			out[(bins+k)*n+t] = float32(-w * math.Sin(a))
		}
	}
	return out
}
