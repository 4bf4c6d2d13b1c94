// owl_llama.cpp: implementations of owl_llama.h.
#include "owl_llama.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ggml-backend.h"

bool owl_abort_callback(void *data) {
    return __atomic_load_n(static_cast<int32_t *>(data), __ATOMIC_RELAXED) != 0;
}

// append copies s and its terminating NUL into buf when it fits and always
// advances n, so a first pass with a small buffer yields the size needed.
static void append(char *buf, int64_t len, int64_t &n, const char *s, size_t sn) {
    if (buf != nullptr && n + (int64_t)sn + 1 <= len) {
        memcpy(buf + n, s, sn);
        buf[n + sn] = '\0';
    }
    n += (int64_t)sn + 1;
}

int64_t owl_model_meta(const struct llama_model *model, char *buf, int64_t len) {
    int64_t n = 0;
    std::vector<char> tmp(256);
    const int32_t count = llama_model_meta_count(model);
    for (int32_t i = 0; i < count; i++) {
        int32_t k = llama_model_meta_key_by_index(model, i, tmp.data(), tmp.size());
        if (k < 0) {
            continue;
        }
        if ((size_t)k >= tmp.size()) {
            tmp.resize(k + 1);
            llama_model_meta_key_by_index(model, i, tmp.data(), tmp.size());
        }
        std::string key(tmp.data(), k);
        int32_t v = llama_model_meta_val_str_by_index(model, i, tmp.data(), tmp.size());
        if (v < 0) {
            continue;
        }
        if ((size_t)v >= tmp.size()) {
            tmp.resize(v + 1);
            llama_model_meta_val_str_by_index(model, i, tmp.data(), tmp.size());
        }
        append(buf, len, n, key.data(), key.size());
        append(buf, len, n, tmp.data(), v);
    }
    return n;
}

int64_t owl_vocab_dump(const struct llama_vocab *vocab, char *buf, int64_t len, int64_t *ends, uint8_t *flags) {
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    std::vector<char> piece(64);
    int64_t n = 0;
    for (int32_t t = 0; t < n_vocab; t++) {
        int32_t k = llama_token_to_piece(vocab, t, piece.data(), (int32_t)piece.size(), 0, false);
        if (k < 0) {
            piece.resize(-k);
            k = llama_token_to_piece(vocab, t, piece.data(), (int32_t)piece.size(), 0, false);
        }
        if (k < 0) {
            k = 0;
        }
        if (buf != nullptr && n + k <= len) {
            memcpy(buf + n, piece.data(), k);
        }
        n += k;
        if (ends != nullptr) {
            ends[t] = n;
        }
        if (flags != nullptr) {
            uint8_t f = 0;
            if (llama_vocab_is_eog(vocab, t)) {
                f |= OWL_TOKEN_EOG;
            }
            if (llama_vocab_is_control(vocab, t)) {
                f |= OWL_TOKEN_CONTROL;
            }
            flags[t] = f;
        }
    }
    return n;
}

int32_t owl_chat_apply(const char *tmpl, const char *msgs, int32_t n, bool add_assistant, char *buf, int32_t len) {
    std::vector<llama_chat_message> chat(n);
    const char *p = msgs;
    for (int32_t i = 0; i < n; i++) {
        chat[i].role = p;
        p += strlen(p) + 1;
        chat[i].content = p;
        p += strlen(p) + 1;
    }
    try {
        return llama_chat_apply_template(tmpl, chat.data(), chat.size(), add_assistant, buf, len);
    } catch (...) {
        return OWL_EXCEPTION;
    }
}

int32_t owl_decode(struct llama_context *ctx, int32_t n, const int32_t *tokens, const int32_t *pos,
                   const int32_t *seq, const int8_t *want_logits, float *out, int32_t n_vocab) {
    std::vector<int32_t> n_seq_id(n, 1);
    std::vector<llama_seq_id *> seq_id(n);
    for (int32_t i = 0; i < n; i++) {
        seq_id[i] = const_cast<llama_seq_id *>(&seq[i]);
    }
    llama_batch batch = {};
    batch.n_tokens = n;
    batch.token = const_cast<llama_token *>(tokens);
    batch.pos = const_cast<llama_pos *>(pos);
    batch.n_seq_id = n_seq_id.data();
    batch.seq_id = seq_id.data();
    batch.logits = const_cast<int8_t *>(want_logits);

    int32_t status;
    try {
        status = llama_decode(ctx, batch);
    } catch (...) {
        return OWL_EXCEPTION;
    }
    if (status != 0 || out == nullptr) {
        return status;
    }
    int32_t rows = 0;
    for (int32_t i = 0; i < n; i++) {
        if (want_logits[i]) {
            const float *logits = llama_get_logits_ith(ctx, i);
            if (logits == nullptr) {
                return -100;
            }
            memcpy(out + (size_t)rows * n_vocab, logits, sizeof(float) * n_vocab);
            rows++;
        }
    }
    return 0;
}

int32_t owl_backend_features(char *buf, int32_t len) {
    std::string out;
    for (size_t i = 0; i < ggml_backend_reg_count(); i++) {
        ggml_backend_reg_t reg = ggml_backend_reg_get(i);
        auto get = (ggml_backend_get_features_t)ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features");
        if (get == nullptr) {
            continue;
        }
        for (ggml_backend_feature *f = get(reg); f->name != nullptr; f++) {
            out += ggml_backend_reg_name(reg);
            out += '\t';
            out += f->name;
            out += '\t';
            out += f->value;
            out += '\n';
        }
    }
    if (buf != nullptr && (int32_t)out.size() <= len) {
        memcpy(buf, out.data(), out.size());
    }
    return (int32_t)out.size();
}
