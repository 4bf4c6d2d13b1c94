package testmodel

import (
	"fmt"
	"io"
	"math"

	"github.com/owlengine/owl/models"
)

// BertConfig describes a generated BERT-family embedding model with a
// WordPiece vocabulary, pooled as Pooling says: llama.cpp's "bert"
// architecture (learned positions, separate biased Q, K, V, post-norm
// layers, GELU) or, with Arch "nomic-bert", nomic-embed's (rotary
// positions, one fused QKV projection, SwiGLU, no biases but the norms').
type BertConfig struct {
	Name     string
	Arch     string // "bert" (the default) or "nomic-bert"
	Embd     int
	Layers   int
	Heads    int
	FF       int
	Context  int     // trained context: rows of the position embeddings
	Pooling  uint32  // pooling_type: 1 mean, 2 CLS
	RopeBase float32 // nomic-bert's rope.freq_base (nomic-embed: 1000)
	Seed     uint64
}

// TinyNomicBert is TinyBert with nomic-embed's architecture.
func TinyNomicBert() BertConfig {
	c := TinyBert()
	c.Name, c.Arch, c.RopeBase, c.Seed = "owl-test-nomic", "nomic-bert", 1000, 4
	return c
}

// TinyBert is the embedding model tests use: two layers, n_embd 32, mean
// pooling.
func TinyBert() BertConfig {
	return BertConfig{Name: "owl-test-bert", Embd: 32, Layers: 2, Heads: 4, FF: 64, Context: 64, Pooling: 1, Seed: 3}
}

// BertVocab is the generated models' WordPiece vocabulary in llama.cpp's
// form: the five special tokens, then word starts marked with U+2581 and
// continuations bare — every lowercase letter and digit both ways, a few
// punctuation marks and whole words.
func BertVocab() []string {
	v := []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
	for _, w := range []string{"hello", "world", "owl", "the"} {
		v = append(v, "\u2581"+w)
	}
	for c := 'a'; c <= 'z'; c++ {
		v = append(v, "\u2581"+string(c), string(c))
	}
	for c := '0'; c <= '9'; c++ {
		v = append(v, "\u2581"+string(c), string(c))
	}
	for _, p := range []string{".", ",", "!", "?"} {
		v = append(v, "\u2581"+p)
	}
	return v
}

// WriteBert writes the GGUF of c to w; its weights are f32.
func WriteBert(w io.Writer, c BertConfig) error {
	if c.Embd <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.FF <= 0 || c.Context <= 0 || c.Embd%c.Heads != 0 {
		return fmt.Errorf("bert config %+v: sizes must be positive, n_embd a multiple of heads", c)
	}
	arch := c.Arch
	switch arch {
	case "":
		arch = "bert"
	case "bert", "nomic-bert":
	default:
		return fmt.Errorf("bert config: architecture %q (want bert or nomic-bert)", arch)
	}
	nomic := arch == "nomic-bert"
	vocab := BertVocab()
	types := make([]int32, len(vocab))
	for i := range types {
		types[i] = 1 // normal
	}
	types[1] = 2 // unknown
	for _, i := range []int{0, 2, 3, 4} {
		types[i] = 3 // control
	}
	kvs := []models.GGUFKV{
		{Key: "general.architecture", Value: arch},
		{Key: "general.name", Value: c.Name},
		{Key: "general.file_type", Value: uint32(0)},
		{Key: arch + ".context_length", Value: uint32(c.Context)},
		{Key: arch + ".embedding_length", Value: uint32(c.Embd)},
		{Key: arch + ".feed_forward_length", Value: uint32(c.FF)},
		{Key: arch + ".block_count", Value: uint32(c.Layers)},
		{Key: arch + ".attention.head_count", Value: uint32(c.Heads)},
		{Key: arch + ".attention.layer_norm_epsilon", Value: float32(1e-12)},
		{Key: arch + ".attention.causal", Value: false},
		{Key: arch + ".pooling_type", Value: c.Pooling},
		{Key: "tokenizer.ggml.model", Value: "bert"},
		{Key: "tokenizer.ggml.tokens", Value: vocab},
		{Key: "tokenizer.ggml.token_type", Value: types},
		{Key: "tokenizer.ggml.token_type_count", Value: uint32(2)},
		{Key: "tokenizer.ggml.padding_token_id", Value: uint32(0)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: uint32(1)},
		{Key: "tokenizer.ggml.cls_token_id", Value: uint32(2)},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(2)},
		{Key: "tokenizer.ggml.seperator_token_id", Value: uint32(3)},
		{Key: "tokenizer.ggml.mask_token_id", Value: uint32(4)},
		{Key: "tokenizer.ggml.add_bos_token", Value: true},
		{Key: "tokenizer.ggml.add_eos_token", Value: true},
	}
	if nomic {
		kvs = append(kvs, models.GGUFKV{Key: arch + ".rope.freq_base", Value: c.RopeBase})
	}
	var tensors []models.TensorSpec
	add := func(name string, dims []int, gen func(r *rng) float32) {
		n := 1
		ds := make([]uint64, len(dims))
		for i, d := range dims {
			n *= d
			ds[i] = uint64(d)
		}
		tensors = append(tensors, models.TensorSpec{Name: name, Type: models.TypeF32, Dims: ds,
			Write: func(w io.Writer) error {
				r := newRNG(seedFor(c.Seed, name))
				return encodeRows(w, models.TypeF32, n, dims[0], func() float32 { return gen(r) })
			}})
	}
	uniform := func(a float64) func(r *rng) float32 { return func(r *rng) float32 { return r.uniform(float32(a)) } }
	near1 := func(r *rng) float32 { return 1 + r.uniform(0.1) }
	weight := func(name string, in, out int) { add(name, []int{in, out}, uniform(1/math.Sqrt(float64(in)))) }
	add("token_embd.weight", []int{c.Embd, len(vocab)}, uniform(1))
	add("token_types.weight", []int{c.Embd, 2}, uniform(0.1))
	if !nomic {
		add("position_embd.weight", []int{c.Embd, c.Context}, uniform(0.1))
	}
	add("token_embd_norm.weight", []int{c.Embd}, near1)
	add("token_embd_norm.bias", []int{c.Embd}, uniform(0.1))
	for l := range c.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		if nomic {
			weight(p+"attn_qkv.weight", c.Embd, 3*c.Embd)
			weight(p+"attn_output.weight", c.Embd, c.Embd)
		} else {
			for _, qkv := range []string{"attn_q", "attn_k", "attn_v", "attn_output"} {
				weight(p+qkv+".weight", c.Embd, c.Embd)
				add(p+qkv+".bias", []int{c.Embd}, uniform(0.1))
			}
		}
		add(p+"attn_output_norm.weight", []int{c.Embd}, near1)
		add(p+"attn_output_norm.bias", []int{c.Embd}, uniform(0.1))
		if nomic {
			weight(p+"ffn_gate.weight", c.Embd, c.FF)
		}
		weight(p+"ffn_up.weight", c.Embd, c.FF)
		weight(p+"ffn_down.weight", c.FF, c.Embd)
		if !nomic {
			add(p+"ffn_up.bias", []int{c.FF}, uniform(0.1))
			add(p+"ffn_down.bias", []int{c.Embd}, uniform(0.1))
		}
		add(p+"layer_output_norm.weight", []int{c.Embd}, near1)
		add(p+"layer_output_norm.bias", []int{c.Embd}, uniform(0.1))
	}
	return models.WriteGGUF(w, kvs, tensors)
}

// WriteBertFile writes the model to path atomically.
func WriteBertFile(path string, c BertConfig) error {
	return writeFileAtomic(path, func(w io.Writer) error { return WriteBert(w, c) })
}
