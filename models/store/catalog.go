package store

import (
	"regexp"
	"slices"
	"strings"
)

// CatalogEntry is a well-known model that can be pulled by a short name.
type CatalogEntry struct {
	Name        string // the short name, also the store name it is installed as
	Kind        Kind
	Repo        string // ORG/REPO on the hub
	File        string // the model file in Repo
	Projector   string // the projector file in Repo for image input, or ""
	Size        int64  // about how many bytes File and Projector hold together
	Description string
}

// ProjectorName is the store name a model's projector is installed as.
func ProjectorName(model string) string { return model + "-mmproj" }

// VoiceConfigName is the store name a Piper voice's configuration is
// installed as.
func VoiceConfigName(voice string) string { return voice + "-config" }

// piperRepo holds Piper's voices: FAMILY/CODE/NAME/QUALITY/CODE-NAME-QUALITY.onnx
// and .onnx.json beside it.
const piperRepo = "rhasspy/piper-voices"

// piperVoice matches the voice part of "piper:en_US-lessac-medium".
var piperVoice = regexp.MustCompile(`^([a-z]{2,3})_([A-Z]{2})-([A-Za-z0-9_]+)-(x_low|low|medium|high)$`)

// piperEntry is the catalog entry of a Piper voice named piper:VOICE.
func piperEntry(voice, desc string, bytes int64) (CatalogEntry, bool) {
	m := piperVoice.FindStringSubmatch(voice)
	if m == nil {
		return CatalogEntry{}, false
	}
	code := m[1] + "_" + m[2]
	file := m[1] + "/" + code + "/" + m[3] + "/" + m[4] + "/" + voice + ".onnx"
	if desc == "" {
		desc = "Piper voice " + voice
	}
	if bytes == 0 {
		bytes = 63 * mb
	}
	return CatalogEntry{Name: "piper:" + voice, Kind: KindVoice, Repo: piperRepo, File: file, Projector: file + ".json", Size: bytes, Description: desc}, true
}

func mustPiper(voice, desc string) CatalogEntry {
	e, ok := piperEntry(voice, desc, 0)
	if !ok {
		panic("bad Piper voice name " + voice)
	}
	return e
}

const (
	whisperRepo = "ggerganov/whisper.cpp"
	mb          = 1000 * 1000
)

func whisperEntry(size, desc string, bytes int64) CatalogEntry {
	return CatalogEntry{Name: "whisper:" + size, Kind: KindWhisper, Repo: whisperRepo, File: "ggml-" + size + ".bin", Size: bytes, Description: desc}
}

var catalog = []CatalogEntry{
	whisperEntry("tiny", "Whisper tiny, 99 languages", 78*mb),
	whisperEntry("tiny.en", "Whisper tiny, English", 78*mb),
	whisperEntry("base", "Whisper base, 99 languages", 148*mb),
	whisperEntry("base.en", "Whisper base, English", 148*mb),
	whisperEntry("small", "Whisper small, 99 languages", 488*mb),
	whisperEntry("small.en", "Whisper small, English", 488*mb),
	whisperEntry("medium", "Whisper medium, 99 languages", 1533*mb),
	whisperEntry("medium.en", "Whisper medium, English", 1533*mb),
	whisperEntry("large-v3", "Whisper large-v3, 100 languages", 3095*mb),
	whisperEntry("large-v3-q5_0", "Whisper large-v3 quantized to q5_0", 1081*mb),
	whisperEntry("large-v3-turbo", "Whisper large-v3-turbo: large-v3's encoder, 4 decoder layers", 1624*mb),
	whisperEntry("large-v3-turbo-q5_0", "Whisper large-v3-turbo quantized to q5_0", 574*mb),
	whisperEntry("large-v3-turbo-q8_0", "Whisper large-v3-turbo quantized to q8_0", 874*mb),
	{Name: "silero-vad", Kind: KindVAD, Repo: "ggml-org/whisper-vad", File: "ggml-silero-v5.1.2.bin", Size: 1 * mb,
		Description: "Silero VAD v5.1.2, voice activity for --vad-model"},
	{Name: "silero-vad:v6", Kind: KindVAD, Repo: "ggml-org/whisper-vad", File: "ggml-silero-v6.2.0.bin", Size: 1 * mb,
		Description: "Silero VAD v6.2.0, voice activity for --vad-model"},
	mustPiper("en_US-lessac-medium", "Piper voice: American English, lessac, medium (22 kHz)"),
	mustPiper("en_GB-alan-medium", "Piper voice: British English, alan, medium"),
	mustPiper("de_DE-thorsten-medium", "Piper voice: German, thorsten, medium"),
	mustPiper("fr_FR-siwis-medium", "Piper voice: French, siwis, medium"),
	mustPiper("es_ES-davefx-medium", "Piper voice: Spanish, davefx, medium"),
	{Name: "llama3.2:1b", Kind: KindLLM, Repo: "bartowski/Llama-3.2-1B-Instruct-GGUF", File: "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
		Size: 808 * mb, Description: "Llama 3.2 1B Instruct, Q4_K_M, text"},
	{Name: "smolvlm:500m", Kind: KindLLM, Repo: "ggml-org/SmolVLM-500M-Instruct-GGUF", File: "SmolVLM-500M-Instruct-Q8_0.gguf",
		Projector: "mmproj-SmolVLM-500M-Instruct-Q8_0.gguf", Size: 546 * mb, Description: "SmolVLM 500M Instruct, Q8_0, text and images"},
	{Name: "gemma3:4b", Kind: KindLLM, Repo: "ggml-org/gemma-3-4b-it-GGUF", File: "gemma-3-4b-it-Q4_K_M.gguf",
		Projector: "mmproj-model-f16.gguf", Size: 3340 * mb, Description: "Gemma 3 4B instruct, Q4_K_M, text and images"},
	{Name: "llava:7b", Kind: KindLLM, Repo: "mys/ggml_llava-v1.5-7b", File: "ggml-model-q4_k.gguf",
		Projector: "mmproj-model-f16.gguf", Size: 4700 * mb, Description: "LLaVA 1.5 7B, Q4_K, text and images"},
}

// Catalog lists the models that can be pulled by short name.
func Catalog() []CatalogEntry { return slices.Clone(catalog) }

// LookupCatalog finds the catalog entry called name.
// Any Piper voice of the piper-voices repository is "piper:CODE-NAME-QUALITY"
// ("piper:en_US-lessac-medium").
func LookupCatalog(name string) (CatalogEntry, bool) {
	for _, e := range catalog {
		if e.Name == name {
			return e, true
		}
	}
	if voice, ok := strings.CutPrefix(name, "piper:"); ok {
		return piperEntry(voice, "", 0)
	}
	return CatalogEntry{}, false
}
