package models

// Memory estimates, from a model file's metadata alone, of what a loaded
// model takes: the scheduler checks them against its budget before it
// loads anything. They are estimates: allocators round and libraries keep
// small buffers of their own.

// kvElementBytes is the bytes per element of a KV cache type, block
// overhead included.
func kvElementBytes(kvType string) float64 {
	switch kvType {
	case "q8_0":
		return 34.0 / 32
	case "q4_0":
		return 18.0 / 32
	}
	return 2
}

// EstimateTextMemory is the memory, in bytes, of a llama.cpp text model
// with a KV cache of cells cells of kvType ("" for f16) and batches of
// batch tokens: the tensors, the KV cache, and the compute buffers (the
// activations of one micro-batch of up to 512 tokens, its attention scores
// over the whole cache, and the logits).
func EstimateTextMemory(g *GGUF, cells, batch int, kvType string) uint64 {
	arch := g.Architecture()
	get := func(key string, def uint64) uint64 {
		if v, ok := g.Uint(arch + "." + key); ok && v > 0 {
			return v
		}
		return def
	}
	var weights uint64
	for _, t := range g.Tensors {
		weights += t.Bytes
	}
	layers := get("block_count", 1)
	embd := get("embedding_length", 1)
	heads := get("attention.head_count", 1)
	headsKV := get("attention.head_count_kv", heads)
	keyLen := get("attention.key_length", embd/heads)
	valLen := get("attention.value_length", embd/heads)
	ff := get("feed_forward_length", 4*embd)
	vocab, _ := g.ArrayLen("tokenizer.ggml.tokens")

	kv := float64(layers*uint64(cells)*headsKV*(keyLen+valLen)) * kvElementBytes(kvType)
	ub := uint64(min(batch, 512))
	activations := ub * (8*embd + 3*ff) * 4
	scores := ub * uint64(cells) * heads * 4
	logits := ub * uint64(vocab) * 4 * 2 // in the graph and in the output buffer
	return weights + uint64(kv) + activations + scores + logits
}

// EstimateWhisperMemory is the memory, in bytes, of a whisper.cpp model run
// by owl's speech package: the tensors, the encoder's graph over a 30-s
// window (attention scores included), the cross-attention keys and values,
// and the decoder's caches for up to 16 sequences (beams).
func EstimateWhisperMemory(w *WhisperFile) uint64 {
	h := w.HParams
	var weights uint64
	for _, t := range w.Tensors {
		weights += t.Bytes
	}
	ctx, state := uint64(h.NAudioCtx), uint64(h.NAudioState)
	frames := 2 * ctx
	encoder := frames*state*4*4 + ctx*ctx*uint64(h.NAudioHead)*4 + ctx*state*4*12
	cross := uint64(h.NTextLayer) * ctx * uint64(h.NTextState) * 2 * 4
	const beams = 16
	self := uint64(h.NTextLayer) * beams * uint64(h.NTextCtx) * uint64(h.NTextState) * 2 * 2
	logits := beams * uint64(h.NVocab) * 4 * 2
	mel := uint64(h.NMels) * frames * 4 * 2
	return weights + encoder + cross + self + logits + mel
}
