// Package speech is owl's speech recognition: OpenAI's Whisper, written in
// Go on ggml's tensor API (package bindings/ggml), reading whisper.cpp's
// own model files; whisper.cpp's Silero voice activity detector on the
// same API; and live transcription of a stream of audio.
//
// # Models
//
// Load reads a whisper.cpp model file (ggml-*.bin: tiny to large-v3 and
// turbo, .en and multilingual, f32, f16 or quantized), checks all of it in
// Go (package models), copies its tensors once into a GGUF in the cache
// folder (LoadOptions.CacheDir) and loads them. Load then builds every graph
// the model will run — the encoder, the longest prompt, the largest decoder
// step, the word-alignment pass, a beam reordering — so that a file whose
// graphs cannot be evaluated is refused when it loads, never when it is used,
// and allocates their compute memory. A Model is a Recognizer; Open picks
// the Recognizer of a Backend by name (NativeBackend, or one a build tag
// links in and RegisterBackend registers).
//
// # The network
//
// LogMel turns 16-kHz mono samples into Whisper's log-mel spectrogram
// (n_fft 400, hop 160, a periodic Hann window, the file's own mel filters,
// log10 clamped to 8 below its maximum, scaled to (x+4)/4), in windows of
// 30 s (3000 frames), or of what a model's audio context covers when that
// is shorter. The encoder is two convolutions with GELU and pre-norm
// transformer blocks; its output becomes each decoder layer's
// cross-attention keys and values, computed once per window. The decoder
// embeds tokens and positions, attends to its own earlier tokens through a
// key-value cache per sequence and to the window through the cross
// attention, and scores the vocabulary with the token embedding. Beams and
// samples (up to 16 sequences) are decoded side by side in one graph.
//
// # Decoding
//
// Transcribe decodes a recording window by window as OpenAI's transcribe
// does: a prompt of the previous window's text (Options.NoContext turns it
// off) and the start-of-transcript tokens (language, task, timestamps);
// beam search at temperature 0 (Options.BeamSize), falling back to
// best-of-N sampling at higher temperatures (Options.Temperatures,
// Options.BestOf) when the result repeats itself (a compression ratio over
// Options.CompressionRatioThreshold) or is improbable (an average log
// probability under Options.LogProbThreshold); a window whose no-speech
// probability passes Options.NoSpeechThreshold, and digital silence, are
// skipped. The decoding rules are OpenAI's (timestamps in pairs and never
// backwards, blank and non-speech symbols suppressed, the first timestamp
// bounded), or whisper.cpp's variant (Options.WhisperCppRules). The
// language is detected from the first window when not given. With
// Options.WordTimestamps, tokens and words are timed by dynamic time
// warping over the alignment heads' cross-attention. With Options.VAD only
// the speech a detector finds is decoded, times staying those of the
// original audio. A Transcript holds the segments (text, times, tokens with
// their probabilities, words), the language and the Timings of each stage.
//
// # Concurrency
//
// A Model may be used from many goroutines at once: each transcription has
// caches of its own. Its graph evaluations take turns on the model, the
// most urgent first (Options.Priority), and take their threads from the
// LoadOptions.Gate shared with the other models on the same cores (package
// compute). Decoder steps of concurrent transcriptions that wait at the
// same time are evaluated together in one graph — as many as a graph holds
// (learned at load), the rest in the next — which is what makes concurrent
// transcriptions cheaper than consecutive ones. A decoder step computes
// with fewer threads while other programs keep the cores busy. How many
// transcriptions run at once is the caller's to bound (package engine
// admits at most its Options.Parallel).
//
// A Silero detector carries one stream's LSTM state: it serves one stream
// at a time (its methods lock). A Streamer is used by one goroutine.
//
// # Live transcription
//
// A Streamer turns a stream of samples into events: a voice activity
// detector (audio.EnergyVAD or Silero) delimits utterances; inside one, the
// audio so far is decoded again every StreamOptions.Step, and the words two
// consecutive passes agree on are committed (LocalAgreement-2) and never
// change; when the utterance ends it is decoded once more and its final
// text reported. Passes are greedy and may encode only as much audio as the
// utterance holds (StreamOptions.FitAudioCtx).
//
// # Errors
//
// ErrBadOption wraps options a model cannot honour (a language an .en model
// does not know, a prompt too long, a beam size out of range). A file that
// is not a whisper.cpp model, or is corrupt, is refused by Load with the
// models package's errors. Native failures wrap bindings/ggml's ErrCompute,
// ErrGraphFull or ErrShape; none of them aborts the process.
//
// How the network and its tests work (the float64 reference every graph is
// checked against): docs/speech.md.
package speech
