package models

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sampleGGUF writes a small GGUF with one value of every type and three tensors.
func sampleGGUF(t testing.TB) []byte {
	t.Helper()
	kvs := []GGUFKV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "general.name", Value: "sample"},
		{Key: "llama.context_length", Value: uint32(2048)},
		{Key: "llama.embedding_length", Value: uint32(64)},
		{Key: "llama.rope.freq_base", Value: float32(10000)},
		{Key: "u8", Value: uint8(1)}, {Key: "i8", Value: int8(-1)},
		{Key: "u16", Value: uint16(2)}, {Key: "i16", Value: int16(-2)},
		{Key: "i32", Value: int32(-3)}, {Key: "u64", Value: uint64(4)},
		{Key: "i64", Value: int64(-4)}, {Key: "f64", Value: 0.5}, {Key: "b", Value: true},
		{Key: "tokenizer.ggml.tokens", Value: []string{"a", "b", "ü"}},
		{Key: "tokenizer.ggml.token_type", Value: []int32{1, 1, 3}},
		{Key: "floats", Value: []float32{1, 2}},
		{Key: "flags", Value: []bool{true, false}},
	}
	tensor := func(name string, typ GGMLType, dims ...uint64) TensorSpec {
		n, err := TensorBytes(typ, dims)
		if err != nil {
			t.Fatal(err)
		}
		return TensorSpec{Name: name, Type: typ, Dims: dims, Write: func(w io.Writer) error {
			_, err := w.Write(bytes.Repeat([]byte{0x3c}, int(n)))
			return err
		}}
	}
	var buf bytes.Buffer
	err := WriteGGUF(&buf, kvs, []TensorSpec{
		tensor("token_embd.weight", TypeF16, 64, 3),
		tensor("blk.0.attn_q.weight", TypeQ8_0, 64, 64),
		tensor("output_norm.weight", TypeF32, 64),
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func parse(b []byte) (*GGUF, error) { return ParseGGUF(bytes.NewReader(b), int64(len(b))) }

func TestGGUFRoundTrip(t *testing.T) {
	data := sampleGGUF(t)
	g, err := parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if g.Version != 3 || g.Architecture() != "llama" || len(g.Tensors) != 3 {
		t.Fatalf("version %d arch %q tensors %d", g.Version, g.Architecture(), len(g.Tensors))
	}
	for key, want := range map[string]any{"u8": uint8(1), "i8": int8(-1), "u16": uint16(2), "i16": int16(-2),
		"i32": int32(-3), "u64": uint64(4), "i64": int64(-4), "f64": 0.5, "b": true} {
		kv, ok := g.Get(key)
		if !ok || kv.Value != want {
			t.Errorf("%s = %#v, want %#v", key, kv.Value, want)
		}
	}
	if n, _ := g.ArrayLen("tokenizer.ggml.tokens"); n != 3 {
		t.Errorf("tokens array length %d", n)
	}
	if kv, _ := g.Get("tokenizer.ggml.tokens"); kv.Value.([]string)[2] != "ü" {
		t.Errorf("tokens %v", kv.Value)
	}
	if kv, _ := g.Get("flags"); kv.ArrayType != GGUFBool || !kv.Value.([]bool)[0] {
		t.Errorf("flags %#v", kv)
	}
	// Tensors are 32-byte aligned and their bytes are where the directory says.
	for _, ti := range g.Tensors {
		start := g.DataOffset + int64(ti.Offset)
		if start%32 != 0 {
			t.Errorf("%s starts at %d, not aligned", ti.Name, start)
		}
		if data[start] != 0x3c || data[start+int64(ti.Bytes)-1] != 0x3c {
			t.Errorf("%s: data not at its offset", ti.Name)
		}
	}
	s := g.Summary()
	if s.ContextLength != 2048 || s.Name != "sample" || s.VocabSize != 3 || s.TensorCount != 3 {
		t.Fatalf("summary %+v", s)
	}
	if s.FileType != "q8_0" || s.ByType[0].Bytes != 64*64/32*34 {
		t.Fatalf("by type %+v", s.ByType)
	}
	if s.Hyper["embedding_length"] != "64" || s.Hyper["rope.freq_base"] != "10000" {
		t.Fatalf("hyper-parameters %v", s.Hyper)
	}
	if s.Params != 64*3+64*64+64 {
		t.Fatalf("params %d", s.Params)
	}
}

// corrupt returns a copy of data with b written at off.
func corrupt(data []byte, off int, b []byte) []byte {
	out := bytes.Clone(data)
	copy(out[off:], b)
	return out
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func TestGGUFCorrupt(t *testing.T) {
	data := sampleGGUF(t)
	g, _ := parse(data)
	// The first tensor record follows the metadata; find it by its name.
	nameAt := bytes.Index(data, []byte("token_embd.weight"))
	ndimsAt := nameAt + len("token_embd.weight")
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not a GGUF"},
		{"bad magic", corrupt(data, 0, []byte("GGML")), "not a GGUF"},
		{"version 1", corrupt(data, 4, u32(1)), "version 1"},
		{"truncated header", data[:30], "truncated"},
		{"truncated data", data[:len(data)-10], "truncated"},
		{"absurd tensor count", corrupt(data, 8, u64(1<<40)), "claims"},
		{"absurd key length", corrupt(data, 24, u64(1<<50)), "past the end"},
		{"five dimensions", corrupt(data, ndimsAt, u32(5)), "5 dimensions"},
		{"unknown type", corrupt(data, ndimsAt+4+16, u32(99)), "unknown ggml type 99"},
		{"q8_0 row not whole blocks", corrupt(data, bytes.Index(data, []byte("blk.0.attn_q.weight"))+19+4, u64(33)), "block size"},
		{"misaligned offset", corrupt(data, ndimsAt+4+16+4, u64(3)), "not aligned"},
		{"offset past the end", corrupt(data, ndimsAt+4+16+4, u64(uint64(g.FileSize))), "past the end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(tc.data)
			if err == nil {
				t.Fatal("parsed")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotGGUF) {
				t.Fatalf("error %q wraps neither ErrCorrupt nor ErrNotGGUF", err)
			}
		})
	}
}

func TestReadGGUFNamesFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.gguf")
	if err := os.WriteFile(p, []byte("nope"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadGGUF(p)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want the path in it", err)
	}
	if _, err := ReadGGUF(dir); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("directory: %v", err)
	}
}

func TestTensorBytesOverflow(t *testing.T) {
	if _, err := TensorBytes(TypeF32, []uint64{1 << 40, 1 << 40, 1 << 40}); err == nil {
		t.Fatal("overflowing tensor accepted")
	}
	if n, err := TensorBytes(TypeQ4_0, []uint64{64, 2}); err != nil || n != 2*2*18 {
		t.Fatalf("q4_0 64x2 = %d, %v", n, err)
	}
}

// FuzzParseGGUF: any bytes give a GGUF or an error, never a panic or a huge
// allocation; what parses satisfies the reader's own invariants.
func FuzzParseGGUF(f *testing.F) {
	data := sampleGGUF(f)
	f.Add(data)
	f.Add(data[:64])
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	if seeds, err := filepath.Glob("testdata/*.gguf"); err == nil {
		for _, s := range seeds {
			if b, err := os.ReadFile(s); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		g, err := parse(b)
		if err != nil {
			return
		}
		for _, ti := range g.Tensors {
			if g.DataOffset+int64(ti.Offset)+int64(ti.Bytes) > int64(len(b)) {
				t.Fatalf("tensor %q extends past the input", ti.Name)
			}
		}
		_ = g.Summary()
	})
}

// Files llama.cpp's own GGUF reader would abort on are refused.
func TestGGUFRefusesWhatLlamaCppAsserts(t *testing.T) {
	for name, kvs := range map[string][]GGUFKV{
		"empty key":         {{Key: "", Value: uint32(1)}},
		"alignment as u64":  {{Key: "general.alignment", Value: uint64(32)}},
		"alignment as i32":  {{Key: "general.alignment", Value: int32(32)}},
		"alignment as text": {{Key: "general.alignment", Value: "32"}},
	} {
		var b bytes.Buffer
		if err := WriteGGUF(&b, kvs, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := parse(b.Bytes()); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}
