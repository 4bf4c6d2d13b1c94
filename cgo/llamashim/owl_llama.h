// owl_llama.h: owl's glue over the llama.cpp C API. Every function here does
// what would otherwise take several cgo crossings.
#ifndef OWL_LLAMA_H
#define OWL_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

// owl_abort_callback reads the int32 flag that data points to; a non-zero
// flag stops the graph being computed. Go sets the flag with an atomic store,
// so cancelling a decode needs no crossing.
bool owl_abort_callback(void *data);

// owl_model_meta writes every metadata pair of model into buf as
// "key\0value\0" and returns the bytes needed; when that exceeds len nothing
// useful is in buf and the caller retries with a larger one.
int64_t owl_model_meta(const struct llama_model *model, char *buf, int64_t len);

// owl_vocab_dump writes the text piece of every token (as llama_token_to_piece
// renders it with special=false) back to back into buf, the end offset of token
// i into ends[i], and flags into flags[i] (OWL_TOKEN_*). It returns the bytes
// needed for buf; with buf == NULL only the size is computed.
enum {
    OWL_TOKEN_EOG     = 1,
    OWL_TOKEN_CONTROL = 2,
};
int64_t owl_vocab_dump(const struct llama_vocab *vocab, char *buf, int64_t len, int64_t *ends, uint8_t *flags);

// owl_chat_apply formats n messages given as "role\0content\0" pairs in msgs
// with the template tmpl (a template text or a built-in name). It returns the
// bytes of the formatted prompt (retry with a larger buf when it exceeds len),
// or a negative value when the template is not supported (OWL_EXCEPTION when
// llama.cpp threw).
int32_t owl_chat_apply(const char *tmpl, const char *msgs, int32_t n, bool add_assistant, char *buf, int32_t len);

// OWL_EXCEPTION is what a shim returns when llama.cpp threw a C++
// exception, which must not unwind into Go.
#define OWL_EXCEPTION (-1000)

// owl_decode runs one llama_decode over n tokens described by the parallel
// arrays tokens, pos and seq (one sequence per token); rows whose want_logits
// is non-zero get logits, copied in batch order into out (n_vocab floats each).
// It returns llama_decode's status, or OWL_EXCEPTION.
int32_t owl_decode(struct llama_context *ctx, int32_t n, const int32_t *tokens, const int32_t *pos,
                   const int32_t *seq, const int8_t *want_logits, float *out, int32_t n_vocab);

// owl_backend_features writes "backend\tname\tvalue\n" for every feature every
// registered ggml backend reports and returns the bytes needed.
int32_t owl_backend_features(char *buf, int32_t len);

#ifdef __cplusplus
}
#endif

#endif
