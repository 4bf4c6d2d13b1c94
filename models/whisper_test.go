package models_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

func microBin(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := testmodel.WriteWhisper(&buf, testmodel.WhisperMicro(testmodel.VocabEnglish, 1)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// smallestWhisper builds a complete model file with the smallest sizes the
// format allows (all data zero), cut before the token embedding, the one
// tensor that stays large (51864 rows).
func smallestWhisper(t testing.TB) []byte {
	t.Helper()
	h := models.WhisperHParams{NVocab: 51864, NAudioCtx: 2, NAudioState: 2, NAudioHead: 1, NAudioLayer: 1,
		NTextCtx: 4, NTextState: 2, NTextHead: 1, NTextLayer: 1, NMels: 1, FType: 1}
	le := binary.LittleEndian
	var b []byte
	b = le.AppendUint32(b, 0x67676d6c)
	for _, v := range []int{h.NVocab, h.NAudioCtx, h.NAudioState, h.NAudioHead, h.NAudioLayer, h.NTextCtx, h.NTextState, h.NTextHead, h.NTextLayer, h.NMels, h.FType} {
		b = le.AppendUint32(b, uint32(v))
	}
	b = le.AppendUint32(b, 1)
	b = le.AppendUint32(b, 201)
	b = append(b, make([]byte, 4*201)...)
	b = le.AppendUint32(b, 2) // two stored tokens
	b = append(b, 1, 0, 0, 0, 'a', 1, 0, 0, 0, ' ')
	shapes := models.WhisperTensorShapes(h)
	for _, name := range models.WhisperTensorNames(h) {
		if name == "decoder.token_embedding.weight" {
			break // the only large tensor; what follows is cut as well
		}
		dims := shapes[name]
		typ := models.TypeF32
		b = le.AppendUint32(b, uint32(len(dims)))
		b = le.AppendUint32(b, uint32(len(name)))
		b = le.AppendUint32(b, uint32(typ))
		n := 4
		for _, d := range dims {
			b = le.AppendUint32(b, uint32(d))
			n *= int(d)
		}
		b = append(b, name...)
		b = append(b, make([]byte, n)...)
	}
	if _, err := parseWhisper(b); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("seed should parse up to the missing embedding: %v", err)
	}
	return b
}

func parseWhisper(b []byte) (*models.WhisperFile, error) {
	return models.ParseWhisper(bytes.NewReader(b), int64(len(b)))
}

func put32(b []byte, off int, v uint32) []byte {
	out := bytes.Clone(b)
	binary.LittleEndian.PutUint32(out[off:], v)
	return out
}

func TestWhisperSpecialTokens(t *testing.T) {
	for _, tc := range []struct {
		vocab                         int
		eot, sot, transcribe, not, ts int
		langs                         int
	}{
		{51864, 50256, 50257, 50358, 50362, 50363, 99},
		{51865, 50257, 50258, 50359, 50363, 50364, 99},
		{51866, 50257, 50258, 50360, 50364, 50365, 100},
	} {
		h := models.WhisperHParams{NVocab: tc.vocab}
		s := h.SpecialTokens()
		if s.EOT != tc.eot || s.SOT != tc.sot || s.Transcribe != tc.transcribe || s.NoTimestamps != tc.not || s.TimestampBegin != tc.ts || h.NumLanguages() != tc.langs {
			t.Errorf("vocab %d: %+v, %d languages", tc.vocab, s, h.NumLanguages())
		}
		// 1501 timestamps: 0.00 to 30.00 s in 20 ms steps.
		if tc.vocab-s.TimestampBegin != 1501 {
			t.Errorf("vocab %d: %d timestamp tokens", tc.vocab, tc.vocab-s.TimestampBegin)
		}
	}
}

// The sizes whisper.cpp's headers describe, as its loader names them
// (large-v3 and turbo told apart from large by the vocabulary, turbo from
// large-v3 by its 4 decoder layers).
func TestWhisperSizeNames(t *testing.T) {
	for _, tc := range []struct {
		audio, text, vocab int
		want               string
	}{
		{4, 4, 51864, "tiny"}, {6, 6, 51865, "base"}, {12, 12, 51865, "small"}, {24, 24, 51864, "medium"},
		{32, 32, 51865, "large"}, {32, 32, 51866, "large-v3"}, {32, 4, 51866, "large-v3-turbo"},
	} {
		h := models.WhisperHParams{NAudioLayer: tc.audio, NTextLayer: tc.text, NVocab: tc.vocab}
		if got := h.SizeName(); got != tc.want {
			t.Errorf("%d+%d layers, %d tokens: %q, want %q", tc.audio, tc.text, tc.vocab, got, tc.want)
		}
	}
}

func TestWhisperCorrupt(t *testing.T) {
	data := microBin(t)
	good, err := parseWhisper(data)
	if err != nil {
		t.Fatal(err)
	}
	first := good.Tensors[0]
	// The first tensor record: n_dims, name length, type, dims, name.
	rec := int(first.Offset) - 12 - 4*len(first.Dims) - len(first.Name)
	last := good.Tensors[len(good.Tensors)-1]
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not a whisper.cpp model"},
		{"bad magic", put32(data, 0, 0x46554747), "not a whisper.cpp model"},
		{"truncated header", data[:20], "truncated"},
		{"absurd n_vocab", put32(data, 4, 1<<30), "n_vocab"},
		{"heads do not divide", put32(data, 16, 7), "heads"},
		{"unknown ftype", put32(data, 44, 55), "ftype"},
		{"wrong filter width", put32(data, 52, 200), "mel filters"},
		{"truncated tensor data", data[:len(data)-100], "truncated"},
		{"missing tensor", data[:last.Offset-int64(12+4*len(last.Dims)+len(last.Name))], "missing"},
		{"five dimensions", put32(data, rec, 5), "5 dimensions"},
		{"absurd name length", put32(data, rec+4, 1<<31-1), "name of"},
		{"unknown ggml type", put32(data, rec+8, 99), "unknown ggml type 99"},
		{"wrong shape", put32(data, rec+12, 65), "shape"},
		{"unknown tensor name", append(bytes.Clone(data[:rec+12+4*len(first.Dims)]), append([]byte("encoder.positional_embeddinx"), data[rec+12+4*len(first.Dims)+len(first.Name):]...)...), "unknown tensor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseWhisper(tc.data)
			if err == nil {
				t.Fatal("parsed")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			if !errors.Is(err, models.ErrCorrupt) && !errors.Is(err, models.ErrNotWhisper) {
				t.Fatalf("error %q wraps neither ErrCorrupt nor ErrNotWhisper", err)
			}
		})
	}
}

func TestReadWhisperNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ggml-x.bin")
	if err := os.WriteFile(p, microBin(t)[:1000], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := models.ReadWhisper(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v", err)
	}
	if _, err := models.ReadWhisper(p + ".missing"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing: %v", err)
	}
}

// FuzzParseWhisper: any bytes give a model header or an error, never a panic
// or an allocation beyond the input's size.
func FuzzParseWhisper(f *testing.F) {
	// Small seeds keep the fuzzer fast: a whole model with minimal sizes,
	// and the start of a real one.
	f.Add(smallestWhisper(f))
	f.Add(microBin(f)[:8192])
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		wf, err := parseWhisper(b)
		if err != nil {
			return
		}
		for _, ti := range wf.Tensors {
			if ti.Offset+int64(ti.Bytes) > int64(len(b)) {
				t.Fatalf("tensor %q extends past the input", ti.Name)
			}
		}
	})
}

func TestWhisperGGUFConversion(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "ggml-micro.bin")
	data := microBin(t)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	wf, err := models.ReadWhisper(src)
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	out, err := models.WhisperGGUF(src, wf, cache)
	if err != nil {
		t.Fatal(err)
	}
	g, err := models.ReadGGUF(out)
	if err != nil {
		t.Fatal(err)
	}
	if g.Architecture() != "whisper" || len(g.Tensors) != len(wf.Tensors) {
		t.Fatalf("arch %q, %d tensors", g.Architecture(), len(g.Tensors))
	}
	// Tensor bytes are copied unchanged, types kept.
	gguf, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for i, ti := range g.Tensors {
		st := wf.Tensors[i]
		if ti.Name != st.Name || ti.Type != st.Type || ti.Bytes != st.Bytes {
			t.Fatalf("tensor %d: %+v vs %+v", i, ti, st)
		}
		a := gguf[g.DataOffset+int64(ti.Offset):][:ti.Bytes]
		b := data[st.Offset:][:st.Bytes]
		if !bytes.Equal(a, b) {
			t.Fatalf("tensor %s data differs", ti.Name)
		}
	}
	// A second call reuses the file; a changed source gets a new one.
	st1, _ := os.Stat(out)
	again, err := models.WhisperGGUF(src, wf, cache)
	if err != nil || again != out {
		t.Fatalf("second conversion: %v, %s vs %s", err, again, out)
	}
	st2, _ := os.Stat(again)
	if !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatal("the cached GGUF was written again")
	}
	if err := os.WriteFile(src, testmodelBytes(t, testmodel.WhisperMicro(testmodel.VocabEnglish, 0)), 0o644); err != nil {
		t.Fatal(err)
	}
	wf2, err := models.ReadWhisper(src)
	if err != nil {
		t.Fatal(err)
	}
	other, err := models.WhisperGGUF(src, wf2, cache)
	if err != nil || other == out {
		t.Fatalf("changed source reused %s (%v)", other, err)
	}
}

func testmodelBytes(t testing.TB, c testmodel.WhisperConfig) []byte {
	var buf bytes.Buffer
	if err := testmodel.WriteWhisper(&buf, c); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sileroBytes(t testing.TB) []byte {
	var buf bytes.Buffer
	if err := testmodel.WriteSilero(&buf, testmodel.SileroV5()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSileroParse(t *testing.T) {
	data := sileroBytes(t)
	f, err := models.ParseSilero(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != "silero-16k" || f.Version != "5.1.2" || f.Window != 512 || len(f.Encoder) != 4 || f.LSTMHidden != 128 || len(f.Tensors) != 15 {
		t.Fatalf("%+v", f)
	}
	// Corruptions: wrong magic, absurd layer count, a broken chain of
	// channels, truncated data.
	bad := func(off int, v uint32) []byte {
		b := bytes.Clone(data)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	hdr := 4 + 4 + len("silero-16k")
	for name, b := range map[string][]byte{
		"magic":         bad(0, 1),
		"layers":        bad(hdr+20, 1000),
		"channels":      bad(hdr+24+4, 77),
		"truncated":     data[:len(data)-10],
		"type length":   bad(4, 1<<30),
		"empty":         nil,
		"lstm mismatch": bad(hdr+24+48, 99),
	} {
		if _, err := models.ParseSilero(bytes.NewReader(b), int64(len(b))); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func FuzzParseSilero(f *testing.F) {
	f.Add(sileroBytes(f)[:4096])
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		sf, err := models.ParseSilero(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, ti := range sf.Tensors {
			if ti.Offset+int64(ti.Bytes) > int64(len(b)) {
				t.Fatalf("tensor %q extends past the input", ti.Name)
			}
		}
	})
}
