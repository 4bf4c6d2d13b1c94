// Package llamashim compiles owl's C glue over llama.cpp and ggml.
//
// The functions here do several native steps per call so that the Go side
// crosses the cgo boundary once per operation: one call dumps a model's
// metadata, one dumps its vocabulary, one runs a whole decode step and copies
// out the logits it produced. owl_mtmd.h does the same for images: it checks
// a projector file before mtmd reads it, tokenizes a prompt with all its
// images, copies an encoded image out and decodes image embeddings at the
// right positions, each in one call. The package has no Go API;
// bindings/llama includes the headers and imports this package for its
// object code.
//
// The llama.cpp, mtmd and ggml headers come from the github.com/ollama/ollama
// module; the Makefile puts their folders on CGO_CPPFLAGS.
package llamashim

// #cgo CXXFLAGS: -std=c++17
import "C"
