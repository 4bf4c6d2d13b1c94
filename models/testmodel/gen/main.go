// Command gen writes a generated test model to a file, so that anyone can try
// owl without downloading weights:
//
//	go run ./models/testmodel/gen -kind llm -size tiny -o tiny.gguf
//	go run ./models/testmodel/gen -kind llm -size realistic -type q8_0 -o 1b-q8_0.gguf
//	go run ./models/testmodel/gen -kind whisper -size tiny -vocab en -o ggml-tiny.en.bin
//	go run ./models/testmodel/gen -kind mmproj -size tiny -o tiny-mmproj.gguf          # pairs with -kind llm -size tiny
//	go run ./models/testmodel/gen -kind llm -family qwen2vl -o tiny-qwen2vl.gguf
//	go run ./models/testmodel/gen -kind mmproj -family qwen2vl -o tiny-qwen2vl-mmproj.gguf
//	go run ./models/testmodel/gen -kind piper -size medium -o piper-medium.onnx              # and piper-medium.onnx.json
//	go run ./models/testmodel/gen -kind nomic-bert -o nomic.gguf                             # also bert, gemma-embedding
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

func main() {
	kind := flag.String("kind", "llm", "model kind: llm, mmproj (a vision projector), bert, nomic-bert or gemma-embedding (embedding models), whisper or piper (a voice)")
	size := flag.String("size", "tiny", "size: tiny or realistic (llm, mmproj); micro, tiny or base (whisper)")
	family := flag.String("family", "llava", "vision family of llm and mmproj: llava (llama text model, CLIP ViT + MLP) or qwen2vl (M-RoPE; tiny only)")
	typ := flag.String("type", "", "weight type: f32, f16 or q8_0 (default f16)")
	vocab := flag.String("vocab", "en", "whisper vocabulary: en (.en models), multi (99 languages) or v3 (100 languages, 128 mels)")
	out := flag.String("o", "", "output path (required)")
	flag.Parse()
	if err := run(*kind, *size, *family, *typ, *vocab, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(kind, size, family, typ, vocab, out string) error {
	if out == "" {
		return fmt.Errorf("-o is required")
	}
	t := models.TypeF16
	switch typ {
	case "", "f16":
	case "f32":
		t = models.TypeF32
	case "q8_0":
		t = models.TypeQ8_0
	default:
		return fmt.Errorf("unknown -type %q (want f32, f16 or q8_0)", typ)
	}
	switch family {
	case "llava":
	case "qwen2vl":
		if (kind != "llm" && kind != "mmproj") || size != "tiny" {
			return fmt.Errorf("-family qwen2vl is generated for -kind llm or mmproj at -size tiny only")
		}
	default:
		return fmt.Errorf("unknown -family %q (want llava or qwen2vl)", family)
	}
	switch kind {
	case "piper":
		// A Piper voice: OUT.onnx and OUT.onnx.json.
		c := testmodel.PiperSmall()
		switch size {
		case "small", "tiny":
		case "medium":
			c = testmodel.PiperMedium()
		default:
			return fmt.Errorf("unknown -size %q for piper (want small or medium)", size)
		}
		dir, name := filepath.Split(strings.TrimSuffix(out, ".onnx"))
		if dir == "" {
			dir = "."
		}
		_, err := testmodel.WritePiperVoice(filepath.Clean(dir), name, c)
		return err
	case "bert":
		if size != "tiny" {
			return fmt.Errorf("-kind bert is generated at -size tiny only")
		}
		return testmodel.WriteBertFile(out, testmodel.TinyBert())
	case "nomic-bert":
		if size != "tiny" {
			return fmt.Errorf("-kind nomic-bert is generated at -size tiny only")
		}
		return testmodel.WriteBertFile(out, testmodel.TinyNomicBert())
	case "gemma-embedding":
		if size != "tiny" {
			return fmt.Errorf("-kind gemma-embedding is generated at -size tiny only")
		}
		return testmodel.WriteLlamaFile(out, testmodel.TinyGemmaEmbedding())
	case "mmproj":
		var c testmodel.ProjectorConfig
		switch {
		case family == "qwen2vl":
			c = testmodel.TinyQwen2VLProjector()
		case size == "tiny":
			c = testmodel.TinyLlavaProjector()
		case size == "realistic":
			c = testmodel.RealisticLlavaProjector(testmodel.RealisticLlama(t).Embd)
		default:
			return fmt.Errorf("unknown -size %q for mmproj (want tiny or realistic)", size)
		}
		if typ != "" {
			c.Weights = t
		}
		return testmodel.WriteProjectorFile(out, c)
	case "llm":
		var c testmodel.LlamaConfig
		switch size {
		case "tiny":
			c = testmodel.TinyLlama()
			if family == "qwen2vl" {
				c = testmodel.TinyQwen2VL()
			}
			c.Type = t
		case "realistic":
			c = testmodel.RealisticLlama(t)
		default:
			return fmt.Errorf("unknown -size %q for llm (want tiny or realistic)", size)
		}
		return testmodel.WriteLlamaFile(out, c)
	case "whisper":
		ftype := map[models.GGMLType]int{models.TypeF32: 0, models.TypeF16: 1, models.TypeQ8_0: 7}[t]
		n := testmodel.VocabEnglish
		switch vocab {
		case "en":
		case "multi":
			n = testmodel.VocabMultilingual
		case "v3":
			n = testmodel.VocabLargeV3
		default:
			return fmt.Errorf("unknown -vocab %q (want en, multi or v3)", vocab)
		}
		var c testmodel.WhisperConfig
		switch size {
		case "micro":
			c = testmodel.WhisperMicro(n, ftype)
		case "tiny":
			c = testmodel.WhisperTiny(n, ftype)
		case "base":
			c = testmodel.WhisperBase(n, ftype)
		default:
			return fmt.Errorf("unknown -size %q for whisper (want micro, tiny or base)", size)
		}
		if n == testmodel.VocabLargeV3 {
			c.HParams.NMels = 128
		}
		return testmodel.WriteWhisperFile(out, c)
	}
	return fmt.Errorf("unknown -kind %q (want llm, mmproj, bert, nomic-bert, gemma-embedding, whisper or piper)", kind)
}
