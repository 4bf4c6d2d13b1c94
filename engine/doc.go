// Package engine is owl's public Go API and its scheduler: it loads models
// on demand within a memory budget, batches the requests made to them, and
// runs transcription, generation, chat, live dictation and benchmarks for
// the CLI and the server.
//
// # Text models: continuous batching
//
// Each loaded text model has one runner goroutine that owns its llama.cpp
// context: a KV cache of Options.Parallel sequences (slots) of
// Options.NumCtx cells each, in one unified buffer. Every step the runner
// decodes, in one llama_decode, the next token of every generating request
// and, within the step's token budget, chunks of the prompts of requests
// that have just joined (smaller chunks while others generate, so a long
// prompt delays their next token by a bounded amount). Requests join when a
// slot is free, highest Priority first, and leave as soon as they finish,
// fail or are cancelled, which frees their slot at the next step. At most
// Options.MaxQueue requests wait per model; more get ErrBusy at once, as
// do those that wait longer than Options.QueueWait.
//
// A slot keeps its tokens' keys and values when its request ends. A new
// request takes the slot holding the longest prefix of its prompt, or
// shares that prefix from another slot (even one still generating) by
// sequence copy, so a system prompt or a chat's history is evaluated once.
// Idle slots are reused least recently used first.
//
// Batched logits are not bit-identical to those of a request decoded alone
// (kernels sum in another order over more rows, attention spans other
// sequences' masked cells); they agree within 2e-3 on the test models and
// greedy tokens agree wherever the top two candidates are further apart.
//
// # Speech models
//
// A speech model runs at most Options.Parallel transcriptions at once;
// their graph evaluations take turns on the model's backend, and decoder
// steps that wait for it are evaluated together, as many to a graph as
// one holds (see package speech). At most Options.MaxQueue more wait,
// most urgent first; beyond that, after Options.QueueWait, or at once
// when the model's recent pace says the wait would exceed QueueWait, a
// transcription gets ErrBusy (a *BusyError that says the expected wait).
// Live transcriptions (Listen) are admitted as whole streams by their
// caller and do not take these places.
//
// # Faults
//
// owl's native code is checked before it is called (graph capacities and
// tensor shapes in bindings/ggml, batch sizes and exceptions around
// llama.cpp), so that bad input gives an error, not an abort. A fault of
// owl's own in a text model's decode step (a panic) fails that step's
// requests with ErrInternal and empties the model's KV cache; the runner
// goes on. What cannot be caught in a process (a native abort that slipped
// past the checks) is left to its supervisor: docs/service.md.
//
// # Sharing the cores
//
// Every computation (a text model's decode step, a speech graph, an image
// encoding) takes its threads from the process's compute gate of as many
// units as the machine has CPUs, most urgent request first (package
// compute). Models with all the cores each therefore take turns instead of
// running their spinning thread pools over each other, which slows both by
// one to two orders of magnitude; models given fewer threads
// (Options.Threads) still run side by side.
//
// # Memory
//
// Before loading, a model's memory is estimated from its file (weights,
// KV cache for the configured context and slots, compute buffers) and
// checked against Options.MaxMemory. Idle models are unloaded to make room,
// least recently used first; a model in use is never unloaded; a load that
// finds every byte held by running requests waits for one to finish. A
// model larger than the whole budget is refused with ErrTooLarge. Idle
// models unload after their keep-alive (Options.KeepAlive, or a request's
// KeepAlive). Concurrent requests for a model being loaded wait for that
// one load; a failed load is reported to each of them and not remembered.
//
// Metrics returns the counters: queue depth, running sequences, tokens per
// step, prefix-cache hits, generation rate, load times and memory by model.
package engine
