// Package llama binds llama.cpp for owl.
//
// llama.cpp, mtmd and ggml's CPU backend are compiled by importing
// github.com/ollama/ollama/llama; this package calls their C API directly and
// through the shims in cgo/llamashim, so that one cgo crossing does one whole
// operation (a decode step with its logits, a vocabulary dump, a chat template
// application). Everything above this package speaks Go types only.
//
// Ownership: a Model and a Context each own one native object and free it in
// Close, which is idempotent. A Context must not be used from two goroutines
// at once; a Model may be shared by many Contexts.
package llama
