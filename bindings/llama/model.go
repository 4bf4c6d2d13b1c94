package llama

/*
#include <stdlib.h>
#include "owl_llama.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unsafe"
)

// ErrLoad is returned (wrapped, with the native reason) when llama.cpp cannot
// load a model file.
var ErrLoad = errors.New("llama.cpp could not load the model")

// ErrTemplate is returned when a chat template is not one llama.cpp knows.
var ErrTemplate = errors.New("unsupported chat template")

// loadMu serializes model loads so that the native error lines of one load
// are not mixed with another's.
var loadMu sync.Mutex

// ModelParams says how to load a model.
type ModelParams struct {
	UseMmap   bool // map the file instead of reading it into memory
	VocabOnly bool // load the vocabulary alone (no weights)

	// GPULayers is how many of the model's layers go to Device: 0 keeps
	// the model on the CPU, a number past the model's layers (or < 0)
	// offloads all of them and the output layer.
	GPULayers int
	// Device is the GPU the offloaded layers go to (one device: the
	// memory budget of each GPU is kept apart).
	Device Device
}

// Model is a loaded llama.cpp model. Its methods may be called concurrently;
// Close must not race with them.
type Model struct {
	c     *C.struct_llama_model
	vocab *C.struct_llama_vocab
	once  sync.Once
	gpu   bool // layers offloaded to a GPU
	// softwareGPU: the GPU is Mesa's software Vulkan device, lavapipe,
	// whose graphs must stay at softwareGPUMicroBatch tokens.
	softwareGPU bool

	nVocab int
	pieces []string // text of each token as output renders it
	flags  []uint8  // C.OWL_TOKEN_* per token
}

// LoadModel loads the model file at path.
func LoadModel(path string, p ModelParams) (*Model, error) {
	Init()
	params := C.llama_model_default_params()
	params.use_mmap = C.bool(p.UseMmap)
	params.vocab_only = C.bool(p.VocabOnly)
	// The devices list is NULL-terminated; an empty one keeps llama.cpp
	// off every GPU (with none, it would use them all for big batches).
	devs := (*[2]C.ggml_backend_dev_t)(C.calloc(2, C.size_t(unsafe.Sizeof(C.ggml_backend_dev_t(nil)))))
	defer C.free(unsafe.Pointer(devs))
	params.devices = &devs[0]
	params.n_gpu_layers = 0
	if p.GPULayers != 0 && p.Device.dev != nil {
		devs[0] = p.Device.dev
		params.n_gpu_layers = C.int32_t(p.GPULayers)
		if p.GPULayers < 0 {
			params.n_gpu_layers = 1 << 30
		}
		params.split_mode = C.LLAMA_SPLIT_MODE_NONE
		params.main_gpu = 0
	}

	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))

	loadMu.Lock()
	var c *C.struct_llama_model
	lines := captureErrors(func() { c = C.llama_model_load_from_file(cpath, params) })
	loadMu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("%w: %s", ErrLoad, loadReason(lines))
	}
	m := &Model{c: c, vocab: C.llama_model_get_vocab(c), gpu: params.n_gpu_layers > 0}
	m.softwareGPU = m.gpu && p.Device.IsSoftware()
	m.nVocab = int(C.llama_vocab_n_tokens(m.vocab))
	m.dumpVocab()
	return m, nil
}

// loadReason picks the most telling native error line of a failed load.
func loadReason(lines []string) string {
	for _, l := range lines {
		if _, after, ok := strings.Cut(l, "error loading model: "); ok {
			return strings.TrimSpace(after)
		}
	}
	if len(lines) > 0 {
		return lines[0]
	}
	return "no reason given"
}

func (m *Model) dumpVocab() {
	n := m.nVocab
	ends := make([]int64, n)
	m.flags = make([]uint8, n)
	size := C.owl_vocab_dump(m.vocab, nil, 0, (*C.int64_t)(unsafe.Pointer(&ends[0])), (*C.uint8_t)(unsafe.Pointer(&m.flags[0])))
	buf := make([]byte, int(size)+1)
	C.owl_vocab_dump(m.vocab, cbytes(buf), C.int64_t(len(buf)), nil, nil)
	all := string(buf[:size])
	m.pieces = make([]string, n)
	start := int64(0)
	for i, end := range ends {
		m.pieces[i] = all[start:end]
		start = end
	}
}

// Close frees the model. It is safe to call more than once.
func (m *Model) Close() error {
	m.once.Do(func() {
		C.llama_model_free(m.c)
		m.c = nil
	})
	return nil
}

// OnGPU reports whether layers of the model were offloaded to a GPU.
func (m *Model) OnGPU() bool { return m.gpu }

// NumVocab is the number of tokens in the vocabulary.
func (m *Model) NumVocab() int { return m.nVocab }

// NumEmbd is the width of the model's embeddings.
func (m *Model) NumEmbd() int { return int(C.llama_model_n_embd(m.c)) }

// NumLayer is the number of transformer blocks.
func (m *Model) NumLayer() int { return int(C.llama_model_n_layer(m.c)) }

// TrainContext is the context length the model was trained with.
func (m *Model) TrainContext() int { return int(C.llama_model_n_ctx_train(m.c)) }

// Size is the total size of the model's tensors in bytes.
func (m *Model) Size() uint64 { return uint64(C.llama_model_size(m.c)) }

// NumParams is the number of parameters of the model.
func (m *Model) NumParams() uint64 { return uint64(C.llama_model_n_params(m.c)) }

// Description is llama.cpp's one-line description (architecture, size, type).
func (m *Model) Description() string {
	buf := make([]byte, 256)
	n := C.llama_model_desc(m.c, cbytes(buf), C.size_t(len(buf)))
	if n < 0 {
		return ""
	}
	return string(buf[:min(int(n), len(buf)-1)])
}

// Metadata returns every metadata key of the model with its value rendered
// as text (arrays are summarized by llama.cpp).
func (m *Model) Metadata() map[string]string {
	size := C.owl_model_meta(m.c, nil, 0)
	buf := make([]byte, int(size)+1)
	size = C.owl_model_meta(m.c, cbytes(buf), C.int64_t(len(buf)))
	parts := strings.Split(string(buf[:size]), "\x00")
	md := make(map[string]string, len(parts)/2)
	for i := 0; i+1 < len(parts); i += 2 {
		md[parts[i]] = parts[i+1]
	}
	return md
}

// ChatTemplate returns the model's default chat template text, or "".
func (m *Model) ChatTemplate() string {
	t := C.llama_model_chat_template(m.c, nil)
	if t == nil {
		return ""
	}
	return C.GoString(t)
}

// Token is a vocabulary index.
type Token = int32

// Special tokens. A value < 0 means the model has none.
func (m *Model) BOS() Token { return Token(C.llama_vocab_bos(m.vocab)) }

// EOS is the end-of-sequence token.
func (m *Model) EOS() Token { return Token(C.llama_vocab_eos(m.vocab)) }

// AddBOS reports whether prompts should start with BOS.
func (m *Model) AddBOS() bool { return bool(C.llama_vocab_get_add_bos(m.vocab)) }

// IsEOG reports whether t ends generation (end of sequence or of turn).
func (m *Model) IsEOG(t Token) bool {
	return t >= 0 && int(t) < m.nVocab && m.flags[t]&C.OWL_TOKEN_EOG != 0
}

// IsControl reports whether t is a control token (rendered as nothing).
func (m *Model) IsControl(t Token) bool {
	return t >= 0 && int(t) < m.nVocab && m.flags[t]&C.OWL_TOKEN_CONTROL != 0
}

// ControlTexts returns the text of every control token: what tokenizing
// with special-token parsing turns into that token ("<|im_start|>").
func (m *Model) ControlTexts() []string {
	var out []string
	for t := range m.nVocab {
		if m.flags[t]&C.OWL_TOKEN_CONTROL == 0 {
			continue
		}
		if s := C.GoString(C.llama_vocab_get_text(m.vocab, C.llama_token(t))); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// TokenText is the vocabulary's text of token t ("" when out of range):
// a control token's own text ("<|begin_of_text|>").
func (m *Model) TokenText(t Token) string {
	if t < 0 || int(t) >= m.nVocab {
		return ""
	}
	return C.GoString(C.llama_vocab_get_text(m.vocab, C.llama_token(t)))
}

// Piece returns the bytes token t renders as in output; control tokens and
// tokens out of range render as "".
func (m *Model) Piece(t Token) string {
	if t < 0 || int(t) >= m.nVocab {
		return ""
	}
	return m.pieces[t]
}

// Tokenize converts text to tokens. addSpecial adds BOS (or EOS) where the
// model wants them; parseSpecial lets special-token text such as
// "<|im_start|>" become the special token instead of plain text.
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]Token, error) {
	if text == "" && !addSpecial {
		return nil, nil
	}
	buf := []byte(text)
	out := make([]Token, len(buf)+2)
	n := C.llama_tokenize(m.vocab, cbytes(buf), C.int32_t(len(buf)), (*C.llama_token)(unsafe.Pointer(&out[0])), C.int32_t(len(out)), C.bool(addSpecial), C.bool(parseSpecial))
	if n < 0 {
		out = make([]Token, -n)
		n = C.llama_tokenize(m.vocab, cbytes(buf), C.int32_t(len(buf)), (*C.llama_token)(unsafe.Pointer(&out[0])), C.int32_t(len(out)), C.bool(addSpecial), C.bool(parseSpecial))
		if n < 0 {
			return nil, fmt.Errorf("tokenize %d bytes: llama.cpp needs %d tokens", len(buf), -n)
		}
	}
	return out[:n], nil
}

// Detokenize concatenates the pieces of tokens.
func (m *Model) Detokenize(tokens []Token) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteString(m.Piece(t))
	}
	return b.String()
}

// ChatMessage is one turn of a conversation.
type ChatMessage struct {
	Role    string
	Content string
}

// ApplyChatTemplate formats msgs into a prompt with tmpl (a template text or
// a built-in name such as "chatml"); addAssistant ends the prompt with the
// opening of an assistant turn.
func ApplyChatTemplate(tmpl string, msgs []ChatMessage, addAssistant bool) (string, error) {
	Init()
	var packed []byte
	total := 0
	for _, msg := range msgs {
		if strings.IndexByte(msg.Role, 0) >= 0 || strings.IndexByte(msg.Content, 0) >= 0 {
			return "", errors.New("chat message contains a NUL byte")
		}
		packed = append(packed, msg.Role...)
		packed = append(packed, 0)
		packed = append(packed, msg.Content...)
		packed = append(packed, 0)
		total += len(msg.Role) + len(msg.Content)
	}
	packed = append(packed, 0)
	ctmpl := C.CString(tmpl)
	defer C.free(unsafe.Pointer(ctmpl))
	buf := make([]byte, 2*total+256)
	for {
		n := C.owl_chat_apply(ctmpl, cbytes(packed), C.int32_t(len(msgs)), C.bool(addAssistant), cbytes(buf), C.int32_t(len(buf)))
		if n < 0 {
			return "", ErrTemplate
		}
		if int(n) <= len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, int(n))
	}
}

// InputEmbd is the width of the embeddings the model reads per token
// (what a projector must write).
func (m *Model) InputEmbd() int { return int(C.llama_model_n_embd_inp(m.c)) }
