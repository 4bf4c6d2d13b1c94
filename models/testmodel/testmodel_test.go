package testmodel

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/owlengine/owl/models"
)

func TestLlamaDeterministic(t *testing.T) {
	var a, b bytes.Buffer
	if err := WriteLlama(&a, TinyLlama()); err != nil {
		t.Fatal(err)
	}
	if err := WriteLlama(&b, TinyLlama()); err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(a.Bytes()) != sha256.Sum256(b.Bytes()) {
		t.Fatal("the same config wrote different bytes")
	}
	c := TinyLlama()
	c.Seed = 99
	var other bytes.Buffer
	if err := WriteLlama(&other, c); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), other.Bytes()) {
		t.Fatal("another seed wrote the same bytes")
	}
}

func TestLlamaFileIsValidGGUF(t *testing.T) {
	for _, typ := range []models.GGMLType{models.TypeF32, models.TypeF16, models.TypeQ8_0} {
		c := TinyLlama()
		c.Type = typ
		var buf bytes.Buffer
		if err := WriteLlama(&buf, c); err != nil {
			t.Fatal(err)
		}
		g, err := models.ParseGGUF(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		s := g.Summary()
		if s.FileType != typ.String() || s.VocabSize != c.Vocab || s.Architecture != "llama" || s.ChatTemplate == "" {
			t.Fatalf("%s: summary %+v", typ, s)
		}
		// 9 tensors per layer, embeddings, output norm and output.
		if s.TensorCount != 9*c.Layers+3 {
			t.Fatalf("%s: %d tensors", typ, s.TensorCount)
		}
	}
}

// Every merge joins two existing tokens into another existing token, and the
// token texts are unique: what llama.cpp's BPE needs.
func TestVocabIsConsistent(t *testing.T) {
	for _, size := range []int{300, 512, 5000} {
		v, err := buildVocab(size)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.tokens) != size || len(v.types) != size {
			t.Fatalf("size %d: %d tokens, %d types", size, len(v.tokens), len(v.types))
		}
		index := map[string]int{}
		for i, tok := range v.tokens {
			if _, dup := index[tok]; dup {
				t.Fatalf("size %d: token %q twice", size, tok)
			}
			index[tok] = i
		}
		for _, m := range v.merges {
			a, b, ok := strings.Cut(m, " ")
			_, okA := index[a]
			_, okB := index[b]
			_, okAB := index[a+b]
			if !ok || !okA || !okB || !okAB {
				t.Fatalf("size %d: merge %q joins unknown tokens", size, m)
			}
		}
	}
	if _, err := buildVocab(100); err == nil {
		t.Fatal("a vocabulary smaller than the byte tokens was built")
	}
}

func TestPretokenize(t *testing.T) {
	got := pretokenize("Hello, world 42!")
	want := []string{"Hello", ",", " world", " 42", "!"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
}
