// Package engine is owl's public Go API: it loads models on demand, keeps
// them, and runs generation, chat and benchmarks on them for the CLI and the
// server.
//
// Requests to one text model are served one at a time on one session whose
// KV cache keeps the previous request's tokens, so a chat that grows turn by
// turn evaluates only the new turn. Requests to different models run in
// parallel.
package engine
