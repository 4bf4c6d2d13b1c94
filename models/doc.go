// Package models reads and writes model files: GGUF metadata and tensor
// directories (ReadGGUF, WriteGGUF), the layouts of ggml tensor types, and
// the facts `owl models info` shows, with an estimate of the memory a model
// needs (EstimateMemory). The store of downloaded models is in
// models/store, the Hugging Face client in models/hub. Parsers here treat every file as
// hostile: sizes are checked against the file before anything is allocated,
// and every problem is an error that names what is wrong, never a panic.
package models
