// owl_mtmd.h: owl's glue over llama.cpp's multimodal library (mtmd): opening
// a projector (which Go has checked), tokenizing a prompt with images in one
// call, copying encoded images out, and decoding image embeddings with the
// positions each model family needs.
#ifndef OWL_MTMD_H
#define OWL_MTMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llama.h"
#include "mtmd.h"

#ifdef __cplusplus
extern "C" {
#endif

// owl_mtmd_open opens the projector at path with mtmd for text_model, on
// the CPU or (use_gpu) the first GPU, without a warm-up pass. The caller has checked the file first
// (models.CheckProjector, in Go): mtmd asserts on much of what a file may
// hold. It returns NULL with a message in err on failure; mtmd's own error
// lines go to the log.
mtmd_context *owl_mtmd_open(const char *path, const struct llama_model *text_model, int32_t n_threads, bool use_gpu,
                            const char *media_marker, char *err, int32_t err_len);

// owl_mtmd_tokenize splits text at the media marker and tokenizes it with
// n_images RGB bitmaps (nx[i] × ny[i] × 3 bytes at rgb[i]), whose ids are the
// NUL-terminated strings back to back in ids. Each bitmap's id is recorded in
// its chunks as "i:id" so that chunks can be traced to their image. On
// success (0) *out holds the chunks, *n_chunks and *n_text_tokens their
// counts; otherwise mtmd_tokenize's status (1: marker count mismatch,
// 2: preprocessing failed) and *out is NULL.
int32_t owl_mtmd_tokenize(mtmd_context *ctx, const char *text, bool add_special, bool parse_special, int32_t n_images,
                          const uint32_t *nx, const uint32_t *ny, const unsigned char *const *rgb, const char *ids,
                          mtmd_input_chunks **out, int32_t *n_chunks, int32_t *n_text_tokens);

// owl_mtmd_chunks_dump describes every chunk in parallel arrays of
// mtmd_input_chunks_size entries: type (MTMD_INPUT_CHUNK_TYPE_*), token count,
// position count, token grid (nx × ny; for text nx is the token count and ny 1)
// and the index of the image it came from (-1 for text). The tokens of all
// text chunks are written back to back to text_tokens.
void owl_mtmd_chunks_dump(const mtmd_input_chunks *chunks, int32_t *type, int32_t *n_tokens, int32_t *n_pos,
                          int32_t *nx, int32_t *ny, int32_t *image, int32_t *text_tokens);

// owl_mtmd_encode encodes image chunk idx and copies its embeddings
// (n_floats = n_tokens × projection width) to out. It returns 0, or non-zero
// when mtmd could not encode the chunk.
int32_t owl_mtmd_encode(mtmd_context *ctx, const mtmd_input_chunks *chunks, int32_t idx, float *out, int64_t n_floats);

// owl_decode_embd decodes n_tokens image embeddings (n_embd floats each) into
// sequence seq from position pos0, n_batch at a time. With mrope the tokens
// form an nx × ny grid (row-major) and get M-RoPE's four position sections:
// temporal pos0, row pos0+y, column pos0+x, 0; otherwise token i is at
// pos0+i. With non_causal the image attends to itself without the causal
// mask (set around the decode, restored after). No logits are produced. It
// returns llama_decode's status; on failure the cells it added to seq from
// pos0 on are removed again.
int32_t owl_decode_embd(struct llama_context *ctx, const float *embd, int32_t n_tokens, int32_t n_embd, int32_t nx,
                        int32_t ny, bool mrope, bool non_causal, int32_t pos0, int32_t seq, int32_t n_batch);

// owl_mtmd_eval_reference evaluates all chunks with mtmd's own helper
// (mtmd_helper_eval_chunks) from n_past into seq and copies the last token's
// logits (n_vocab floats) to logits. Tests compare owl's decoding with it.
// It returns the helper's status and the next position in *new_n_past.
int32_t owl_mtmd_eval_reference(mtmd_context *ctx, struct llama_context *lctx, const mtmd_input_chunks *chunks,
                                int32_t n_past, int32_t seq, int32_t n_batch, float *logits, int32_t n_vocab,
                                int32_t *new_n_past);

#ifdef __cplusplus
}
#endif

#endif
