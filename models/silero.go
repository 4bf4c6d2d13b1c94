package models

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrNotSilero is returned for a file that is not a ggml Silero VAD model.
var ErrNotSilero = errors.New("not a ggml Silero VAD model (ggml-silero-*.bin)")

// SileroConv is one convolution of the Silero encoder.
type SileroConv struct{ In, Out, Kernel int }

// SileroFile is the parsed header of a Silero VAD model in whisper.cpp's
// ggml format (ggml-silero-v5.1.2.bin, v6.2.0).
type SileroFile struct {
	Type          string // "silero-16k"
	Version       string // "5.1.2"
	Window        int    // samples per chunk (512 at 16 kHz)
	Context       int    // context samples
	Encoder       []SileroConv
	LSTMInput     int
	LSTMHidden    int
	FinalIn       int
	FinalOut      int
	Tensors       []FileTensor
	Size          int64
	ModTime       time.Time
	tensorByIndex map[string]int
}

// Silero tensor names.
const (
	SileroSTFT       = "_model.stft.forward_basis_buffer"
	SileroLSTMWIH    = "_model.decoder.rnn.weight_ih"
	SileroLSTMWHH    = "_model.decoder.rnn.weight_hh"
	SileroLSTMBIH    = "_model.decoder.rnn.bias_ih"
	SileroLSTMBHH    = "_model.decoder.rnn.bias_hh"
	SileroFinalW     = "_model.decoder.decoder.2.weight"
	SileroFinalB     = "_model.decoder.decoder.2.bias"
	sileroSTFTLength = 256 // the STFT's window (its basis is 2×129 filters of 256 taps)
)

// SileroEncoderWeight and SileroEncoderBias name encoder layer i's tensors.
func SileroEncoderWeight(i int) string {
	return fmt.Sprintf("_model.encoder.%d.reparam_conv.weight", i)
}

// SileroEncoderBias names encoder layer i's bias.
func SileroEncoderBias(i int) string { return fmt.Sprintf("_model.encoder.%d.reparam_conv.bias", i) }

// Tensor returns the tensor named name.
func (f *SileroFile) Tensor(name string) (FileTensor, bool) {
	i, ok := f.tensorByIndex[name]
	if !ok {
		return FileTensor{}, false
	}
	return f.Tensors[i], true
}

// SileroTensorShapes gives the shape of every tensor of a model with f's
// hyper-parameters.
func SileroTensorShapes(f *SileroFile) map[string][]uint64 {
	bins := uint64(sileroSTFTLength/2 + 1)
	s := map[string][]uint64{
		SileroSTFT:    {sileroSTFTLength, 1, 2 * bins},
		SileroLSTMWIH: {uint64(f.LSTMInput), 4 * uint64(f.LSTMHidden)},
		SileroLSTMWHH: {uint64(f.LSTMHidden), 4 * uint64(f.LSTMHidden)},
		SileroLSTMBIH: {4 * uint64(f.LSTMHidden)},
		SileroLSTMBHH: {4 * uint64(f.LSTMHidden)},
		SileroFinalW:  {uint64(f.FinalIn), uint64(f.FinalOut)},
		SileroFinalB:  {uint64(f.FinalOut)},
	}
	for i, c := range f.Encoder {
		s[SileroEncoderWeight(i)] = []uint64{uint64(c.Kernel), uint64(c.In), uint64(c.Out)}
		s[SileroEncoderBias(i)] = []uint64{uint64(c.Out)}
	}
	return s
}

// SileroTensorNames lists the tensors of a model with f's hyper-parameters
// in the order whisper.cpp's converter writes them (the STFT basis last).
func SileroTensorNames(f *SileroFile) []string {
	var names []string
	for i := range f.Encoder {
		names = append(names, SileroEncoderWeight(i), SileroEncoderBias(i))
	}
	return append(names, SileroLSTMWIH, SileroLSTMWHH, SileroLSTMBIH, SileroLSTMBHH, SileroFinalW, SileroFinalB, SileroSTFT)
}

// ReadSilero parses and checks the Silero VAD model file at path.
func ReadSilero(path string) (*SileroFile, error) {
	sf, st, err := readFile(path, ParseSilero)
	if err != nil {
		return nil, err
	}
	sf.ModTime = st.ModTime()
	return sf, nil
}

// ParseSilero parses a ggml Silero VAD model of the given size from r.
func ParseSilero(r io.ReaderAt, size int64) (*SileroFile, error) {
	p := newByteParser(r, size)
	magic, err := p.u32("magic")
	if err != nil || magic != whisperMagic {
		return nil, ErrNotSilero
	}
	f := &SileroFile{Size: size}
	n, err := p.u32("model type length")
	if err != nil {
		return nil, err
	}
	if n == 0 || n > 64 {
		return nil, fmt.Errorf("%w: model type of %d bytes", ErrNotSilero, int32(n))
	}
	typ := make([]byte, n)
	if err := p.read(typ, "model type"); err != nil {
		return nil, err
	}
	f.Type = string(typ)
	ints := func(what string, k int) ([]int, error) {
		out := make([]int, k)
		for i := range out {
			v, err := p.u32(what)
			if err != nil {
				return nil, err
			}
			out[i] = int(int32(v))
		}
		return out, nil
	}
	v, err := ints("header", 6)
	if err != nil {
		return nil, err
	}
	f.Version = fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2])
	f.Window, f.Context = v[3], v[4]
	layers := v[5]
	if f.Window < 64 || f.Window > 1<<14 || f.Context < 0 || f.Context > 1<<14 {
		return nil, fmt.Errorf("%w: window %d, context %d", ErrCorrupt, f.Window, f.Context)
	}
	if layers < 1 || layers > 16 {
		return nil, fmt.Errorf("%w: %d encoder layers", ErrCorrupt, layers)
	}
	for range layers {
		c, err := ints("encoder layer", 3)
		if err != nil {
			return nil, err
		}
		if c[0] < 1 || c[0] > 4096 || c[1] < 1 || c[1] > 4096 || c[2] < 1 || c[2] > 64 {
			return nil, fmt.Errorf("%w: encoder layer %d: %d→%d channels, kernel %d", ErrCorrupt, len(f.Encoder), c[0], c[1], c[2])
		}
		f.Encoder = append(f.Encoder, SileroConv{In: c[0], Out: c[1], Kernel: c[2]})
	}
	tail, err := ints("hyper-parameters", 4)
	if err != nil {
		return nil, err
	}
	f.LSTMInput, f.LSTMHidden, f.FinalIn, f.FinalOut = tail[0], tail[1], tail[2], tail[3]
	for _, x := range tail {
		if x < 1 || x > 4096 {
			return nil, fmt.Errorf("%w: hyper-parameters %v", ErrCorrupt, tail)
		}
	}
	// The network's shape must be the one the graph is built for.
	last := f.Encoder[len(f.Encoder)-1]
	switch {
	case f.Encoder[0].In != sileroSTFTLength/2+1:
		return nil, fmt.Errorf("%w: the first encoder layer takes %d channels, the STFT gives %d", ErrCorrupt, f.Encoder[0].In, sileroSTFTLength/2+1)
	case last.Out != f.LSTMInput || f.FinalIn != f.LSTMHidden || f.FinalOut != 1:
		return nil, fmt.Errorf("%w: encoder output %d, LSTM %d→%d, final %d→%d do not connect", ErrCorrupt, last.Out, f.LSTMInput, f.LSTMHidden, f.FinalIn, f.FinalOut)
	}
	for i := 1; i < len(f.Encoder); i++ {
		if f.Encoder[i].In != f.Encoder[i-1].Out {
			return nil, fmt.Errorf("%w: encoder layer %d takes %d channels, layer %d gives %d", ErrCorrupt, i, f.Encoder[i].In, i-1, f.Encoder[i-1].Out)
		}
	}
	f.Tensors, f.tensorByIndex, err = p.ggmlTensors(SileroTensorShapes(f), SileroTensorNames(f), func(name string) bool {
		return name == SileroLSTMWIH || name == SileroLSTMWHH
	}, false)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// SileroGGUF converts the Silero model f (read from src) into a GGUF in
// cacheDir once, as WhisperGGUF does for Whisper models.
func SileroGGUF(src string, f *SileroFile, cacheDir string) (string, error) {
	return legacyGGUF(src, f.Size, f.ModTime, f.Tensors, cacheDir, func(key string) []GGUFKV {
		return []GGUFKV{
			{Key: "general.architecture", Value: "silero"},
			{Key: "general.name", Value: f.Type + "-" + f.Version},
			{Key: "silero.block_count", Value: uint32(max(len(f.Encoder), 4))},
			{Key: keySource, Value: key},
		}
	})
}
