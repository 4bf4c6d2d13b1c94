package llama

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

func tinyModel(t testing.TB) *Model {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := testmodel.WriteLlamaFile(path, testmodel.TinyLlama()); err != nil {
		t.Fatal(err)
	}
	m, err := LoadModel(path, ModelParams{UseMmap: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// owl's table of ggml type layouts must match the compiled ggml exactly.
func TestTypeLayoutsMatchGGML(t *testing.T) {
	for i := 0; i < 64; i++ {
		bs, ts, ok := TypeLayout(i)
		mt := models.GGMLType(i)
		if ok != mt.Known() {
			t.Errorf("type %d: ggml knows it: %v, owl knows it: %v", i, ok, mt.Known())
			continue
		}
		if ok && (bs != mt.BlockSize() || ts != mt.TypeSize()) {
			t.Errorf("type %s: ggml block %d × %d bytes, owl %d × %d", mt, bs, ts, mt.BlockSize(), mt.TypeSize())
		}
	}
}

func TestModelFacts(t *testing.T) {
	m := tinyModel(t)
	c := testmodel.TinyLlama()
	if m.NumVocab() != c.Vocab || m.NumEmbd() != c.Embd || m.NumLayer() != c.Layers || m.TrainContext() != c.Context {
		t.Fatalf("vocab %d embd %d layers %d ctx %d, want %+v", m.NumVocab(), m.NumEmbd(), m.NumLayer(), m.TrainContext(), c)
	}
	md := m.Metadata()
	if md["general.name"] != c.Name || md["general.architecture"] != "llama" {
		t.Fatalf("metadata name %q arch %q", md["general.name"], md["general.architecture"])
	}
	if m.ChatTemplate() != testmodel.ChatMLTemplate {
		t.Fatalf("chat template %q", m.ChatTemplate())
	}
	if m.BOS() != int32(c.Vocab-4) || !m.IsEOG(int32(c.Vocab-1)) || !m.IsEOG(m.EOS()) || m.IsEOG(100) {
		t.Fatalf("special tokens: bos %d eos %d", m.BOS(), m.EOS())
	}
	if !m.IsControl(m.BOS()) || m.Piece(m.BOS()) != "" {
		t.Fatalf("BOS should be a control token rendering as nothing, got %q", m.Piece(m.BOS()))
	}
}

func TestDecodeErrors(t *testing.T) {
	m := tinyModel(t)
	ctx, err := NewContext(m, ContextParams{NumCtx: 256, NumBatch: 8, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	if _, err := ctx.Decode(make([]Token, 9), make([]int32, 9), make([]int32, 9), make([]bool, 9)); err == nil || !strings.Contains(err.Error(), "batch size") {
		t.Fatalf("oversized batch: %v", err)
	}
	if _, err := ctx.Decode([]Token{1, 2}, []int32{0}, []int32{0, 0}, []bool{true, true}); err == nil {
		t.Fatal("mismatched slices accepted")
	}
	if _, err := NewContext(m, ContextParams{NumCtx: 256, NumBatch: 8, Threads: 1, KVType: "q3"}); err == nil {
		t.Fatal("unknown kv type accepted")
	}
	ctx.Close()
	ctx.Close() // idempotent
}

// Two sequences decoded in one batch give the logits each gives alone.
func TestMultiSequenceDecode(t *testing.T) {
	m := tinyModel(t)
	a, _ := m.Tokenize("The owl sat", true, false)
	b, _ := m.Tokenize("Hello, world", true, false)
	alone := func(toks []Token) []float32 {
		ctx, err := NewContext(m, ContextParams{NumCtx: 256, NumBatch: 64, Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer ctx.Close()
		pos, seq, want := make([]int32, len(toks)), make([]int32, len(toks)), make([]bool, len(toks))
		for i := range pos {
			pos[i] = int32(i)
		}
		want[len(want)-1] = true
		out, err := ctx.Decode(toks, pos, seq, want)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Clone(out)
	}
	la, lb := alone(a), alone(b)

	ctx, err := NewContext(m, ContextParams{NumCtx: 256, NumBatch: 64, NumSeq: 2, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	var toks []Token
	var pos, seq []int32
	var want []bool
	for s, ts := range [][]Token{a, b} {
		for i, tok := range ts {
			toks = append(toks, tok)
			pos = append(pos, int32(i))
			seq = append(seq, int32(s))
			want = append(want, i == len(ts)-1)
		}
	}
	out, err := ctx.Decode(toks, pos, seq, want)
	if err != nil {
		t.Fatal(err)
	}
	n := m.NumVocab()
	for i, ref := range [][]float32{la, lb} {
		got := out[i*n : (i+1)*n]
		for j := range ref {
			if d := got[j] - ref[j]; d > 1e-3 || d < -1e-3 {
				t.Fatalf("sequence %d logit %d: batched %v, alone %v", i, j, got[j], ref[j])
			}
		}
	}
}

func TestLoadFailureReason(t *testing.T) {
	c := testmodel.TinyLlama()
	c.Arch = "owlnet"
	path := filepath.Join(t.TempDir(), "x.gguf")
	if err := testmodel.WriteLlamaFile(path, c); err != nil {
		t.Fatal(err)
	}
	_, err := LoadModel(path, ModelParams{})
	if err == nil || !strings.Contains(err.Error(), "owlnet") {
		t.Fatalf("err = %v, want the unknown architecture named", err)
	}
}

func TestChatTemplateErrors(t *testing.T) {
	if _, err := ApplyChatTemplate("{{ not a known template }}", []ChatMessage{{"user", "x"}}, true); err == nil {
		t.Fatal("unknown template accepted")
	}
	if _, err := ApplyChatTemplate("chatml", []ChatMessage{{"user", "a\x00b"}}, true); err == nil {
		t.Fatal("NUL byte accepted")
	}
	long := strings.Repeat("owl ", 5000)
	out, err := ApplyChatTemplate("chatml", []ChatMessage{{"user", long}}, true)
	if err != nil || !strings.Contains(out, long) {
		t.Fatalf("long message: %v", err)
	}
}

// A -march=native build must compile ggml with the SIMD the CPU has; cgo
// compiles C without it unless the flags reach every package.
func TestFeaturesMatchNativeCPU(t *testing.T) {
	var names []string
	for _, f := range Features() {
		names = append(names, f.Name)
	}
	if len(names) == 0 {
		t.Fatal("no backend features reported")
	}
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil || runtime.GOARCH != "amd64" || !strings.Contains(os.Getenv("CGO_CFLAGS"), "-march=native") {
		t.Skipf("not a -march=native amd64 Linux build; compiled features: %v", names)
	}
	flags := map[string]bool{}
	for line := range strings.Lines(string(cpuinfo)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			for _, f := range strings.Fields(v) {
				flags[f] = true
			}
			break
		}
	}
	for cpu, feature := range map[string]string{"avx2": "AVX2", "fma": "FMA", "f16c": "F16C", "avx512f": "AVX512"} {
		if flags[cpu] && !slices.Contains(names, feature) {
			t.Errorf("the CPU has %s but ggml was compiled without %s (features %v)", cpu, feature, names)
		}
	}
}

func BenchmarkDecodeCrossing(b *testing.B) {
	m := tinyModel(b)
	ctx, err := NewContext(m, ContextParams{NumCtx: 512, NumBatch: 8, Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer ctx.Close()
	b.ReportAllocs()
	pos := []int32{0}
	for b.Loop() {
		ctx.SeqRemove(0, 0, -1)
		if _, err := ctx.Decode([]Token{1}, pos, []int32{0}, []bool{true}); err != nil {
			b.Fatal(err)
		}
	}
}
