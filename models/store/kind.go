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
