package testmodel

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"testing"

	"github.com/owlengine/owl/models"
)

func TestProjectorFiles(t *testing.T) {
	for _, c := range []ProjectorConfig{TinyLlavaProjector(), TinyQwen2VLProjector()} {
		t.Run(c.Type, func(t *testing.T) {
			var a, b bytes.Buffer
			if err := WriteProjector(&a, c); err != nil {
				t.Fatal(err)
			}
			if err := WriteProjector(&b, c); err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(a.Bytes()) != sha256.Sum256(b.Bytes()) {
				t.Fatal("the same config wrote different bytes")
			}
			g, err := models.ParseGGUF(bytes.NewReader(a.Bytes()), int64(a.Len()))
			if err != nil {
				t.Fatal(err)
			}
			if g.Architecture() != "clip" {
				t.Fatalf("architecture %q", g.Architecture())
			}
			if typ, _ := g.String("clip.projector_type"); typ != c.Type {
				t.Fatalf("projector type %q", typ)
			}
			if d, _ := g.Uint("clip.vision.projection_dim"); int(d) != c.TextEmbd {
				t.Fatalf("projection_dim %d", d)
			}
			// The projection's output is as wide as the text model's embeddings.
			i := slices.IndexFunc(g.Tensors, func(ti models.TensorInfo) bool { return ti.Name == "mm.2.weight" })
			if i < 0 || g.Tensors[i].Dims[1] != uint64(c.TextEmbd) || g.Tensors[i].Dims[0] != uint64(c.Hidden) {
				t.Fatalf("mm.2.weight %+v", g.Tensors[i])
			}
			// 16 tensors per block, plus the stem and the projection.
			stem := map[string]int{ProjectorMLP: 5, ProjectorQwen2VL: 4}[c.Type]
			if len(g.Tensors) != 16*c.Layers+stem+4 {
				t.Fatalf("%d tensors", len(g.Tensors))
			}
		})
	}
	bad := TinyLlavaProjector()
	bad.FF = bad.Embd
	if err := WriteProjector(&bytes.Buffer{}, bad); err == nil {
		t.Fatal("a feed-forward width equal to the model width was accepted")
	}
	bad = TinyLlavaProjector()
	bad.Type = "resampler"
	if err := WriteProjector(&bytes.Buffer{}, bad); err == nil {
		t.Fatal("an ungenerated projector type was accepted")
	}
}

// The Qwen2-VL text model has its image delimiters as control tokens, the
// ChatML tokens keep the last ids, and it carries M-RoPE sections.
func TestQwen2VLTextModel(t *testing.T) {
	c := TinyQwen2VL()
	var buf bytes.Buffer
	if err := WriteLlama(&buf, c); err != nil {
		t.Fatal(err)
	}
	g, err := models.ParseGGUF(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	kv, ok := g.Get("qwen2vl.rope.dimension_sections")
	if !ok || !slices.Equal(kv.Value.([]int32), []int32{2, 3, 3, 0}) {
		t.Fatalf("rope sections %+v", kv)
	}
	tokens, _ := g.Get("tokenizer.ggml.tokens")
	toks := tokens.Value.([]string)
	n := len(toks)
	if toks[n-6] != TokenVisionStart || toks[n-5] != TokenVisionEnd || toks[n-4] != TokenBOS || toks[n-1] != TokenImEnd {
		t.Fatalf("last tokens %q", toks[n-6:])
	}
	for _, name := range []string{"blk.0.attn_q.bias", "blk.1.attn_v.bias"} {
		if !slices.ContainsFunc(g.Tensors, func(ti models.TensorInfo) bool { return ti.Name == name }) {
			t.Fatalf("missing %s", name)
		}
	}
	if _, err := buildVocab(512, TokenBOS); err == nil {
		t.Fatal("an extra token that duplicates a special token was accepted")
	}
}
