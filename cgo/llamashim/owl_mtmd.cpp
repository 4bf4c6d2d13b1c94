// owl_mtmd.cpp: implementations of owl_mtmd.h.
#include "owl_mtmd.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ggml.h"
#include "mtmd-helper.h"

namespace {

void copy_out(const std::string &s, char *buf, int32_t len) {
    if (buf == nullptr || len <= 0) {
        return;
    }
    const size_t n = std::min(s.size(), (size_t)len - 1);
    memcpy(buf, s.data(), n);
    buf[n] = '\0';
}

} // namespace

// Exceptions must not cross into Go: mtmd throws on some files, and
// allocations may fail. Every entry point below turns them into an error
// status.

mtmd_context *owl_mtmd_open(const char *path, const struct llama_model *text_model, int32_t n_threads, bool use_gpu,
                            const char *media_marker, char *err, int32_t err_len) {
    mtmd_context_params params = mtmd_context_params_default();
    params.use_gpu = use_gpu; // the first GPU, where its text model is offloaded
    params.print_timings = false;
    params.n_threads = n_threads;
    params.media_marker = media_marker;
    // The warm-up pass sizes buffers for the largest image a model takes
    // (thousands of tokens for Qwen2-VL); buffers grow with the first image
    // instead.
    params.warmup = false;
    mtmd_context *ctx = nullptr;
    try {
        ctx = mtmd_init_from_file(path, text_model, params);
    } catch (const std::exception &e) {
        copy_out(std::string("mtmd could not load the projector: ") + e.what(), err, err_len);
        return nullptr;
    }
    if (ctx == nullptr) {
        copy_out("mtmd could not load the projector", err, err_len);
    }
    return ctx;
}

namespace {

int32_t tokenize_impl(mtmd_context *ctx, const char *text, bool add_special, bool parse_special, int32_t n_images,
                      const uint32_t *nx, const uint32_t *ny, const unsigned char *const *rgb, const char *ids,
                      mtmd_input_chunks **out, int32_t *n_chunks, int32_t *n_text_tokens) {
    struct bitmaps_t {
        std::vector<mtmd_bitmap *> v;
        ~bitmaps_t() {
            for (mtmd_bitmap *b : v) {
                mtmd_bitmap_free(b);
            }
        }
    } owned;
    std::vector<mtmd_bitmap *> &bitmaps = owned.v;
    bitmaps.reserve(n_images); // so that push_back cannot throw after an init
    const char *id = ids;
    for (int32_t i = 0; i < n_images; i++) {
        mtmd_bitmap *b = mtmd_bitmap_init(nx[i], ny[i], rgb[i]);
        mtmd_bitmap_set_id(b, (std::to_string(i) + ":" + id).c_str());
        id += strlen(id) + 1;
        bitmaps.push_back(b);
    }
    mtmd_input_chunks *chunks = mtmd_input_chunks_init();
    mtmd_input_text in = {text, add_special, parse_special};
    int32_t status;
    try {
        status = mtmd_tokenize(ctx, chunks, &in, (const mtmd_bitmap **)bitmaps.data(), bitmaps.size());
    } catch (...) {
        mtmd_input_chunks_free(chunks);
        throw;
    }
    if (status != 0) {
        mtmd_input_chunks_free(chunks);
        return status;
    }
    int32_t text_tokens = 0;
    const size_t n = mtmd_input_chunks_size(chunks);
    for (size_t i = 0; i < n; i++) {
        const mtmd_input_chunk *c = mtmd_input_chunks_get(chunks, i);
        if (mtmd_input_chunk_get_type(c) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            text_tokens += (int32_t)mtmd_input_chunk_get_n_tokens(c);
        }
    }
    *out = chunks;
    *n_chunks = (int32_t)n;
    *n_text_tokens = text_tokens;
    return 0;
}

} // namespace

int32_t owl_mtmd_tokenize(mtmd_context *ctx, const char *text, bool add_special, bool parse_special, int32_t n_images,
                          const uint32_t *nx, const uint32_t *ny, const unsigned char *const *rgb, const char *ids,
                          mtmd_input_chunks **out, int32_t *n_chunks, int32_t *n_text_tokens) {
    *out = nullptr;
    try {
        return tokenize_impl(ctx, text, add_special, parse_special, n_images, nx, ny, rgb, ids, out, n_chunks,
                             n_text_tokens);
    } catch (...) {
        return -2;
    }
}

void owl_mtmd_chunks_dump(const mtmd_input_chunks *chunks, int32_t *type, int32_t *n_tokens, int32_t *n_pos,
                          int32_t *nx, int32_t *ny, int32_t *image, int32_t *text_tokens) {
    const size_t n = mtmd_input_chunks_size(chunks);
    int32_t *tok = text_tokens;
    for (size_t i = 0; i < n; i++) {
        const mtmd_input_chunk *c = mtmd_input_chunks_get(chunks, i);
        const mtmd_input_chunk_type t = mtmd_input_chunk_get_type(c);
        type[i] = (int32_t)t;
        n_tokens[i] = (int32_t)mtmd_input_chunk_get_n_tokens(c);
        n_pos[i] = (int32_t)mtmd_input_chunk_get_n_pos(c);
        nx[i] = n_tokens[i];
        ny[i] = 1;
        image[i] = -1;
        if (t == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            size_t k = 0;
            const llama_token *toks = mtmd_input_chunk_get_tokens_text(c, &k);
            memcpy(tok, toks, k * sizeof(llama_token));
            tok += k;
        } else if (t == MTMD_INPUT_CHUNK_TYPE_IMAGE) {
            const mtmd_image_tokens *it = mtmd_input_chunk_get_tokens_image(c);
            nx[i] = (int32_t)mtmd_image_tokens_get_nx(it);
            ny[i] = (int32_t)mtmd_image_tokens_get_ny(it);
            const char *id = mtmd_input_chunk_get_id(c);
            image[i] = id != nullptr ? atoi(id) : -1;
        }
    }
}

int32_t owl_mtmd_encode(mtmd_context *ctx, const mtmd_input_chunks *chunks, int32_t idx, float *out, int64_t n_floats) {
    const mtmd_input_chunk *c = mtmd_input_chunks_get(chunks, idx);
    if (c == nullptr || mtmd_input_chunk_get_type(c) != MTMD_INPUT_CHUNK_TYPE_IMAGE) {
        return -1;
    }
    int32_t status;
    try {
        status = mtmd_encode_chunk(ctx, c);
    } catch (...) {
        return -2;
    }
    if (status != 0) {
        return status;
    }
    memcpy(out, mtmd_get_output_embd(ctx), (size_t)n_floats * sizeof(float));
    return 0;
}

int32_t owl_decode_embd(struct llama_context *ctx, const float *embd, int32_t n_tokens, int32_t n_embd, int32_t nx,
                        int32_t ny, bool mrope, bool non_causal, int32_t pos0, int32_t seq, int32_t n_batch) {
    (void)ny;
    const int n_pos_per_token = mrope ? 4 : 1;
    std::vector<llama_pos> pos((size_t)n_batch * n_pos_per_token);
    std::vector<int32_t> n_seq_id(n_batch, 1);
    llama_seq_id seq_id = seq;
    std::vector<llama_seq_id *> seq_ids(n_batch, &seq_id);
    std::vector<int8_t> logits(n_batch, 0);

    if (non_causal) {
        llama_set_causal_attn(ctx, false);
    }
    int32_t status = 0;
    for (int32_t off = 0; off < n_tokens && status == 0; off += n_batch) {
        const int32_t n = std::min(n_batch, n_tokens - off);
        for (int32_t i = 0; i < n; i++) {
            const int32_t k = off + i;
            if (mrope) {
                // Sections are stored one after another: all temporal
                // positions, then all rows, all columns, the unused fourth.
                pos[i] = pos0;
                pos[n + i] = pos0 + k / nx;
                pos[2 * n + i] = pos0 + k % nx;
                pos[3 * n + i] = 0;
            } else {
                pos[i] = pos0 + k;
            }
        }
        llama_batch batch = {};
        batch.n_tokens = n;
        batch.embd = const_cast<float *>(embd + (size_t)off * n_embd);
        batch.pos = pos.data();
        batch.n_seq_id = n_seq_id.data();
        batch.seq_id = seq_ids.data();
        batch.logits = logits.data();
        try {
            status = llama_decode(ctx, batch);
        } catch (...) {
            status = -2;
        }
    }
    if (non_causal) {
        llama_set_causal_attn(ctx, true);
    }
    if (status != 0) {
        llama_memory_seq_rm(llama_get_memory(ctx), seq, pos0, -1);
    }
    return status;
}

int32_t owl_mtmd_eval_reference(mtmd_context *ctx, struct llama_context *lctx, const mtmd_input_chunks *chunks,
                                int32_t n_past, int32_t seq, int32_t n_batch, float *logits, int32_t n_vocab,
                                int32_t *new_n_past) {
    llama_pos next = 0;
    int32_t status;
    try {
        status = mtmd_helper_eval_chunks(ctx, lctx, chunks, n_past, seq, n_batch, true, &next);
    } catch (...) {
        status = -2;
    }
    *new_n_past = next;
    if (status != 0) {
        return status;
    }
    const float *l = llama_get_logits_ith(lctx, -1);
    if (l == nullptr) {
        return -100;
    }
    memcpy(logits, l, sizeof(float) * n_vocab);
    return 0;
}
