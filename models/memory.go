package models

import (
	"errors"
	"fmt"
	"os"
)

// MemoryEstimate is how much memory a model needs to run, worked out from its
// file's metadata alone. It is an estimate for planning (which models fit
// together, whether one fits at all), not an accounting of what was
// allocated: the real figure depends on the backend, threads and batch.
type MemoryEstimate struct {
	Weights uint64 // tensor bytes, as stored in the file
	KVCache uint64 // attention caches at Context tokens
	Compute uint64 // allowance for activations and scratch buffers
	Context uint64 // tokens the KV cache is sized for; 0 for models without one
}

// Total is the sum of the parts.
func (m MemoryEstimate) Total() uint64 { return m.Weights + m.KVCache + m.Compute }

// Sizes the estimates assume.
const (
	// DefaultEstimateContext is the context a text model is sized for when
	// none is given and the model was trained on at least as many tokens;
	// the engine's default context is the same.
	DefaultEstimateContext = 4096
	// EstimateBatch is the prompt tokens evaluated per step (the engine's
	// default micro-batch), which sizes a text model's activations.
	EstimateBatch = 512
	// WhisperEstimateBeams is the number of sequences a whisper model
	// decodes at once by default (beam search with 5 beams).
	WhisperEstimateBeams = 5
	// WhisperStepRows is the most decoder sequences (beams of all the
	// transcriptions together) one step graph of a whisper model
	// evaluates.
	WhisperStepRows = 64

	computeBase = 16 << 20 // graph metadata, inputs, small buffers
)

// EstimateMemory estimates the memory the model in the file at path needs:
// a GGUF text model at nCtx tokens of context (0: the default), a GGUF
// projector, a whisper.cpp model or a Silero VAD model. Errors name the file.
func EstimateMemory(path string, nCtx uint64) (MemoryEstimate, error) {
	f, err := os.Open(path)
	if err != nil {
		return MemoryEstimate{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return MemoryEstimate{}, err
	}
	if st.IsDir() {
		return MemoryEstimate{}, fmt.Errorf("%s: is a directory", path)
	}
	g, err := ParseGGUF(f, st.Size())
	if err == nil {
		return g.EstimateMemory(nCtx), nil
	}
	if !errors.Is(err, ErrNotGGUF) {
		return MemoryEstimate{}, fmt.Errorf("%s: %w", path, err)
	}
	if w, werr := ParseWhisper(f, st.Size()); werr == nil {
		return w.EstimateMemory(1), nil
	}
	if s, serr := ParseSilero(f, st.Size()); serr == nil {
		return s.EstimateMemory(), nil
	}
	return MemoryEstimate{}, fmt.Errorf("%s: not a GGUF, whisper.cpp or Silero model file", path)
}

// EstimateMemory estimates the memory of a GGUF model.
//
// A text model needs its weights, a KV cache of
// n_layer × n_ctx × n_head_kv × (key_length + value_length) × 2 bytes (f16
// keys and values; key_length defaults to n_embd / n_head), and activations
// for one batch of EstimateBatch tokens: the larger of the logits
// (n_vocab × batch f32) and the attention scores (n_head × n_ctx × batch
// f32), plus the hidden states (batch × (4 n_embd + 2 n_ff) f32) and
// computeBase. nCtx 0 means min(DefaultEstimateContext, trained context).
//
// A projector (general.architecture "clip") needs its weights and the
// attention scores of one image (n_head × n_patches² f32) plus computeBase;
// it has no KV cache.
func (g *GGUF) EstimateMemory(nCtx uint64) MemoryEstimate {
	return g.EstimateMemoryWith(EstimateOptions{Context: nCtx})
}

// EstimateOptions describe how a text model will run.
type EstimateOptions struct {
	Context uint64 // KV cells over all sequences; 0: min(DefaultEstimateContext, trained context)
	Batch   uint64 // tokens per step; 0: EstimateBatch (micro-batches are at most EstimateBatch)
	KVType  string // "f16" (default), "q8_0" or "q4_0"
}

// kvBytesPerElement is the size of one KV-cache element of a type, block
// overhead included, as a fraction num/den.
func kvBytesPerElement(kvType string) (num, den uint64) {
	switch kvType {
	case "q8_0":
		return 34, 32
	case "q4_0":
		return 18, 32
	}
	return 2, 1
}

// EstimateMemoryWith is EstimateMemory for a KV cache of o.Context cells of
// o.KVType and steps of o.Batch tokens.
func (g *GGUF) EstimateMemoryWith(o EstimateOptions) MemoryEstimate {
	nCtx := o.Context
	var m MemoryEstimate
	for _, t := range g.Tensors {
		m.Weights += t.Bytes
	}
	arch := g.Architecture()
	if arch == "clip" {
		m.Compute = computeBase + clipScoreBytes(g)
		return m
	}
	u := func(key string) uint64 { v, _ := g.Uint(arch + "." + key); return v }
	if nCtx == 0 {
		nCtx = DefaultEstimateContext
		if trained := u("context_length"); trained > 0 && trained < nCtx {
			nCtx = trained
		}
	}
	m.Context = nCtx
	layers, embd, heads, ff := u("block_count"), u("embedding_length"), u("attention.head_count"), u("feed_forward_length")
	headsKV, ok := g.Uint(arch + ".attention.head_count_kv")
	if !ok { // absent, or a per-layer array: size every layer like the widest
		headsKV = heads
	}
	keyLen, valLen := u("attention.key_length"), u("attention.value_length")
	if keyLen == 0 && heads > 0 {
		keyLen = embd / heads
	}
	if valLen == 0 {
		valLen = keyLen
	}
	num, den := kvBytesPerElement(o.KVType)
	m.KVCache = layers * nCtx * headsKV * (keyLen + valLen) * num / den
	vocab := u("vocab_size")
	if n, ok := g.ArrayLen("tokenizer.ggml.tokens"); ok && vocab == 0 {
		vocab = uint64(n)
	}
	batch := min(o.Batch, EstimateBatch)
	if batch == 0 {
		batch = EstimateBatch
	}
	m.Compute = computeBase + max(vocab*batch*4, heads*nCtx*batch*4) + batch*(4*embd+2*ff)*4
	return m
}

// clipScoreBytes is the f32 attention scores of one image through a CLIP
// vision encoder, or 0 when the projector does not say its image geometry.
func clipScoreBytes(g *GGUF) uint64 {
	image, _ := g.Uint("clip.vision.image_size")
	patch, _ := g.Uint("clip.vision.patch_size")
	heads, _ := g.Uint("clip.vision.attention.head_count")
	if image == 0 || patch == 0 {
		return 0
	}
	n := (image / patch) * (image / patch)
	return heads * n * n * 4
}

// EstimateMemory estimates the memory of a whisper model running
// transcriptions (at least 1) at once: its weights; for each
// transcription, f16 caches for WhisperEstimateBeams decoder sequences of
// self-attention (n_text_layer × n_text_ctx × n_text_state × 2 × 2 bytes
// each) and its cross-attention cache (n_text_layer × n_audio_ctx ×
// n_text_state × 2 × 2 bytes); and, for compute, the encoder's f32
// attention scores (n_audio_head × n_audio_ctx²), a 30-second log-mel
// window (n_mels × 3000 f32) and the logits of the largest decoder step
// (WhisperStepRows × n_vocab f32), plus computeBase.
func (f *WhisperFile) EstimateMemory(transcriptions int) MemoryEstimate {
	h := f.HParams
	var m MemoryEstimate
	for _, t := range f.Tensors {
		m.Weights += t.Bytes
	}
	self := uint64(h.NTextLayer) * uint64(h.NTextCtx) * uint64(h.NTextState) * 2 * 2
	cross := uint64(h.NTextLayer) * uint64(h.NAudioCtx) * uint64(h.NTextState) * 2 * 2
	m.KVCache = uint64(max(transcriptions, 1)) * (WhisperEstimateBeams*self + cross)
	m.Context = uint64(h.NTextCtx)
	m.Compute = computeBase + uint64(h.NAudioHead)*uint64(h.NAudioCtx)*uint64(h.NAudioCtx)*4 + uint64(h.NMels)*3000*4 +
		WhisperStepRows*uint64(h.NVocab)*4
	return m
}

// EstimateMemory estimates the memory of a Silero VAD model: its weights
// and computeBase; its state is a few kilobytes.
func (f *SileroFile) EstimateMemory() MemoryEstimate {
	var m MemoryEstimate
	for _, t := range f.Tensors {
		m.Weights += t.Bytes
	}
	m.Compute = computeBase
	return m
}
