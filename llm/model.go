package llm

import (
	"errors"
	"fmt"
	"github.com/ardanlabs/jinja"
	"os"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/owlengine/owl/bindings/llama"
	"github.com/owlengine/owl/models"
)

// Token is a vocabulary index.
type Token = int32

// ErrUnsupportedModel is returned for a GGUF file that is not a text model
// llama.cpp can run (an unknown architecture, a projector, a vocabulary alone).
var ErrUnsupportedModel = errors.New("unsupported model")

// Model is a loaded text model. It is safe for concurrent use; Close must
// not race with other calls.
type Model struct {
	path  string
	file  *models.GGUF
	m     *llama.Model
	tmpl  string
	bos   Token
	addBS bool

	defuseOnce sync.Once
	defuse     *strings.Replacer // control token texts → broken ones (nil: none)

	jinjaOnce sync.Once // compiles the chat template for tool calling
	jinja     *jinja.Template
	jinjaErr  error
}

// LoadOptions says how to load a model.
type LoadOptions struct {
	NoMmap bool // read the weights into memory instead of mapping the file

	// GPULayers is how many layers go to the GPU Device (< 0: all of them
	// and the output layer; 0: none). Device is the GPU's name as
	// llama.Devices lists it ("Vulkan0"); "" is the first GPU.
	GPULayers int
	Device    string
}

// ErrNoDevice is returned for a GPU that no loaded backend has.
var ErrNoDevice = errors.New("no such GPU")

// gpu finds the device of o (ok false: none, the model stays on the CPU).
func (o LoadOptions) gpu() (llama.Device, bool, error) {
	if o.GPULayers == 0 {
		return llama.Device{}, false, nil
	}
	if o.Device != "" {
		d, ok := llama.DeviceByName(o.Device)
		if !ok || !d.IsGPU() {
			return llama.Device{}, false, fmt.Errorf("%w %q (owl devices lists them)", ErrNoDevice, o.Device)
		}
		return d, true, nil
	}
	gpus := llama.GPUs()
	if len(gpus) == 0 {
		return llama.Device{}, false, nil
	}
	return gpus[0], true, nil
}

// Load checks the GGUF file at path and loads it. Errors name the file and
// say what is wrong with it.
func Load(path string, opts LoadOptions) (*Model, error) {
	g, err := models.ReadGGUF(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file", path)
		}
		return nil, err
	}
	arch := g.Architecture()
	switch {
	case arch == "":
		return nil, fmt.Errorf("%s: %w: no general.architecture in the metadata", path, ErrUnsupportedModel)
	case arch == "clip":
		return nil, fmt.Errorf("%s: %w: this is a multimodal projector (mmproj); pass it with --mmproj next to a text model", path, ErrUnsupportedModel)
	case len(g.Tensors) == 0:
		return nil, fmt.Errorf("%s: %w: the file has no tensors", path, ErrUnsupportedModel)
	}
	params := llama.ModelParams{UseMmap: !opts.NoMmap}
	if dev, ok, err := opts.gpu(); err != nil {
		return nil, err
	} else if ok {
		params.GPULayers, params.Device = opts.GPULayers, dev
	}
	lm, err := llama.LoadModel(path, params)
	if err != nil {
		reason := strings.TrimPrefix(err.Error(), llama.ErrLoad.Error()+": ")
		if strings.Contains(reason, "unknown model architecture") {
			return nil, fmt.Errorf("%s: %w: architecture %q is not supported by this build of llama.cpp", path, ErrUnsupportedModel, arch)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m := &Model{path: path, file: g, m: lm, tmpl: lm.ChatTemplate(), bos: lm.BOS(), addBS: lm.AddBOS()}
	return m, nil
}

// Close frees the model's native memory. It is idempotent.
func (m *Model) Close() error { return m.m.Close() }

// OnGPU reports whether layers of the model were offloaded to a GPU.
func (m *Model) OnGPU() bool { return m.m.OnGPU() }

// Path is the file the model was loaded from.
func (m *Model) Path() string { return m.path }

// File is the parsed GGUF header of the model file.
func (m *Model) File() *models.GGUF { return m.file }

// Description is a one-line summary (architecture, size, weight type).
func (m *Model) Description() string { return m.m.Description() }

// VocabSize is the number of tokens of the vocabulary.
func (m *Model) VocabSize() int { return m.m.NumVocab() }

// TrainContext is the context length the model was trained with.
func (m *Model) TrainContext() int { return m.m.TrainContext() }

// Size is the bytes of the model's weights.
func (m *Model) Size() uint64 { return m.m.Size() }

// ChatTemplate is the model's chat template text, or "" when it has none.
func (m *Model) ChatTemplate() string { return m.tmpl }

// IsEOG reports whether t ends generation.
func (m *Model) IsEOG(t Token) bool { return m.m.IsEOG(t) }

// EmbeddingOnly reports whether the model is an embedding model, which
// pools embeddings and does not generate text (see models.GGUF).
func (m *Model) EmbeddingOnly() bool { return m.file.EmbeddingOnly() }

// Tokenize converts text to tokens. With addSpecial the model's BOS is
// prepended where it wants one; with parseSpecial, special-token text (such
// as a chat template's "<|im_start|>") becomes the special token.
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]Token, error) {
	return m.m.Tokenize(text, addSpecial, parseSpecial)
}

// Detokenize renders tokens as text; control tokens render as nothing.
func (m *Model) Detokenize(tokens []Token) string { return m.m.Detokenize(tokens) }

// Piece is the text of one token.
func (m *Model) Piece(t Token) string { return m.m.Piece(t) }

// Message is one turn of a chat.
type Message struct {
	Role    string // "system", "user" or "assistant"
	Content string
	// Images are encoded image files (JPEG, PNG, ...) shown with this turn,
	// for models with a vision projector.
	Images [][]byte
	// ToolCalls are an assistant turn's calls; ToolCallID and ToolName
	// say which call a "tool" turn (a call's result) answers.
	ToolCalls  []ToolCall
	ToolCallID string
	ToolName   string
}

// checkRole refuses a chat message of a role no template renders.
func checkRole(i int, role string) error {
	switch role {
	case "system", "user", "assistant", "tool":
		return nil
	}
	return fmt.Errorf("chat message %d: unknown role %q (want system, user, assistant or tool)", i, role)
}

// FormatChat renders msgs with the model's chat template; addAssistant ends
// the prompt with the opening of the assistant's reply. Models without a
// template get ChatML. NUL bytes in contents are dropped, and control
// token texts defused (see Defuse), so that the prompt's turns are those of
// msgs whatever their contents say.
func (m *Model) FormatChat(msgs []Message, addAssistant bool) (string, error) {
	tmpl := m.tmpl
	if tmpl == "" {
		tmpl = "chatml"
	}
	lm := make([]llama.ChatMessage, len(msgs))
	for i, msg := range msgs {
		if err := checkRole(i, msg.Role); err != nil {
			return "", err
		}
		// llama.cpp takes C strings; a NUL byte (which a random or broken
		// model can emit) would cut the message short, so it is dropped.
		lm[i] = llama.ChatMessage{Role: msg.Role, Content: m.Defuse(strings.ReplaceAll(msg.Content, "\x00", ""))}
	}
	out, err := llama.ApplyChatTemplate(tmpl, lm, addAssistant)
	if err != nil {
		return "", fmt.Errorf("%s: chat template: %w", m.path, err)
	}
	return out, nil
}

// SystemFeatures lists the CPU features llama.cpp's backends were compiled
// with, as "NAME" for flags and "NAME=VALUE" otherwise.
func SystemFeatures() []string {
	var out []string
	for _, f := range llama.Features() {
		switch f.Value {
		case "1":
			out = append(out, f.Name)
		default:
			out = append(out, f.Name+"="+f.Value)
		}
	}
	return out
}

// Defuse returns text with the text of every control token in it broken by
// a zero-width space after its first character, so that a prompt holding
// it, tokenized with special-token parsing, gets plain text there and not
// the control token: a chat message cannot open a turn of another role or
// end its own. FormatChat defuses every message's content.
func (m *Model) Defuse(text string) string {
	m.defuseOnce.Do(func() {
		var pairs []string
		for _, c := range m.m.ControlTexts() {
			_, n := utf8.DecodeRuneInString(c)
			pairs = append(pairs, c, c[:n]+"\u200b"+c[n:])
		}
		if len(pairs) > 0 {
			m.defuse = strings.NewReplacer(pairs...)
		}
	})
	if m.defuse == nil {
		return text
	}
	return m.defuse.Replace(text)
}

// Device is a compute device of ggml's backends (the CPU, GPUs).
type Device = llama.Device

// Devices lists the compute devices, the CPU included.
func Devices() []Device { return llama.Devices() }

// GPUs lists the GPUs of the loaded GPU backends (none in a CPU build, or
// where the backend's driver finds none).
func GPUs() []Device { return llama.GPUs() }

// BackendLibraries lists the GPU backend libraries found and whether each
// loaded.
func BackendLibraries() []llama.BackendLibrary { return llama.Libraries() }
