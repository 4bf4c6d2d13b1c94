// Package whispercpp is a second speech backend: whisper.cpp's own library
// through its official Go bindings, behind the speech.Recognizer interface
// (select it with `owl transcribe --backend whispercpp`).
//
// It builds only with the build tag whispercpp, on a machine with a system
// libwhisper (headers and libraries where cgo finds them). That library
// brings its own ggml, which must be the ggml version owl is built with, or
// be linked so that its ggml symbols stay private: two ggml versions in one
// process are not compatible.
package whispercpp
