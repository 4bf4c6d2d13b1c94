// Package server serves an engine over HTTP, for the programs that already
// speak the OpenAI and ollama APIs:
//
//   - OpenAI-compatible: POST /v1/chat/completions (text and image_url
//     parts, SSE streaming, JSON-schema response formats enforced by a
//     grammar), POST /v1/completions, POST /v1/audio/transcriptions and
//     /v1/audio/translations (every response format, SSE streaming),
//     POST /v1/audio/speech, GET /v1/models.
//   - ollama-compatible: POST /api/chat and /api/generate (base64 images,
//     NDJSON streaming by default, keep_alive, options), GET /api/tags,
//     GET /api/ps, POST /api/show, GET /api/version.
//   - GET /v1/audio/stream: live transcription over a WebSocket, the
//     pipeline of owl listen.
//   - GET /v1/realtime: OpenAI's Realtime API over a WebSocket, a voice
//     conversation in the assist package's loop (turn detection, Whisper,
//     the text model, speech sentence by sentence, barge-in).
//   - GET /health, and GET /metrics in Prometheus' text format.
//
// Model names resolve through the model store in the models folder, and
// plain model files lying in that folder are served by their file name;
// nothing outside the folder is ever opened as a model. Every request's
// body, audio length and image size are bounded (Limits), errors take the
// shape of the API that was called, and a client that goes away cancels
// its request, which frees its place in the engine at the next step.
//
// The server talks to the engine through Backend, which *engine.Engine
// implements; docs/api.md is the reference of every endpoint.
package server
