package testmodel

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/owlengine/owl/models"
)

// LlamaConfig describes a generated llama-architecture text model.
type LlamaConfig struct {
	Name      string
	Embd      int // n_embd
	Layers    int
	Heads     int
	HeadsKV   int
	FF        int // feed-forward width
	Vocab     int // tokens, including the 4 special ones
	Context   int // trained context length written to the metadata
	RopeBase  float32
	Type      models.GGMLType // of the 2-D weights: f32, f16 or q8_0; norms stay f32
	Seed      uint64
	Arch      string // general.architecture; "llama" unless a test wants another
	NoChatTpl bool   // leave out tokenizer.chat_template
	ChatTpl   string // tokenizer.chat_template instead of ChatML's
	Tied      bool   // no output.weight: logits come from the token embeddings

	// QKVBias adds biases to the attention's query, key and value
	// projections, as Qwen2 models have.
	QKVBias bool
	// RopeSections, when any is non-zero, is written as rope.dimension_sections:
	// the M-RoPE split of the rotary dimensions into temporal, height, width
	// (and unused) sections that qwen2vl models need.
	RopeSections [4]int32
	// ExtraSpecial are control tokens added before the ChatML ones, such as
	// a vision model's image delimiters.
	ExtraSpecial []string

	// Pooling, when set, is written as pooling_type (a generative model
	// converted for embeddings, as Qwen3-Embedding is: 3 pools the last
	// token). Pooling and SlidingWindow are written for the embedding
	// architecture "gemma-embedding" (EmbeddingGemma: bidirectional
	// attention in a symmetric window on five of every six layers, RMS
	// norms before and after attention and the feed-forward, per-head
	// query and key norms, GELU-gated feed-forward, tied embeddings).
	Pooling       uint32
	SlidingWindow int
}

// TinyGemmaEmbedding is a gemma-embedding model: six layers (the sixth
// attends globally), a window of 4 (two tokens each side), f32 weights,
// mean pooling.
func TinyGemmaEmbedding() LlamaConfig {
	return LlamaConfig{Name: "owl-test-gemma-embedding", Arch: "gemma-embedding", Embd: 32, Layers: 6, Heads: 4, HeadsKV: 2, FF: 64, Vocab: 512,
		Context: 2048, RopeBase: 1000000, Type: models.TypeF32, Seed: 5, Tied: true, NoChatTpl: true, Pooling: 1, SlidingWindow: 4}
}

// TinyLlama is the model tests use: two layers, n_embd 64, grouped-query
// attention, a 512-token byte-level BPE vocabulary and a ChatML template.
func TinyLlama() LlamaConfig {
	return LlamaConfig{Name: "owl-test-tiny", Embd: 64, Layers: 2, Heads: 4, HeadsKV: 2, FF: 128, Vocab: 512,
		Context: 4096, RopeBase: 10000, Type: models.TypeF16, Seed: 1}
}

// RealisticLlama has the shape of Llama 3.2 1B (n_embd 2048, 16 layers, 32
// heads, 8 KV heads, FF 8192, 128256 tokens, tied embeddings) for benchmarks.
func RealisticLlama(t models.GGMLType) LlamaConfig {
	return LlamaConfig{Name: "owl-test-1b", Embd: 2048, Layers: 16, Heads: 32, HeadsKV: 8, FF: 8192, Vocab: 128256,
		Context: 131072, RopeBase: 500000, Type: t, Seed: 2, Tied: true}
}

func (c LlamaConfig) validate() error {
	switch {
	case c.Embd <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.HeadsKV <= 0 || c.FF <= 0:
		return fmt.Errorf("llama config %+v: sizes must be positive", c)
	case c.Embd%c.Heads != 0 || c.Heads%c.HeadsKV != 0:
		return fmt.Errorf("llama config: n_embd %d, heads %d, kv heads %d do not divide", c.Embd, c.Heads, c.HeadsKV)
	}
	switch c.Type {
	case models.TypeF32, models.TypeF16:
	case models.TypeQ8_0:
		if c.Embd%32 != 0 || c.FF%32 != 0 {
			return fmt.Errorf("q8_0 needs n_embd and FF divisible by 32")
		}
	default:
		return fmt.Errorf("weights of type %s are not generated (f32, f16, q8_0)", c.Type)
	}
	return nil
}

// fileType is general.file_type (enum llama_ftype) for the weight type.
func fileType(t models.GGMLType) uint32 {
	switch t {
	case models.TypeF16:
		return 1
	case models.TypeQ8_0:
		return 7
	}
	return 0
}

// WriteLlama writes the GGUF of c to w.
func WriteLlama(w io.Writer, c LlamaConfig) error {
	if err := c.validate(); err != nil {
		return err
	}
	v, err := buildVocab(c.Vocab, c.ExtraSpecial...)
	if err != nil {
		return err
	}
	arch := c.Arch
	if arch == "" {
		arch = "llama"
	}
	headDim := c.Embd / c.Heads
	kvs := []models.GGUFKV{
		{Key: "general.architecture", Value: arch},
		{Key: "general.name", Value: c.Name},
		{Key: "general.file_type", Value: fileType(c.Type)},
		{Key: arch + ".context_length", Value: uint32(c.Context)},
		{Key: arch + ".embedding_length", Value: uint32(c.Embd)},
		{Key: arch + ".block_count", Value: uint32(c.Layers)},
		{Key: arch + ".feed_forward_length", Value: uint32(c.FF)},
		{Key: arch + ".attention.head_count", Value: uint32(c.Heads)},
		{Key: arch + ".attention.head_count_kv", Value: uint32(c.HeadsKV)},
		{Key: arch + ".attention.layer_norm_rms_epsilon", Value: float32(1e-5)},
		{Key: arch + ".rope.dimension_count", Value: uint32(headDim)},
		{Key: arch + ".rope.freq_base", Value: c.RopeBase},
		{Key: arch + ".vocab_size", Value: uint32(c.Vocab)},
		{Key: "tokenizer.ggml.model", Value: "gpt2"},
		{Key: "tokenizer.ggml.pre", Value: "gpt-2"},
		{Key: "tokenizer.ggml.tokens", Value: v.tokens},
		{Key: "tokenizer.ggml.token_type", Value: v.types},
		{Key: "tokenizer.ggml.merges", Value: v.merges},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(v.bos)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(v.eos)},
		{Key: "tokenizer.ggml.eot_token_id", Value: uint32(v.eot)},
		{Key: "tokenizer.ggml.add_bos_token", Value: true},
	}
	if !c.NoChatTpl {
		tpl := ChatMLTemplate
		if c.ChatTpl != "" {
			tpl = c.ChatTpl
		}
		kvs = append(kvs, models.GGUFKV{Key: "tokenizer.chat_template", Value: tpl})
	}
	gemma := arch == "gemma-embedding"
	if gemma || c.Pooling != 0 {
		kvs = append(kvs, models.GGUFKV{Key: arch + ".pooling_type", Value: c.Pooling})
	}
	if gemma {
		kvs = append(kvs, models.GGUFKV{Key: arch + ".attention.sliding_window", Value: uint32(c.SlidingWindow)},
			models.GGUFKV{Key: arch + ".attention.key_length", Value: uint32(headDim)},
			models.GGUFKV{Key: arch + ".attention.value_length", Value: uint32(headDim)})
	}
	if c.RopeSections != [4]int32{} {
		kvs = append(kvs, models.GGUFKV{Key: arch + ".rope.dimension_sections", Value: c.RopeSections[:]})
	}

	var tensors []models.TensorSpec
	// weight adds a matrix of [in, out] with values uniform in ±1/sqrt(in),
	// which keeps activations near unit scale through the layers.
	weight := func(name string, in, out int, t models.GGMLType) {
		a := float32(1 / math.Sqrt(float64(in)))
		tensors = append(tensors, models.TensorSpec{Name: name, Type: t, Dims: []uint64{uint64(in), uint64(out)},
			Write: func(w io.Writer) error {
				r := newRNG(seedFor(c.Seed, name))
				return encodeRows(w, t, in*out, in, func() float32 { return r.uniform(a) })
			}})
	}
	bias := func(name string, n int) {
		tensors = append(tensors, models.TensorSpec{Name: name, Type: models.TypeF32, Dims: []uint64{uint64(n)},
			Write: func(w io.Writer) error {
				r := newRNG(seedFor(c.Seed, name))
				return encodeRows(w, models.TypeF32, n, n, func() float32 { return r.uniform(0.1) })
			}})
	}
	norm := func(name string, n int) {
		tensors = append(tensors, models.TensorSpec{Name: name, Type: models.TypeF32, Dims: []uint64{uint64(n)},
			Write: func(w io.Writer) error {
				r := newRNG(seedFor(c.Seed, name))
				return encodeRows(w, models.TypeF32, n, n, func() float32 { return 1 + r.uniform(0.1) })
			}})
	}
	kvDim := headDim * c.HeadsKV
	// Token embeddings are read row by row; unit-scale rows make tokens distinct.
	embType := c.Type
	tensors = append(tensors, models.TensorSpec{Name: "token_embd.weight", Type: embType, Dims: []uint64{uint64(c.Embd), uint64(c.Vocab)},
		Write: func(w io.Writer) error {
			r := newRNG(seedFor(c.Seed, "token_embd.weight"))
			return encodeRows(w, embType, c.Embd*c.Vocab, c.Embd, func() float32 { return r.uniform(1) })
		}})
	norm("output_norm.weight", c.Embd)
	if !c.Tied && !gemma {
		weight("output.weight", c.Embd, c.Vocab, c.Type)
	}
	for l := range c.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		norm(p+"attn_norm.weight", c.Embd)
		weight(p+"attn_q.weight", c.Embd, c.Embd, c.Type)
		weight(p+"attn_k.weight", c.Embd, kvDim, c.Type)
		weight(p+"attn_v.weight", c.Embd, kvDim, c.Type)
		if c.QKVBias {
			bias(p+"attn_q.bias", c.Embd)
			bias(p+"attn_k.bias", kvDim)
			bias(p+"attn_v.bias", kvDim)
		}
		weight(p+"attn_output.weight", c.Embd, c.Embd, c.Type)
		if gemma {
			norm(p+"attn_q_norm.weight", headDim)
			norm(p+"attn_k_norm.weight", headDim)
			norm(p+"post_attention_norm.weight", c.Embd)
			norm(p+"post_ffw_norm.weight", c.Embd)
		}
		norm(p+"ffn_norm.weight", c.Embd)
		weight(p+"ffn_gate.weight", c.Embd, c.FF, c.Type)
		weight(p+"ffn_up.weight", c.Embd, c.FF, c.Type)
		weight(p+"ffn_down.weight", c.FF, c.Embd, c.Type)
	}
	return models.WriteGGUF(w, kvs, tensors)
}

// WriteLlamaFile writes the model to path atomically (a temporary file in the
// same folder, renamed into place).
func WriteLlamaFile(path string, c LlamaConfig) error {
	return writeFileAtomic(path, func(w io.Writer) error { return WriteLlama(w, c) })
}

func writeFileAtomic(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".owl-testmodel-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
