package store

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/owlengine/owl/models"
)

// Kind says what a model file is for.
type Kind string

// The kinds of model the store holds.
const (
	KindLLM     Kind = "llm"     // a GGUF text model for llama.cpp
	KindMMProj  Kind = "mmproj"  // a GGUF multimodal projector (general.architecture "clip")
	KindWhisper Kind = "whisper" // a whisper.cpp ggml speech model
	KindVAD     Kind = "vad"     // a whisper.cpp ggml Silero voice activity model
	KindVoice   Kind = "voice"   // a Piper voice's model: NAME.onnx (its configuration beside it, or pulled with it)
	// KindVoiceConfig is a Piper voice's configuration (NAME.onnx.json),
	// paired with its model as a projector is with a text model.
	KindVoiceConfig Kind = "voice-config"
)

// Describe says what the kind is in words: "text model (llm)".
func (k Kind) Describe() string {
	switch k {
	case KindLLM:
		return "text model (llm)"
	case KindMMProj:
		return "projector (mmproj)"
	case KindWhisper:
		return "whisper speech model"
	case KindVAD:
		return "Silero voice activity model (vad)"
	case KindVoice:
		return "Piper voice (voice)"
	case KindVoiceConfig:
		return "Piper voice configuration (voice-config)"
	}
	return string(k)
}

// ErrUnknownKind is wrapped by errors about files that are none of the kinds.
var ErrUnknownKind = errors.New("not a model file owl recognizes")

// DetectKind reads the file at path and says which kind of model it is,
// from its content: a GGUF whose general.architecture is "clip" is a
// projector, any other GGUF a text model; a ggml file with a whisper header
// is a whisper model, one with a Silero header a VAD model. The whole
// header is checked, so a truncated or corrupt file is an error.
func DetectKind(path string) (Kind, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if st.IsDir() {
		return "", fmt.Errorf("%s: is a directory", path)
	}
	k, err := detectKind(f, st.Size())
	if errors.Is(err, errONNX) {
		return detectVoice(path, f, st.Size())
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

const ggmlMagic = "lmgg" // 0x67676d6c little-endian, whisper.cpp's and Silero's

func detectKind(r io.ReaderAt, size int64) (Kind, error) {
	g, err := models.ParseGGUF(r, size)
	switch {
	case err == nil:
		switch arch := g.Architecture(); arch {
		case "":
			return "", fmt.Errorf("%w: a GGUF without general.architecture", ErrUnknownKind)
		case "clip":
			return KindMMProj, nil
		default:
			return KindLLM, nil
		}
	case !errors.Is(err, models.ErrNotGGUF):
		return "", err
	}
	magic := make([]byte, 4)
	if _, err := r.ReadAt(magic, 0); err == nil && magic[0] == 0x08 && string(magic) != ggmlMagic {
		return "", errONNX // protobuf's first field, ir_version: ONNX, read whole by detectVoice
	}
	if n, _ := r.ReadAt(magic[:1], 0); n == 1 && magic[0] == '{' && size < 1<<22 {
		b := make([]byte, size)
		if _, err := r.ReadAt(b, 0); err != nil {
			return "", err
		}
		if _, err := models.ParsePiperConfig(b); err != nil {
			return "", fmt.Errorf("%w: a JSON file that is no Piper voice configuration (%v)", ErrUnknownKind, err)
		}
		return KindVoiceConfig, nil
	}
	if _, err := r.ReadAt(magic, 0); err != nil || string(magic) != ggmlMagic {
		return "", fmt.Errorf("%w: neither GGUF nor a whisper.cpp ggml file (it starts with %q)", ErrUnknownKind, magic)
	}
	_, werr := models.ParseWhisper(r, size)
	if werr == nil {
		return KindWhisper, nil
	}
	_, serr := models.ParseSilero(r, size)
	if serr == nil {
		return KindVAD, nil
	}
	if errors.Is(serr, models.ErrNotSilero) && !errors.Is(werr, models.ErrNotWhisper) {
		return "", werr // a whisper header, broken further on
	}
	if !errors.Is(serr, models.ErrNotSilero) {
		return "", serr
	}
	return "", fmt.Errorf("%w: a ggml file that is neither a whisper model (%v) nor a Silero VAD model (%v)", ErrUnknownKind, werr, serr)
}

// errONNX tells DetectKind that a file may be ONNX.
var errONNX = errors.New("maybe ONNX")

// maxVoiceBytes bounds the ONNX files read whole to recognize them.
const maxVoiceBytes = 1 << 30

// detectVoice recognizes a Piper voice: an ONNX file whose graph holds a
// Piper VITS network's weights, with its configuration beside it.
func detectVoice(path string, r io.ReaderAt, size int64) (Kind, error) {
	if size > maxVoiceBytes {
		return "", fmt.Errorf("%s: %w: an ONNX file of %d bytes", path, ErrUnknownKind, size)
	}
	b := make([]byte, size)
	if _, err := r.ReadAt(b, 0); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	m, err := models.ParseONNX(b)
	if err != nil {
		return "", fmt.Errorf("%s: %w: %v", path, ErrUnknownKind, err)
	}
	if _, err := models.FindPiperWeights(&m.Graph); err != nil {
		return "", fmt.Errorf("%s: %w (an ONNX model owl can run only when it is a Piper voice)", path, err)
	}
	// The configuration, when it lies beside the model, must be one; a
	// pulled voice has it in the store, paired as a projector is.
	if js, err := os.ReadFile(path + ".json"); err == nil {
		if _, err := models.ParsePiperConfig(js); err != nil {
			return "", fmt.Errorf("%s.json: %w", path, err)
		}
	}
	return KindVoice, nil
}
