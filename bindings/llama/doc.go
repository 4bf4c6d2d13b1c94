// Package llama binds llama.cpp for owl.
//
// llama.cpp, mtmd and ggml's CPU backend are compiled by importing
// github.com/ollama/ollama/llama; this package calls their C API directly and
// through the shims in cgo/llamashim, so that one cgo crossing does one whole
// operation (a decode step with its logits, a vocabulary dump, a chat template
// application). Everything above this package speaks Go types only.
//
// Images go through mtmd, llama.cpp's multimodal library: a Projector (an
// "mmproj" file opened for a text Model) tokenizes a prompt with RGB
// Bitmaps into Chunks of text and images, Encode turns an image chunk into an
// ImageEmbedding copied out to Go (so that it can be cached), and
// DecodeImage puts it into a Context at the positions the model family
// needs (M-RoPE rows and columns for Qwen2-VL, one position per token for
// LLaVA), returning the position after the image.
//
// Ownership: a Model, a Context, a Projector and Chunks each own one native
// object and free it in Close, which is idempotent. A Context must not be
// used from two goroutines at once; a Model may be shared by many Contexts
// and Projectors.
package llama
