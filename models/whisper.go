package models

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"
)

// ErrNotWhisper is returned for a file that does not start with the ggml
// magic of whisper.cpp model files.
var ErrNotWhisper = errors.New("not a whisper.cpp model file (ggml-*.bin)")

// ErrNoWeights is returned for running a whisper.cpp file that holds a
// model's header, mel filters and vocabulary but no tensors.
var ErrNoWeights = errors.New("vocabulary only, no weights")

const (
	whisperMagic = 0x67676d6c // "ggml" little-endian

	// whisperQuantFactor splits whisper.cpp's ftype into the quantization
	// version and the ggml file type: ftype = 1000*version + type.
	whisperQuantFactor = 1000

	// Limits on header values; the largest real models (large-v3) stay far
	// below them.
	maxWhisperVocab  = 1 << 20
	maxWhisperCtx    = 1 << 16
	maxWhisperState  = 1 << 14
	maxWhisperLayers = 256
	maxWhisperMels   = 512
	maxWhisperToken  = 1 << 12
	maxWhisperName   = 256
)

// WhisperHParams are the hyper-parameters in a whisper.cpp model header.
type WhisperHParams struct {
	NVocab      int
	NAudioCtx   int
	NAudioState int
	NAudioHead  int
	NAudioLayer int
	NTextCtx    int
	NTextState  int
	NTextHead   int
	NTextLayer  int
	NMels       int
	FType       int // ggml file type (quantization version removed)
}

// Multilingual reports whether the vocabulary has language tokens.
func (h WhisperHParams) Multilingual() bool { return h.NVocab >= 51865 }

// NumLanguages is the number of language tokens (99, or 100 for large-v3).
func (h WhisperHParams) NumLanguages() int {
	n := h.NVocab - 51765
	if h.Multilingual() {
		n--
	}
	return n
}

// SizeName names the model size the way whisper.cpp does, from the encoder
// depth and vocabulary ("tiny", "base", ..., "large-v3").
func (h WhisperHParams) SizeName() string {
	switch h.NAudioLayer {
	case 4:
		return "tiny"
	case 6:
		return "base"
	case 12:
		return "small"
	case 24:
		return "medium"
	case 32:
		if h.NVocab == 51866 {
			if h.NTextLayer == 4 {
				return "large-v3-turbo"
			}
			return "large-v3"
		}
		return "large"
	}
	return fmt.Sprintf("%d-layer", h.NAudioLayer)
}

// WhisperSpecialTokens are the ids of the special tokens of a whisper
// vocabulary; they depend on its size as in OpenAI's tokenizer.
type WhisperSpecialTokens struct {
	EOT, SOT, Translate, Transcribe, SOLM, Prev, NoSpeech, NoTimestamps, TimestampBegin int
	LanguageBegin                                                                       int // SOT+1; languages follow in Whisper's order
}

// SpecialTokens returns the special token ids for h.
func (h WhisperHParams) SpecialTokens() WhisperSpecialTokens {
	s := WhisperSpecialTokens{EOT: 50256, SOT: 50257, Translate: 50357, Transcribe: 50358, SOLM: 50359,
		Prev: 50360, NoSpeech: 50361, NoTimestamps: 50362, TimestampBegin: 50363}
	if h.Multilingual() {
		s.EOT++
		s.SOT++
		dt := h.NumLanguages() - 98
		s.Translate += dt
		s.Transcribe += dt
		s.SOLM += dt
		s.Prev += dt
		s.NoSpeech += dt
		s.NoTimestamps += dt
		s.TimestampBegin += dt
	}
	s.LanguageBegin = s.SOT + 1
	return s
}

// FileTensor is one tensor of a file in ggml's legacy format (whisper.cpp
// models, Silero VAD models): its place in the file and its layout.
type FileTensor struct {
	Name   string
	Type   GGMLType
	Dims   []uint64 // innermost first
	Offset int64    // of the data in the file
	Bytes  uint64
}

// WhisperFile is the parsed header of a whisper.cpp model file: everything
// but the tensor data, whose place in the file is recorded.
type WhisperFile struct {
	HParams      WhisperHParams
	QuantVersion int
	MelFilters   []float32 // NMels rows of NFFT values
	NFFT         int
	Vocab        [][]byte // the stored token texts; special tokens are not stored
	Tensors      []FileTensor
	// VocabOnly says the file has no tensors: only the header, mel filters
	// and vocabulary of a model (whisper.cpp loads such files, its
	// for-tests-ggml-*.bin, as empty models for testing). It cannot
	// transcribe.
	VocabOnly     bool
	Size          int64
	ModTime       time.Time
	tensorByIndex map[string]int
}

// Tensor returns the tensor named name.
func (f *WhisperFile) Tensor(name string) (FileTensor, bool) {
	i, ok := f.tensorByIndex[name]
	if !ok {
		return FileTensor{}, false
	}
	return f.Tensors[i], true
}

// ReadWhisper parses and checks the whisper.cpp model file at path: header,
// mel filters, vocabulary and every tensor's name, shape, type and extent.
// Errors name the file.
func ReadWhisper(path string) (*WhisperFile, error) {
	wf, st, err := readFile(path, ParseWhisper)
	if err != nil {
		return nil, err
	}
	wf.ModTime = st.ModTime()
	return wf, nil
}

// readFile opens the file at path and parses it with parse. Errors name
// the file.
func readFile[T any](path string, parse func(io.ReaderAt, int64) (T, error)) (T, os.FileInfo, error) {
	var zero T
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return zero, nil, fmt.Errorf("%s: no such file", path)
		}
		return zero, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return zero, nil, err
	}
	if st.IsDir() {
		return zero, nil, fmt.Errorf("%s: is a directory", path)
	}
	v, err := parse(f, st.Size())
	if err != nil {
		return zero, nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, st, nil
}

// ParseWhisper parses a whisper.cpp model file of the given size from r.
func ParseWhisper(r io.ReaderAt, size int64) (*WhisperFile, error) {
	p := newByteParser(r, size)
	magic, err := p.u32("magic")
	if err != nil || magic != whisperMagic {
		return nil, ErrNotWhisper
	}
	f := &WhisperFile{Size: size, tensorByIndex: map[string]int{}}
	var hp [11]int32
	for i := range hp {
		v, err := p.u32("hyper-parameters")
		if err != nil {
			return nil, err
		}
		hp[i] = int32(v)
	}
	h := WhisperHParams{NVocab: int(hp[0]), NAudioCtx: int(hp[1]), NAudioState: int(hp[2]), NAudioHead: int(hp[3]),
		NAudioLayer: int(hp[4]), NTextCtx: int(hp[5]), NTextState: int(hp[6]), NTextHead: int(hp[7]), NTextLayer: int(hp[8]),
		NMels: int(hp[9])}
	if hp[10] < 0 {
		return nil, fmt.Errorf("%w: negative ftype %d", ErrCorrupt, hp[10])
	}
	f.QuantVersion = int(hp[10]) / whisperQuantFactor
	h.FType = int(hp[10]) % whisperQuantFactor
	if err := h.validate(); err != nil {
		return nil, err
	}
	f.HParams = h

	nMel, err := p.u32("mel filter count")
	if err != nil {
		return nil, err
	}
	nFFT, err := p.u32("mel filter width")
	if err != nil {
		return nil, err
	}
	if int(nMel) != h.NMels || nFFT != 201 {
		return nil, fmt.Errorf("%w: mel filters are %d×%d, want %d×201", ErrCorrupt, int32(nMel), int32(nFFT), h.NMels)
	}
	f.NFFT = int(nFFT)
	raw := make([]byte, 4*int(nMel)*int(nFFT))
	if err := p.read(raw, "mel filters"); err != nil {
		return nil, err
	}
	f.MelFilters = make([]float32, len(raw)/4)
	for i := range f.MelFilters {
		f.MelFilters[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}

	nTok, err := p.u32("vocabulary size")
	if err != nil {
		return nil, err
	}
	if int32(nTok) < 0 || int(nTok) > h.NVocab {
		return nil, fmt.Errorf("%w: %d stored tokens for a vocabulary of %d", ErrCorrupt, int32(nTok), h.NVocab)
	}
	f.Vocab = make([][]byte, 0, min(int(nTok), int(p.remaining()/4)))
	for i := 0; i < int(nTok); i++ {
		n, err := p.u32("token length")
		if err != nil {
			return nil, err
		}
		if n > maxWhisperToken || int64(n) > p.remaining() {
			return nil, fmt.Errorf("%w: token %d claims %d bytes", ErrCorrupt, i, n)
		}
		tok := make([]byte, n)
		if err := p.read(tok, "token text"); err != nil {
			return nil, err
		}
		f.Vocab = append(f.Vocab, tok)
	}

	want := WhisperTensorShapes(h)
	if f.Tensors, f.tensorByIndex, err = p.ggmlTensors(want, WhisperTensorNames(h), isWhisperF32Tensor, true); err != nil {
		return nil, err
	}
	f.VocabOnly = len(f.Tensors) == 0
	return f, nil
}

// ggmlTensors reads the tensor records of a legacy ggml file up to its end,
// checking each against want (names and shapes); mustF32 names the 2-D and
// larger tensors stored as f32 (1-D ones always are). Every name in need
// must be present, unless allowNone and the file has no tensors at all.
func (p *byteParser) ggmlTensors(want map[string][]uint64, need []string, mustF32 func(string) bool, allowNone bool) ([]FileTensor, map[string]int, error) {
	var ts []FileTensor
	index := map[string]int{}
	for p.remaining() > 0 {
		t, err := p.ggmlTensor(want, mustF32)
		if err != nil {
			return nil, nil, err
		}
		if _, dup := index[t.Name]; dup {
			return nil, nil, fmt.Errorf("%w: tensor %q appears twice", ErrCorrupt, t.Name)
		}
		index[t.Name] = len(ts)
		ts = append(ts, t)
		p.skip(int64(t.Bytes))
	}
	if len(ts) == 0 && allowNone {
		return nil, index, nil
	}
	for _, name := range need {
		if _, ok := index[name]; !ok {
			return nil, nil, fmt.Errorf("%w: tensor %q is missing (the file has %d of %d tensors)", ErrCorrupt, name, len(ts), len(need))
		}
	}
	return ts, index, nil
}

func (h WhisperHParams) validate() error {
	check := func(name string, v, lo, hi int) error {
		if v < lo || v > hi {
			return fmt.Errorf("%w: %s = %d is out of range [%d, %d]", ErrCorrupt, name, v, lo, hi)
		}
		return nil
	}
	for _, c := range []struct {
		name      string
		v, lo, hi int
	}{
		{"n_vocab", h.NVocab, 51864, maxWhisperVocab},
		{"n_audio_ctx", h.NAudioCtx, 1, maxWhisperCtx},
		{"n_audio_state", h.NAudioState, 1, maxWhisperState},
		{"n_audio_head", h.NAudioHead, 1, maxWhisperState},
		{"n_audio_layer", h.NAudioLayer, 1, maxWhisperLayers},
		{"n_text_ctx", h.NTextCtx, 4, maxWhisperCtx},
		{"n_text_state", h.NTextState, 1, maxWhisperState},
		{"n_text_head", h.NTextHead, 1, maxWhisperState},
		{"n_text_layer", h.NTextLayer, 1, maxWhisperLayers},
		{"n_mels", h.NMels, 1, maxWhisperMels},
	} {
		if err := check(c.name, c.v, c.lo, c.hi); err != nil {
			return err
		}
	}
	switch {
	case h.NAudioState != h.NTextState:
		return fmt.Errorf("%w: n_audio_state %d differs from n_text_state %d", ErrCorrupt, h.NAudioState, h.NTextState)
	case h.NAudioState%h.NAudioHead != 0 || h.NTextState%h.NTextHead != 0:
		return fmt.Errorf("%w: %d heads do not divide the state width %d", ErrCorrupt, h.NAudioHead, h.NAudioState)
	}
	if _, ok := whisperFileTypes[h.FType]; !ok {
		return fmt.Errorf("%w: unknown ftype %d", ErrCorrupt, h.FType)
	}
	return nil
}

// whisperFileTypes maps ggml file types (enum ggml_ftype) to the type of the
// large matrices.
var whisperFileTypes = map[int]GGMLType{
	0: TypeF32, 1: TypeF16, 2: TypeQ4_0, 3: TypeQ4_1, 7: TypeQ8_0, 8: TypeQ5_0, 9: TypeQ5_1,
	10: TypeQ2_K, 11: TypeQ3_K, 12: TypeQ4_K, 13: TypeQ5_K, 14: TypeQ6_K,
}

// WeightType is the type of the model's large matrices.
func (h WhisperHParams) WeightType() GGMLType { return whisperFileTypes[h.FType] }

func (p *byteParser) ggmlTensor(want map[string][]uint64, mustF32 func(string) bool) (FileTensor, error) {
	var hdr [3]uint32
	for i := range hdr {
		v, err := p.u32("tensor header")
		if err != nil {
			return FileTensor{}, err
		}
		hdr[i] = v
	}
	nDims, nameLen, typ := int32(hdr[0]), int32(hdr[1]), GGMLType(hdr[2])
	// whisper.cpp's loaders take 0 to 4 dimensions: a scalar (real Silero
	// files store one) has ne = {1, 1, 1, 1}, and so one dimension of 1 here.
	if nDims < 0 || nDims > 4 {
		return FileTensor{}, fmt.Errorf("%w: tensor at byte %d has %d dimensions (want 0 to 4)", ErrCorrupt, p.off-12, nDims)
	}
	if nameLen < 1 || nameLen > maxWhisperName {
		return FileTensor{}, fmt.Errorf("%w: tensor at byte %d has a name of %d bytes (want 1 to %d)", ErrCorrupt, p.off-12, nameLen, maxWhisperName)
	}
	t := FileTensor{Type: typ, Dims: make([]uint64, max(nDims, 1))}
	t.Dims[0] = 1
	for i := range nDims {
		v, err := p.u32("tensor dimensions")
		if err != nil {
			return t, err
		}
		if int32(v) < 1 {
			return t, fmt.Errorf("%w: tensor at byte %d has dimension %d = %d", ErrCorrupt, p.off, i, int32(v))
		}
		t.Dims[i] = uint64(v)
	}
	name := make([]byte, nameLen)
	if err := p.read(name, "tensor name"); err != nil {
		return t, err
	}
	t.Name = string(name)
	shape, ok := want[t.Name]
	if !ok {
		return t, fmt.Errorf("%w: unknown tensor %q", ErrCorrupt, t.Name)
	}
	if !typ.Known() {
		return t, fmt.Errorf("%w: tensor %q has unknown ggml type %d", ErrCorrupt, t.Name, uint32(typ))
	}
	if !sameShape(t.Dims, shape) {
		return t, fmt.Errorf("%w: tensor %q has shape %v, want %v", ErrCorrupt, t.Name, t.Dims, shape)
	}
	if len(shape) == 1 || mustF32(t.Name) {
		if typ != TypeF32 {
			return t, fmt.Errorf("%w: tensor %q is %s, want f32", ErrCorrupt, t.Name, typ)
		}
	}
	n, err := TensorBytes(typ, t.Dims)
	if err != nil {
		return t, fmt.Errorf("%w: tensor %q: %v", ErrCorrupt, t.Name, err)
	}
	t.Bytes = n
	t.Offset = p.off
	if int64(n) > p.remaining() {
		return t, fmt.Errorf("%w: tensor %q needs %d bytes, %d remain; the file is truncated", ErrCorrupt, t.Name, n, p.remaining())
	}
	return t, nil
}

// sameShape compares dimensions, ignoring trailing ones of size 1.
func sameShape(a, b []uint64) bool {
	trim := func(d []uint64) []uint64 {
		for len(d) > 1 && d[len(d)-1] == 1 {
			d = d[:len(d)-1]
		}
		return d
	}
	a, b = trim(a), trim(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// isWhisperF32Tensor reports the 2-D tensors that stay f32 in every file.
func isWhisperF32Tensor(name string) bool {
	switch name {
	case "encoder.positional_embedding", "decoder.positional_embedding", "encoder.conv1.bias", "encoder.conv2.bias":
		return true
	}
	return false
}

// WhisperTensorNames lists the tensors of a model with h in a fixed order:
// encoder, then decoder, block by block.
func WhisperTensorNames(h WhisperHParams) []string {
	names := []string{
		"encoder.positional_embedding",
		"encoder.conv1.weight", "encoder.conv1.bias",
		"encoder.conv2.weight", "encoder.conv2.bias",
	}
	attn := func(p string) []string {
		return []string{p + "_ln.weight", p + "_ln.bias", p + ".query.weight", p + ".query.bias", p + ".key.weight", p + ".value.weight", p + ".value.bias", p + ".out.weight", p + ".out.bias"}
	}
	mlp := func(p string) []string {
		return []string{p + "mlp_ln.weight", p + "mlp_ln.bias", p + "mlp.0.weight", p + "mlp.0.bias", p + "mlp.2.weight", p + "mlp.2.bias"}
	}
	for i := range h.NAudioLayer {
		p := fmt.Sprintf("encoder.blocks.%d.", i)
		names = append(names, attn(p+"attn")...)
		names = append(names, mlp(p)...)
	}
	names = append(names, "encoder.ln_post.weight", "encoder.ln_post.bias",
		"decoder.positional_embedding", "decoder.token_embedding.weight")
	for i := range h.NTextLayer {
		p := fmt.Sprintf("decoder.blocks.%d.", i)
		names = append(names, attn(p+"attn")...)
		names = append(names, attn(p+"cross_attn")...)
		names = append(names, mlp(p)...)
	}
	names = append(names, "decoder.ln.weight", "decoder.ln.bias")
	return names
}

// WhisperTensorShapes gives the shape (innermost first) of every tensor of a
// model with h.
func WhisperTensorShapes(h WhisperHParams) map[string][]uint64 {
	s := uint64(h.NAudioState)
	d := func(v ...uint64) []uint64 { return v }
	shapes := map[string][]uint64{
		"encoder.positional_embedding":   d(s, uint64(h.NAudioCtx)),
		"encoder.conv1.weight":           d(3, uint64(h.NMels), s),
		"encoder.conv1.bias":             d(1, s),
		"encoder.conv2.weight":           d(3, s, s),
		"encoder.conv2.bias":             d(1, s),
		"encoder.ln_post.weight":         d(s),
		"encoder.ln_post.bias":           d(s),
		"decoder.positional_embedding":   d(s, uint64(h.NTextCtx)),
		"decoder.token_embedding.weight": d(s, uint64(h.NVocab)),
		"decoder.ln.weight":              d(s),
		"decoder.ln.bias":                d(s),
	}
	block := func(p string, cross bool) {
		attn := []string{"attn"}
		if cross {
			attn = append(attn, "cross_attn")
		}
		for _, a := range attn {
			shapes[p+a+"_ln.weight"] = d(s)
			shapes[p+a+"_ln.bias"] = d(s)
			for _, m := range []string{"query", "key", "value", "out"} {
				shapes[p+a+"."+m+".weight"] = d(s, s)
				if m != "key" {
					shapes[p+a+"."+m+".bias"] = d(s)
				}
			}
		}
		shapes[p+"mlp_ln.weight"] = d(s)
		shapes[p+"mlp_ln.bias"] = d(s)
		shapes[p+"mlp.0.weight"] = d(s, 4*s)
		shapes[p+"mlp.0.bias"] = d(4 * s)
		shapes[p+"mlp.2.weight"] = d(4*s, s)
		shapes[p+"mlp.2.bias"] = d(s)
	}
	for i := range h.NAudioLayer {
		block(fmt.Sprintf("encoder.blocks.%d.", i), false)
	}
	for i := range h.NTextLayer {
		block(fmt.Sprintf("decoder.blocks.%d.", i), true)
	}
	return shapes
}
