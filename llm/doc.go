// Package llm runs text and image generation over llama.cpp: loading a
// model after checking its file, tokenization, chat templates, sampling,
// stop strings, and the pieces a scheduler builds on.
//
// A Model may be shared. A Context is a KV cache of several sequences
// decoded a Batch at a time; a Generation is one request's sampling and
// text state, fed the logits of each step. A Projector turns images into
// prompt parts (PromptPart) whose embeddings a Context decodes at the
// positions the model wants; embeddings are cached by the image's content.
// Package engine's scheduler is what drives them: llm has no generation
// loop of its own.
package llm
