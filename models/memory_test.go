package models_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

func parseGGUFBytes(t *testing.T, b []byte) *models.GGUF {
	t.Helper()
	g, err := models.ParseGGUF(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestEstimateMemoryTinyLlama(t *testing.T) {
	for _, tc := range []struct {
		name            string
		trained, nCtx   int
		wantCtx, wantKV uint64
	}{
		// 2 layers × n_ctx × 2 KV heads × (16 + 16) head dims × 2 bytes.
		{"default context", 4096, 0, 4096, 2 * 4096 * 2 * 32 * 2},
		{"short trained context caps the default", 1024, 0, 1024, 2 * 1024 * 2 * 32 * 2},
		{"context given", 4096, 256, 256, 2 * 256 * 2 * 32 * 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testmodel.TinyLlama()
			c.Context = tc.trained
			var buf bytes.Buffer
			if err := testmodel.WriteLlama(&buf, c); err != nil {
				t.Fatal(err)
			}
			g := parseGGUFBytes(t, buf.Bytes())
			m := g.EstimateMemory(uint64(tc.nCtx))
			if m.Weights != g.Summary().TensorBytes || m.Weights == 0 {
				t.Errorf("weights %d, tensors hold %d", m.Weights, g.Summary().TensorBytes)
			}
			if m.Context != tc.wantCtx || m.KVCache != tc.wantKV {
				t.Errorf("context %d, KV %d; want %d, %d", m.Context, m.KVCache, tc.wantCtx, tc.wantKV)
			}
			// Activations: the attention scores (4 heads × n_ctx × 512 f32)
			// outgrow the logits (512 tokens × 512 f32) here.
			scores := uint64(4) * tc.wantCtx * 512 * 4
			hidden := uint64(512) * (4*64 + 2*128) * 4
			if want := uint64(16<<20) + max(scores, 512*512*4) + hidden; m.Compute != want {
				t.Errorf("compute %d, want %d", m.Compute, want)
			}
			if m.Total() != m.Weights+m.KVCache+m.Compute {
				t.Errorf("total %d is not the sum of %+v", m.Total(), m)
			}
		})
	}
}

// Llama 3.2 1B's hyper-parameters; llama.cpp reports its f16 KV cache at
// 4096 tokens as 128 MiB.
func TestEstimateMemoryMatchesLlamaCppKV(t *testing.T) {
	kvs := []models.GGUFKV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "llama.context_length", Value: uint32(131072)},
		{Key: "llama.embedding_length", Value: uint32(2048)},
		{Key: "llama.block_count", Value: uint32(16)},
		{Key: "llama.feed_forward_length", Value: uint32(8192)},
		{Key: "llama.attention.head_count", Value: uint32(32)},
		{Key: "llama.attention.head_count_kv", Value: uint32(8)},
		{Key: "llama.vocab_size", Value: uint32(128256)},
	}
	var buf bytes.Buffer
	if err := models.WriteGGUF(&buf, kvs, nil); err != nil {
		t.Fatal(err)
	}
	m := parseGGUFBytes(t, buf.Bytes()).EstimateMemory(0)
	if m.Context != 4096 || m.KVCache != 128<<20 {
		t.Fatalf("context %d, KV %d; want 4096 and 128 MiB", m.Context, m.KVCache)
	}
	// The logits of a 512-token batch (128256 × 512 f32, 250.5 MiB) are
	// smaller than the scores (32 heads × 4096 × 512 f32, 256 MiB).
	if m.Compute < 256<<20 || m.Compute > 400<<20 {
		t.Fatalf("compute %d MiB, want between 256 and 400", m.Compute>>20)
	}
}

func TestEstimateMemoryProjector(t *testing.T) {
	kvs := []models.GGUFKV{
		{Key: "general.architecture", Value: "clip"},
		{Key: "clip.vision.image_size", Value: uint32(224)},
		{Key: "clip.vision.patch_size", Value: uint32(14)},
		{Key: "clip.vision.attention.head_count", Value: uint32(4)},
	}
	var buf bytes.Buffer
	spec := models.TensorSpec{Name: "v.patch_embd.weight", Type: models.TypeF32, Dims: []uint64{8, 8}}
	spec.Write = writeZeros(256)
	if err := models.WriteGGUF(&buf, kvs, []models.TensorSpec{spec}); err != nil {
		t.Fatal(err)
	}
	m := parseGGUFBytes(t, buf.Bytes()).EstimateMemory(0)
	patches := uint64(16 * 16)
	if m.Weights != 256 || m.KVCache != 0 || m.Context != 0 || m.Compute != 16<<20+4*patches*patches*4 {
		t.Fatalf("%+v", m)
	}
}

func TestEstimateMemoryWhisperAndSilero(t *testing.T) {
	dir := t.TempDir()
	wpath := filepath.Join(dir, "ggml-micro.bin")
	if err := testmodel.WriteWhisperFile(wpath, testmodel.WhisperMicro(testmodel.VocabEnglish, 1)); err != nil {
		t.Fatal(err)
	}
	wf, err := models.ReadWhisper(wpath)
	if err != nil {
		t.Fatal(err)
	}
	m, err := models.EstimateMemory(wpath, 0)
	if err != nil {
		t.Fatal(err)
	}
	var weights uint64
	for _, ten := range wf.Tensors {
		weights += ten.Bytes
	}
	// micro: 2 decoder layers, 448 text positions, n_state 64, 1500 audio
	// positions, 2 heads, 80 mels.
	self, cross := uint64(2*448*64*2*2), uint64(2*1500*64*2*2)
	// Compute: the encoder's scores, a mel window and the logits of a
	// step of 64 sequences over the 51864-token vocabulary.
	if m.Weights != weights || m.KVCache != 5*self+cross || m.Compute != 16<<20+2*1500*1500*4+80*3000*4+64*51864*4 {
		t.Fatalf("whisper estimate %+v; weights %d, KV %d", m, weights, 5*self+cross)
	}
	// Transcriptions at once each have caches of their own.
	if four := wf.EstimateMemory(4); four.KVCache != 4*m.KVCache || four.Weights != m.Weights || four.Compute != m.Compute {
		t.Fatalf("four transcriptions: %+v, one: %+v", four, m)
	}
	st, _ := os.Stat(wpath)
	if m.Weights >= uint64(st.Size()) {
		t.Fatalf("weights %d not below the file size %d (the header holds the vocabulary)", m.Weights, st.Size())
	}

	spath := filepath.Join(dir, "ggml-silero.bin")
	if err := testmodel.WriteSileroFile(spath, testmodel.SileroV5()); err != nil {
		t.Fatal(err)
	}
	sm, err := models.EstimateMemory(spath, 0)
	if err != nil {
		t.Fatal(err)
	}
	if sm.Weights == 0 || sm.KVCache != 0 || sm.Compute != 16<<20 {
		t.Fatalf("silero estimate %+v", sm)
	}
}

func TestEstimateMemoryBadFiles(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("not a model at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{text, dir, filepath.Join(dir, "absent")} {
		if _, err := models.EstimateMemory(p, 0); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v does not name the file", p, err)
		}
	}
}

func writeZeros(n int) func(w io.Writer) error {
	return func(w io.Writer) error { _, err := w.Write(make([]byte, n)); return err }
}
