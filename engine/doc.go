// Package engine is owl's public Go API: it loads models on demand, keeps
// them, and runs transcription, generation, chat and benchmarks on them for
// the CLI and the server.
//
// A model is loaded once for all who ask for it at the same time; a failed
// load is reported to each of them and not remembered. Requests to one text
// model are served one at a time on one session whose KV cache keeps the
// previous request's tokens, so a chat that grows turn by turn evaluates
// only the new turn. Transcriptions on one speech model also run one at a
// time. Requests to different models run in parallel.
package engine
