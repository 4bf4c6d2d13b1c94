// Package whispercpp binds whisper.cpp's own library, through its official
// Go bindings, in Go types of its own: a Model transcribes samples with
// Params into Segments. It imports nothing of owl's; package
// speech/whispercpp makes it a speech.Recognizer (owl transcribe --backend
// whispercpp).
//
// It builds only with the build tag whispercpp, on a machine with a system
// libwhisper (headers and libraries where cgo finds them). That library
// brings its own ggml, which must be the ggml version owl is built with, or
// be linked so that its ggml symbols stay private: two ggml versions in one
// process are not compatible.
package whispercpp
