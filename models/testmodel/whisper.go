package testmodel

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"unicode/utf8"

	"github.com/owlengine/owl/models"
)

// WhisperConfig describes a generated whisper.cpp model file.
type WhisperConfig struct {
	// HParams.FType: 0 (f32), 1 (f16), or a type whisper.cpp's quantize
	// writes: 2 (q4_0), 3 (q4_1), 7 (q8_0), 8 (q5_0), 9 (q5_1).
	HParams models.WhisperHParams
	Seed    uint64
	// Through, set on an f32 model to a quantized type, sends each weight a
	// file of that type quantizes through the type and back: the f32 file
	// then holds exactly the values the quantized one does.
	Through models.GGMLType
}

// whisperFTypes are the file types WriteWhisper writes, with the type of
// their large matrices.
var whisperFTypes = map[int]models.GGMLType{0: models.TypeF32, 1: models.TypeF16,
	2: models.TypeQ4_0, 3: models.TypeQ4_1, 7: models.TypeQ8_0, 8: models.TypeQ5_0, 9: models.TypeQ5_1}

// whisperQuantVersion is ggml's quantization version, which whisper.cpp's
// quantize writes into the file type of the files it makes
// (1000·version + type).
const whisperQuantVersion = 2

// whisperQuantizes reports whether whisper.cpp's quantize quantizes the
// tensor: every matrix (2-D) but the positional embeddings; the
// convolutions (3-D) and vectors keep their type.
func whisperQuantizes(name string, dims []uint64) bool {
	return len(dims) == 2 && name != "encoder.positional_embedding" && name != "decoder.positional_embedding" &&
		name != "encoder.conv1.bias" && name != "encoder.conv2.bias"
}

// Whisper vocabulary sizes.
const (
	VocabEnglish      = 51864 // .en models
	VocabMultilingual = 51865 // tiny … large-v2
	VocabLargeV3      = 51866 // large-v3 and turbo (100 languages)
)

func whisperHParams(state, heads, layers, vocab, mels, ftype int) models.WhisperHParams {
	return models.WhisperHParams{NVocab: vocab, NAudioCtx: 1500, NAudioState: state, NAudioHead: heads, NAudioLayer: layers,
		NTextCtx: 448, NTextState: state, NTextHead: heads, NTextLayer: layers, NMels: mels, FType: ftype}
}

// WhisperMicro is the smallest model the tests run: n_state 64, two heads,
// two layers each side, real 30-second windows and the real vocabulary size.
func WhisperMicro(vocab int, ftype int) WhisperConfig {
	return WhisperConfig{HParams: whisperHParams(64, 2, 2, vocab, 80, ftype), Seed: 11}
}

// WhisperMicroV3 is the micro model with large-v3's 128 mel bins and 100 languages.
func WhisperMicroV3(ftype int) WhisperConfig {
	return WhisperConfig{HParams: whisperHParams(64, 2, 2, VocabLargeV3, 128, ftype), Seed: 13}
}

// WhisperMicroTurbo has large-v3-turbo's layout at micro size: large-v3's
// header (128 mels, 100 languages) and fewer decoder layers than encoder
// layers (turbo: 32 and 4).
func WhisperMicroTurbo(ftype int) WhisperConfig {
	c := WhisperConfig{HParams: whisperHParams(64, 2, 3, VocabLargeV3, 128, ftype), Seed: 23}
	c.HParams.NTextLayer = 1
	return c
}

// WhisperTiny has the shape of whisper tiny (n_state 384, 6 heads, 4+4 layers).
func WhisperTiny(vocab int, ftype int) WhisperConfig {
	return WhisperConfig{HParams: whisperHParams(384, 6, 4, vocab, 80, ftype), Seed: 17}
}

// WhisperBase has the shape of whisper base (n_state 512, 8 heads, 6+6 layers).
func WhisperBase(vocab int, ftype int) WhisperConfig {
	return WhisperConfig{HParams: whisperHParams(512, 8, 6, vocab, 80, ftype), Seed: 19}
}

// WriteWhisper writes the model of c in whisper.cpp's ggml format.
func WriteWhisper(w io.Writer, c WhisperConfig) error {
	h := c.HParams
	wtype, ok := whisperFTypes[h.FType]
	if !ok {
		return fmt.Errorf("generated whisper models are f32, f16, q4_0, q4_1, q5_0, q5_1 or q8_0, not ftype %d", h.FType)
	}
	if c.Through != 0 && (h.FType != 0 || !quantizable(c.Through)) {
		return fmt.Errorf("a model sent through %s must be f32 and the type a legacy quantization", c.Through)
	}
	fileType := h.FType
	if wtype != models.TypeF32 && wtype != models.TypeF16 {
		fileType += 1000 * whisperQuantVersion
	}
	convType := models.TypeF16
	if wtype == models.TypeF32 {
		convType = models.TypeF32
	}
	le := binary.LittleEndian
	var hdr []byte
	hdr = le.AppendUint32(hdr, 0x67676d6c)
	for _, v := range []int{h.NVocab, h.NAudioCtx, h.NAudioState, h.NAudioHead, h.NAudioLayer,
		h.NTextCtx, h.NTextState, h.NTextHead, h.NTextLayer, h.NMels, fileType} {
		hdr = le.AppendUint32(hdr, uint32(v))
	}
	hdr = le.AppendUint32(hdr, uint32(h.NMels))
	hdr = le.AppendUint32(hdr, 201)
	for _, f := range MelFilters(h.NMels) {
		hdr = le.AppendUint32(hdr, math.Float32bits(f))
	}
	tokens, err := whisperVocab(h)
	if err != nil {
		return err
	}
	hdr = le.AppendUint32(hdr, uint32(len(tokens)))
	for _, t := range tokens {
		hdr = le.AppendUint32(hdr, uint32(len(t)))
		hdr = append(hdr, t...)
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}

	shapes := models.WhisperTensorShapes(h)
	n := float64(h.NAudioState)
	for _, name := range models.WhisperTensorNames(h) {
		dims := shapes[name]
		t := wtype
		switch {
		case len(dims) == 1 || name == "encoder.positional_embedding" || name == "decoder.positional_embedding" ||
			name == "encoder.conv1.bias" || name == "encoder.conv2.bias":
			t = models.TypeF32
		case name == "encoder.conv1.weight" || name == "encoder.conv2.weight":
			t = convType
		}
		through := models.GGMLType(0)
		if c.Through != 0 && whisperQuantizes(name, dims) {
			through = c.Through
		}
		if (through != 0 || t != wtype && quantizable(t) || quantizable(wtype) && t == wtype) && dims[0]%quantBlock != 0 {
			return fmt.Errorf("%s: rows of %d values cannot be quantized in blocks of %d", name, dims[0], quantBlock)
		}
		var th []byte
		th = le.AppendUint32(th, uint32(len(dims)))
		th = le.AppendUint32(th, uint32(len(name)))
		th = le.AppendUint32(th, uint32(t))
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
		switch {
		case name == "encoder.positional_embedding":
			sin := Sinusoids(h.NAudioCtx, h.NAudioState)
			i := 0
			gen = func() float32 { i++; return sin[i-1] }
		case hasSuffix(name, "_ln.weight") || hasSuffix(name, "ln_post.weight") || name == "decoder.ln.weight":
			gen = func() float32 { return 1 + r.uniform(0.2) }
		case hasSuffix(name, ".bias"):
			gen = func() float32 { return r.uniform(0.2) }
		case name == "decoder.positional_embedding":
			gen = func() float32 { return r.uniform(0.5) }
		case name == "decoder.token_embedding.weight":
			a := float32(2 * math.Sqrt(3/n))
			gen = func() float32 { return r.uniform(a) }
		default: // weight matrices: ±1/sqrt(fan-in) keeps activations near unit scale
			fanIn := float64(dims[0])
			if len(dims) == 3 {
				fanIn *= float64(dims[1])
			}
			a := float32(1 / math.Sqrt(fanIn))
			gen = func() float32 { return r.uniform(a) }
		}
		if through != 0 {
			gen = throughType(through, int(dims[0]), gen)
		}
		if err := encodeRows(w, t, count, int(dims[0]), gen); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// throughType returns the values of gen, rows of rowLen at a time, as a
// tensor of type t holds them.
func throughType(t models.GGMLType, rowLen int, gen func() float32) func() float32 {
	row := make([]float32, rowLen)
	var held []float32
	return func() float32 {
		if len(held) == 0 {
			for i := range row {
				row[i] = gen()
			}
			var err error
			if held, err = roundTrip(t, row); err != nil {
				panic(err) // WriteWhisper checked the row length
			}
		}
		v := held[0]
		held = held[1:]
		return v
	}
}

// WriteWhisperFile writes the model to path atomically.
func WriteWhisperFile(path string, c WhisperConfig) error {
	return writeFileAtomic(path, func(w io.Writer) error { return WriteWhisper(w, c) })
}

func hasSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}

// whisperVocab returns the stored tokens of a generated whisper model as
// whisper.cpp's converter writes them: the GPT-2-style byte-level BPE
// vocabulary up to EOT as raw bytes, 50,257 texts in all (the last one
// "<|endoftext|>" in an English-only vocabulary, empty in a multilingual
// one), and every token whose bytes are
// not whole UTF-8 characters written as U+FFFD, as the converter's
// decoding with errors="replace" leaves them. whisper.cpp synthesizes the
// special tokens after the stored ones.
func whisperVocab(h models.WhisperHParams) ([][]byte, error) {
	n := h.SpecialTokens().EOT
	v, err := buildVocab(n + chatMLSpecial)
	if err != nil {
		return nil, err
	}
	u2b := map[rune]byte{}
	for b, r := range byteToUnicode() {
		u2b[r] = byte(b)
	}
	out := make([][]byte, n, n+1)
	for i, t := range v.tokens[:n] {
		for _, r := range t {
			out[i] = append(out[i], u2b[r])
		}
		if !utf8.Valid(out[i]) {
			out[i] = []byte(string(utf8.RuneError))
		}
	}
	if h.Multilingual() {
		out[n-1] = nil
	} else {
		out = append(out, []byte("<|endoftext|>"))
	}
	return out, nil
}

// Sinusoids is Whisper's fixed positional embedding of the encoder: for each
// of length positions, channels/2 sines then channels/2 cosines of
// geometrically spaced frequencies, position-major.
func Sinusoids(length, channels int) []float32 {
	half := channels / 2
	inc := math.Log(10000) / float64(half-1)
	out := make([]float32, length*channels)
	for p := range length {
		for i := range half {
			t := float64(p) * math.Exp(-inc*float64(i))
			out[p*channels+i] = float32(math.Sin(t))
			out[p*channels+half+i] = float32(math.Cos(t))
		}
	}
	return out
}

// MelFilters is the Slaney-normalized mel filterbank Whisper uses (as
// librosa.filters.mel(sr=16000, n_fft=400, n_mels=n) computes it): n rows of
// 201 weights over the FFT bins.
func MelFilters(n int) []float32 {
	const sr, nFFT = 16000.0, 400
	nBins := nFFT/2 + 1
	// Slaney's mel scale: linear below 1 kHz, logarithmic above.
	const fSp, minLogHz = 200.0 / 3, 1000.0
	minLogMel := minLogHz / fSp
	logStep := math.Log(6.4) / 27
	hzToMel := func(f float64) float64 {
		if f < minLogHz {
			return f / fSp
		}
		return minLogMel + math.Log(f/minLogHz)/logStep
	}
	melToHz := func(m float64) float64 {
		if m < minLogMel {
			return m * fSp
		}
		return minLogHz * math.Exp(logStep*(m-minLogMel))
	}
	maxMel := hzToMel(sr / 2)
	pts := make([]float64, n+2)
	for i := range pts {
		pts[i] = melToHz(maxMel * float64(i) / float64(n+1))
	}
	out := make([]float32, n*nBins)
	for m := range n {
		lo, mid, hi := pts[m], pts[m+1], pts[m+2]
		norm := 2 / (hi - lo)
		for k := range nBins {
			f := float64(k) * sr / nFFT
			w := math.Max(0, math.Min((f-lo)/(mid-lo), (hi-f)/(hi-mid)))
			out[m*nBins+k] = float32(w * norm)
		}
	}
	return out
}
