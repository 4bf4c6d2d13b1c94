package store

import (
	"fmt"
	"os"

	"github.com/owlengine/owl/models"
)

// Info is what a model file is, read from its header: its kind, its size,
// the memory it needs and the facts of its format (one of GGUF, Whisper
// and Silero is set).
type Info struct {
	Kind    Kind
	Size    int64
	Memory  models.MemoryEstimate
	GGUF    *models.GGUFSummary    // text models and projectors
	Whisper *models.WhisperHParams // whisper models
	Silero  *models.SileroFile     // VAD models
	Voice   *models.PiperHParams   // Piper voices
	// VocabOnly is set for a whisper file with a header, mel filters and
	// vocabulary but no weights (whisper.cpp's for-tests files): it can
	// tokenize but not transcribe.
	VocabOnly bool
}

// Inspect reads the model file at path: its kind and facts, and its memory
// estimate with a text model's KV cache sized for nCtx tokens (0: the
// default context). Errors name the file.
func Inspect(path string, nCtx uint64) (Info, error) {
	kind, err := DetectKind(path)
	if err != nil {
		return Info{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return Info{}, err
	}
	info := Info{Kind: kind, Size: st.Size()}
	switch kind {
	case KindLLM, KindMMProj:
		g, err := models.ReadGGUF(path)
		if err != nil {
			return Info{}, err
		}
		s := g.Summary()
		info.GGUF, info.Memory = &s, g.EstimateMemory(nCtx)
	case KindWhisper:
		w, err := models.ReadWhisper(path)
		if err != nil {
			return Info{}, err
		}
		info.Whisper, info.VocabOnly = &w.HParams, w.VocabOnly
		if !w.VocabOnly { // nothing to run, nothing to hold
			info.Memory = w.EstimateMemory(1)
		}
	case KindVoice:
		b, err := os.ReadFile(path)
		if err != nil {
			return Info{}, err
		}
		m, err := models.ParseONNX(b)
		if err != nil {
			return Info{}, fmt.Errorf("%s: %w", path, err)
		}
		v, err := models.FindPiperWeights(&m.Graph)
		if err != nil {
			return Info{}, fmt.Errorf("%s: %w", path, err)
		}
		info.Voice = &v.HParams
		// The weights as f32 in memory, the decoder's activations of a
		// sentence of some seconds.
		info.Memory = models.MemoryEstimate{Weights: uint64(st.Size()), Compute: 256 << 20}
	case KindVAD:
		v, err := models.ReadSilero(path)
		if err != nil {
			return Info{}, err
		}
		info.Silero, info.Memory = v, v.EstimateMemory()
	default:
		return Info{}, fmt.Errorf("%s: %w", path, ErrUnknownKind)
	}
	return info, nil
}
