// Package whispercpp is a second speech backend: whisper.cpp's own library
// (package bindings/whispercpp) behind the speech.Recognizer interface.
// Linking it in, with the build tag whispercpp, registers it as the
// backend "whispercpp" (owl transcribe --backend whispercpp).
package whispercpp
