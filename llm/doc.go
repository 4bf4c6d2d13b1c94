// Package llm runs text generation over llama.cpp: loading a model after
// checking its file, tokenization, chat templates, sampling, stop strings and
// a generation loop that streams text and can be cancelled between tokens.
//
// A Model may be shared; a Session (one KV cache) serves one request at a
// time and keeps the tokens of its last request, so a following request that
// starts with the same tokens (a chat history, a system prompt) evaluates
// only what is new.
package llm
