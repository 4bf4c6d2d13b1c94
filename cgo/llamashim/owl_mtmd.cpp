// owl_mtmd.cpp: implementations of owl_mtmd.h.
#include "owl_mtmd.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include "ggml.h"
#include "gguf.h"
#include "mtmd-helper.h"

namespace {

// Projector types mtmd knows (clip.projector_type); others make it throw,
// which it reports as an error, so they need no check here.
const char *const known_projectors[] = {
    "mlp",        "mlp_norm", "ldp",       "ldpv2",      "resampler",      "adapter",          "qwen2vl_merger",
    "qwen2.5vl_merger",       "qwen3vl_merger",          "gemma3",         "idefics3",         "pixtral",
    "ultravox",   "internvl", "llama4",    "qwen2a",     "glma",           "qwen2.5o",         "voxtral",
    "lfm2",       "kimivl",   "lightonocr", "cogvlm",    "janus_pro",      "glm4v",
};

// Audio projectors mtmd can set up; for any other it aborts.
const char *const audio_projectors[] = {"ultravox", "qwen2a", "qwen2.5o", "voxtral"};

bool one_of(const std::string &s, std::initializer_list<const char *> list) {
    for (const char *x : list) {
        if (s == x) {
            return true;
        }
    }
    return false;
}

std::string format(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

// checker holds a projector's GGUF header (no tensor data) while its fields
// are checked. Every typed read happens after the type is checked, because
// gguf's typed getters abort on a mismatch.
struct checker {
    gguf_context *g = nullptr;
    ggml_context *meta = nullptr;
    std::string err;

    ~checker() {
        if (g != nullptr) {
            gguf_free(g);
        }
        if (meta != nullptr) {
            ggml_free(meta);
        }
    }

    bool fail(const std::string &msg) {
        if (err.empty()) {
            err = msg;
        }
        return false;
    }

    // type checks the key's type when it is present; required keys must be.
    bool type(const std::string &key, gguf_type want, bool required) {
        const int64_t i = gguf_find_key(g, key.c_str());
        if (i < 0) {
            return required ? fail("missing metadata " + key) : true;
        }
        const gguf_type t = gguf_get_kv_type(g, i);
        if (t != want) {
            return fail(format("metadata %s is %s, want %s", key.c_str(), gguf_type_name(t), gguf_type_name(want)));
        }
        return true;
    }

    // array checks an optional (or required) array's element type and length.
    bool array(const std::string &key, gguf_type elem, size_t min_n, bool even, bool required) {
        const int64_t i = gguf_find_key(g, key.c_str());
        if (i < 0) {
            return required ? fail("missing metadata " + key) : true;
        }
        if (gguf_get_kv_type(g, i) != GGUF_TYPE_ARRAY) {
            return fail("metadata " + key + " is not an array");
        }
        const gguf_type t = gguf_get_arr_type(g, i);
        if (t != elem) {
            return fail(format("metadata %s holds %s, want %s", key.c_str(), gguf_type_name(t), gguf_type_name(elem)));
        }
        const size_t n = gguf_get_arr_n(g, i);
        if (n < min_n || (even && n % 2 != 0)) {
            return fail(format("metadata %s has %zu values", key.c_str(), n));
        }
        return true;
    }

    // u32 reads a key whose type was checked; def when absent.
    int64_t u32(const std::string &key, int64_t def = 0) const {
        const int64_t i = gguf_find_key(g, key.c_str());
        return i < 0 ? def : (int64_t)gguf_get_val_u32(g, i);
    }

    bool flag(const std::string &key) const {
        const int64_t i = gguf_find_key(g, key.c_str());
        return i >= 0 && gguf_get_val_bool(g, i);
    }

    std::string str(const std::string &key) const {
        const int64_t i = gguf_find_key(g, key.c_str());
        return i < 0 ? "" : gguf_get_val_str(g, i);
    }

    const ggml_tensor *tensor(const std::string &name) const { return ggml_get_tensor(meta, name.c_str()); }

    // shape checks tensor name against ne (missing trailing dimensions are
    // 1); an absent tensor passes unless required. f32_only demands F32.
    bool shape(const std::string &name, std::initializer_list<int64_t> ne, bool required, bool f32_only = false) {
        const ggml_tensor *t = tensor(name);
        if (t == nullptr) {
            return required ? fail("missing tensor " + name) : true;
        }
        int64_t want[4] = {1, 1, 1, 1};
        int k = 0;
        for (int64_t v : ne) {
            want[k++] = v;
        }
        for (int d = 0; d < 4; d++) {
            if (t->ne[d] != want[d]) {
                return fail(format("tensor %s is [%lld, %lld, %lld, %lld], want [%lld, %lld, %lld, %lld]", name.c_str(),
                                   (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                                   (long long)want[0], (long long)want[1], (long long)want[2], (long long)want[3]));
            }
        }
        if (f32_only && t->type != GGML_TYPE_F32) {
            return fail(format("tensor %s is %s, want f32", name.c_str(), ggml_type_name(t->type)));
        }
        return true;
    }

    // check_keys checks the type of every key mtmd reads.
    bool check_keys() {
        bool ok = type("general.name", GGUF_TYPE_STRING, false) && type("general.description", GGUF_TYPE_STRING, false) &&
                  type("clip.has_vision_encoder", GGUF_TYPE_BOOL, false) &&
                  type("clip.has_audio_encoder", GGUF_TYPE_BOOL, false) &&
                  type("clip.projector_type", GGUF_TYPE_STRING, false) &&
                  type("clip.vision.projector_type", GGUF_TYPE_STRING, false) &&
                  type("clip.audio.projector_type", GGUF_TYPE_STRING, false) &&
                  type("clip.use_gelu", GGUF_TYPE_BOOL, false) && type("clip.use_silu", GGUF_TYPE_BOOL, false) &&
                  type("clip.vision.mm_patch_merge_type", GGUF_TYPE_STRING, false) &&
                  type("clip.vision.image_crop_resolution", GGUF_TYPE_UINT32, false) &&
                  type("clip.minicpmv_version", GGUF_TYPE_INT32, false) &&
                  type("clip.minicpmv_query_num", GGUF_TYPE_UINT32, false) &&
                  type("clip.vision.projector.scale_factor", GGUF_TYPE_UINT32, false) &&
                  type("clip.vision.preproc_image_size", GGUF_TYPE_UINT32, false) &&
                  type("clip.vision.spatial_merge_size", GGUF_TYPE_UINT32, false) &&
                  type("clip.vision.n_wa_pattern", GGUF_TYPE_UINT32, false) &&
                  type("clip.audio.num_mel_bins", GGUF_TYPE_UINT32, false) &&
                  type("clip.audio.projector.stack_factor", GGUF_TYPE_UINT32, false) &&
                  array("clip.vision.image_grid_pinpoints", GGUF_TYPE_INT32, 0, true, false) &&
                  array("clip.vision.feature_layer", GGUF_TYPE_INT32, 0, false, false);
        if (!ok) {
            return false;
        }
        const bool vision = flag("clip.has_vision_encoder");
        const bool audio = flag("clip.has_audio_encoder");
        if (!vision && !audio) {
            return fail("the file has neither a vision nor an audio encoder (clip.has_vision_encoder is not true); is it a "
                        "multimodal projector?");
        }
        for (const char *prefix : {"vision", "audio"}) {
            if ((std::string(prefix) == "vision" && !vision) || (std::string(prefix) == "audio" && !audio)) {
                continue;
            }
            const std::string p = std::string("clip.") + prefix + ".";
            if (!(type(p + "embedding_length", GGUF_TYPE_UINT32, true) &&
                  type(p + "attention.head_count", GGUF_TYPE_UINT32, true) &&
                  type(p + "feed_forward_length", GGUF_TYPE_UINT32, true) &&
                  type(p + "block_count", GGUF_TYPE_UINT32, true) &&
                  type(p + "projection_dim", GGUF_TYPE_UINT32, true) &&
                  type(p + "attention.layer_norm_epsilon", GGUF_TYPE_FLOAT32, true))) {
                return false;
            }
            const int64_t n_embd = u32(p + "embedding_length"), n_head = u32(p + "attention.head_count");
            const int64_t n_layer = u32(p + "block_count");
            if (n_head <= 0 || n_embd <= 0 || n_embd % n_head != 0) {
                return fail(format("%s width %lld is not a positive multiple of %lld heads", prefix, (long long)n_embd,
                                   (long long)n_head));
            }
            if (n_layer > 1024 || n_layer > gguf_get_n_tensors(g)) {
                return fail(format("%s encoder claims %lld layers but the file has %lld tensors", prefix,
                                   (long long)n_layer, (long long)gguf_get_n_tensors(g)));
            }
        }
        if (vision) {
            if (!(type("clip.vision.image_size", GGUF_TYPE_UINT32, true) &&
                  type("clip.vision.patch_size", GGUF_TYPE_UINT32, true) &&
                  array("clip.vision.image_mean", GGUF_TYPE_FLOAT32, 3, false, true) &&
                  array("clip.vision.image_std", GGUF_TYPE_FLOAT32, 3, false, true))) {
                return false;
            }
            const int64_t size = u32("clip.vision.image_size"), patch = u32("clip.vision.patch_size");
            if (patch <= 0 || size <= 0 || size > 8192 || patch > size) {
                return fail(format("image size %lld with patch size %lld", (long long)size, (long long)patch));
            }
            // LLaVA-1.6's resolutions: images are cut into tiles of image_size.
            const int64_t pp = gguf_find_key(g, "clip.vision.image_grid_pinpoints");
            if (pp >= 0) {
                const int32_t *v = (const int32_t *)gguf_get_arr_data(g, pp);
                for (size_t i = 0; i < gguf_get_arr_n(g, pp); i++) {
                    if (v[i] <= 0 || v[i] > 8192 || v[i] % size != 0) {
                        return fail(format("grid resolution %d is not a multiple of the image size %lld up to 8192", v[i],
                                           (long long)size));
                    }
                }
            }
            const int64_t mv = gguf_find_key(g, "clip.minicpmv_version");
            if (mv >= 0 && (gguf_get_val_i32(g, mv) < 2 || gguf_get_val_i32(g, mv) > 6)) {
                return fail(format("MiniCPM-V version %d is not one llama.cpp knows (2 to 6)", gguf_get_val_i32(g, mv)));
            }
        }
        if (audio) {
            if (!type("clip.audio.num_mel_bins", GGUF_TYPE_UINT32, true)) {
                return false;
            }
            std::string at = str("clip.projector_type");
            if (at.empty()) {
                at = str("clip.audio.projector_type");
            }
            bool known = false;
            for (const char *a : audio_projectors) {
                known = known || at == a;
            }
            if (!known) {
                return fail("audio projector type \"" + at + "\" is not supported");
            }
        }
        return true;
    }

    // ffn checks a block's feed-forward weights the way mtmd reads them:
    // files that name up and down the other way round are swapped first.
    bool ffn(const std::string &p, int64_t e, int64_t f) {
        std::string up = p + "ffn_up.", down = p + "ffn_down.";
        const ggml_tensor *d = tensor(down + "weight");
        if (tensor(up + "weight") != nullptr && d != nullptr && d->ne[0] == e) {
            std::swap(up, down);
        }
        return shape(up + "weight", {e, f}, true) && shape(up + "bias", {f}, false, true) &&
               shape(down + "weight", {f, e}, true) && shape(down + "bias", {e}, false, true) &&
               shape(p + "ffn_gate.weight", {e, f}, false) && shape(p + "ffn_gate.bias", {f}, false, true);
    }

    // block checks transformer block l of width e and feed-forward width f;
    // qkv_bias says whether the graph adds the q, k and v biases unconditionally.
    bool block(int64_t l, int64_t e, int64_t f, bool qkv_bias) {
        const std::string p = format("v.blk.%lld.", (long long)l);
        for (const char *n : {"ln1", "ln2"}) {
            if (!shape(p + n + ".weight", {e}, false, true) || !shape(p + n + ".bias", {e}, false, true)) {
                return false;
            }
        }
        for (const char *m : {"attn_q", "attn_k", "attn_v", "attn_out"}) {
            const bool bias_required = qkv_bias && std::string(m) != "attn_out";
            if (!shape(p + m + ".weight", {e, e}, true) || !shape(p + m + ".bias", {e}, bias_required, true)) {
                return false;
            }
        }
        if (tensor(p + "attn_qkv.weight") != nullptr || tensor(p + "attn_q_norm.weight") != nullptr ||
            tensor(p + "attn_k_norm.weight") != nullptr || tensor(p + "ls1.weight") != nullptr) {
            return fail("block " + p + " has tensors this projector type does not use");
        }
        return ffn(p, e, f);
    }

    // check_mlp checks a LLaVA projector: CLIP ViT + MLP (or Yi's mlp_norm).
    bool check_mlp(int64_t n_embd_text) {
        const int64_t e = u32("clip.vision.embedding_length"), f = u32("clip.vision.feed_forward_length");
        const int64_t layers = u32("clip.vision.block_count");
        const int64_t size = u32("clip.vision.image_size"), patch = u32("clip.vision.patch_size");
        if (size % patch != 0) {
            return fail(format("image size %lld is not a multiple of the patch size %lld", (long long)size,
                               (long long)patch));
        }
        // The graph runs the blocks up to the second-to-last, or up to the
        // deepest feature layer when feature layers are listed, and then
        // concatenates the listed layers' outputs: the projector's input is
        // as wide as the model times their number. Every block is checked.
        int64_t n_features = 0;
        const int64_t fl = gguf_find_key(g, "clip.vision.feature_layer");
        if (fl >= 0) {
            const int32_t *v = (const int32_t *)gguf_get_arr_data(g, fl);
            std::set<int32_t> uniq;
            for (size_t i = 0; i < gguf_get_arr_n(g, fl); i++) {
                if (v[i] < 0 || v[i] > layers) {
                    return fail(format("feature layer %d is outside the %lld blocks", v[i], (long long)layers));
                }
                uniq.insert(v[i]);
            }
            n_features = (int64_t)uniq.size();
        }
        const int64_t side = size / patch, n_patches = side * side;
        const bool cls = tensor("v.class_embd") != nullptr;
        if (!shape("v.patch_embd.weight", {patch, patch, 3, e}, true) || !shape("v.patch_embd.bias", {e}, false, true) ||
            !shape("v.class_embd", {e}, false, true) || !shape("v.pre_ln.weight", {e}, false, true) ||
            !shape("v.pre_ln.bias", {e}, false, true) || !shape("v.post_ln.weight", {e}, false, true) ||
            !shape("v.post_ln.bias", {e}, false, true)) {
            return false;
        }
        const ggml_tensor *pos = tensor("v.position_embd.weight");
        if (pos == nullptr || pos->ne[0] != e || pos->ne[1] < n_patches + (cls ? 1 : 0) || pos->ne[2] != 1) {
            return fail(format("tensor v.position_embd.weight must be [%lld, %lld] for %lld×%lld patches", (long long)e,
                               (long long)(n_patches + (cls ? 1 : 0)), (long long)side, (long long)side));
        }
        if (tensor("v.patch_embd.weight.1") != nullptr) {
            return fail("tensor v.patch_embd.weight.1 is not used by an mlp projector");
        }
        for (int64_t l = 0; l < layers; l++) {
            if (!block(l, e, f, false)) {
                return false;
            }
        }
        const int64_t in = n_features > 0 ? e * n_features : e;
        const ggml_tensor *mm0 = tensor("mm.0.weight");
        if (mm0 == nullptr) {
            return fail("missing tensor mm.0.weight");
        }
        const int64_t hidden = mm0->ne[1];
        if (!shape("mm.0.weight", {in, hidden}, true) || !shape("mm.0.bias", {hidden}, true, true)) {
            return false;
        }
        int64_t out = -1;
        if (tensor("mm.3.weight") != nullptr) { // Yi-VL: mm.0, norm mm.1, mm.3, norm mm.4
            const ggml_tensor *mm3 = tensor("mm.3.weight");
            out = mm3->ne[1];
            if (!shape("mm.1.weight", {hidden}, true, true) || !shape("mm.1.bias", {hidden}, true, true) ||
                !shape("mm.3.weight", {hidden, out}, true) || !shape("mm.3.bias", {out}, true, true) ||
                !shape("mm.4.weight", {out}, true, true) || !shape("mm.4.bias", {out}, true, true)) {
                return false;
            }
        } else {
            const ggml_tensor *mm2 = tensor("mm.2.weight");
            if (mm2 == nullptr) {
                return fail("missing tensor mm.2.weight (the projection into the text model)");
            }
            out = mm2->ne[1];
            if (!shape("mm.2.weight", {hidden, out}, true) || !shape("mm.2.bias", {out}, true, true)) {
                return false;
            }
        }
        if (out != n_embd_text) {
            return fail(format("the projector's output width %lld does not match the text model's embedding width %lld; "
                               "the mmproj belongs to another model",
                               (long long)out, (long long)n_embd_text));
        }
        return true;
    }

    // check_qwen2vl checks a Qwen2-VL projector: ViT with 2-D rotary
    // positions and a 2×2 patch merger.
    bool check_qwen2vl(int64_t n_embd_text) {
        const int64_t e = u32("clip.vision.embedding_length"), f = u32("clip.vision.feed_forward_length");
        const int64_t heads = u32("clip.vision.attention.head_count"), layers = u32("clip.vision.block_count");
        const int64_t patch = u32("clip.vision.patch_size");
        if ((e / heads) % 4 != 0) {
            return fail(format("head width %lld is not a multiple of 4, as 2-D rotary positions need",
                               (long long)(e / heads)));
        }
        if (u32("clip.vision.spatial_merge_size", 2) != 2) {
            return fail("qwen2vl_merger projectors merge 2×2 patches (clip.vision.spatial_merge_size 2)");
        }
        if (u32("clip.vision.n_wa_pattern", 0) != 0) {
            return fail("window attention (clip.vision.n_wa_pattern) is not used by qwen2vl_merger projectors");
        }
        if (tensor("v.patch_embd.bias") != nullptr || tensor("v.class_embd") != nullptr) {
            return fail("a qwen2vl_merger projector has no patch bias or class embedding");
        }
        if (!shape("v.patch_embd.weight", {patch, patch, 3, e}, true) ||
            !shape("v.patch_embd.weight.1", {patch, patch, 3, e}, true) || !shape("v.pre_ln.weight", {e}, false, true) ||
            !shape("v.pre_ln.bias", {e}, false, true) || !shape("v.post_ln.weight", {e}, false, true) ||
            !shape("v.post_ln.bias", {e}, false, true)) {
            return false;
        }
        for (int64_t l = 0; l < layers; l++) {
            if (!block(l, e, f, true)) {
                return false;
            }
        }
        const ggml_tensor *mm0 = tensor("mm.0.weight"), *mm2b = tensor("mm.2.bias");
        if (mm0 == nullptr || mm2b == nullptr) {
            return fail("missing tensor mm.0.weight or mm.2.bias");
        }
        const int64_t hidden = mm0->ne[1], out = mm2b->ne[0];
        if (!shape("mm.0.weight", {4 * e, hidden}, true) || !shape("mm.0.bias", {hidden}, true, true) ||
            !shape("mm.2.weight", {hidden, out}, true) || !shape("mm.2.bias", {out}, true, true)) {
            return false;
        }
        if (out != n_embd_text) {
            return fail(format("the projector's output width %lld does not match the text model's embedding width %lld; "
                               "the mmproj belongs to another model",
                               (long long)out, (long long)n_embd_text));
        }
        return true;
    }
};

void copy_out(const std::string &s, char *buf, int32_t len) {
    if (buf == nullptr || len <= 0) {
        return;
    }
    const size_t n = std::min(s.size(), (size_t)len - 1);
    memcpy(buf, s.data(), n);
    buf[n] = '\0';
}

} // namespace

namespace {

int32_t check_impl(const char *path, int32_t n_embd_text, char *proj, int32_t proj_len, bool *checked_shapes, char *err,
                   int32_t err_len) {
    checker c;
    *checked_shapes = false;
    copy_out("", proj, proj_len);
    gguf_init_params params = {/*.no_alloc =*/true, /*.ctx =*/&c.meta};
    c.g = gguf_init_from_file(path, params);
    if (c.g == nullptr) {
        copy_out("not a readable GGUF file", err, err_len);
        return 1;
    }
    const int64_t arch = gguf_find_key(c.g, "general.architecture");
    if (arch >= 0 && (gguf_get_kv_type(c.g, arch) != GGUF_TYPE_STRING || std::string(gguf_get_val_str(c.g, arch)) != "clip")) {
        std::string a = gguf_get_kv_type(c.g, arch) == GGUF_TYPE_STRING ? gguf_get_val_str(c.g, arch) : "?";
        copy_out("the file is a \"" + a + "\" model, not a multimodal projector (general.architecture \"clip\")", err,
                 err_len);
        return 1;
    }
    bool ok = c.check_keys();
    std::string type;
    if (ok) {
        type = c.str("clip.projector_type");
        if (type.empty()) {
            type = c.str("clip.vision.projector_type");
        }
        if (type.empty() && c.flag("clip.has_vision_encoder")) {
            type = "mlp"; // mtmd's default
        }
        copy_out(type, proj, proj_len);
        bool known = false;
        for (const char *k : known_projectors) {
            known = known || type == k;
        }
        if (!known && !type.empty()) {
            ok = c.fail("projector type \"" + type + "\" is not one llama.cpp knows");
        }
    }
    if (ok && c.flag("clip.has_vision_encoder")) {
        if (type == "mlp") {
            ok = c.check_mlp(n_embd_text);
            *checked_shapes = ok;
        } else if (type == "qwen2vl_merger") {
            ok = c.check_qwen2vl(n_embd_text);
            *checked_shapes = ok;
        }
    }
    if (!ok) {
        copy_out(c.err, err, err_len);
        return 1;
    }
    return 0;
}

} // namespace

// Exceptions must not cross into Go: gguf's reader throws on some malformed
// files (a string length past what memory holds), and allocations may fail.
// Every entry point below turns them into an error status.

int32_t owl_mtmd_check(const char *path, int32_t n_embd_text, char *proj, int32_t proj_len, bool *checked_shapes,
                       char *err, int32_t err_len) {
    try {
        return check_impl(path, n_embd_text, proj, proj_len, checked_shapes, err, err_len);
    } catch (const std::exception &e) {
        copy_out(std::string("not a readable GGUF file: ") + e.what(), err, err_len);
    } catch (...) {
        copy_out("not a readable GGUF file", err, err_len);
    }
    *checked_shapes = false;
    return 1;
}

mtmd_context *owl_mtmd_open(const char *path, const struct llama_model *text_model, int32_t n_threads,
                            const char *media_marker, char *proj, int32_t proj_len, bool *checked_shapes, char *err,
                            int32_t err_len) {
    if (owl_mtmd_check(path, llama_model_n_embd_inp(text_model), proj, proj_len, checked_shapes, err, err_len) != 0) {
        return nullptr;
    }
    mtmd_context_params params = mtmd_context_params_default();
    params.use_gpu = false;
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
