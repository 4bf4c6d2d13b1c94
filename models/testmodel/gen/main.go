// Command gen writes a generated test model to a file, so that anyone can try
// owl without downloading weights:
//
//	go run ./models/testmodel/gen -kind llm -size tiny -o tiny.gguf
//	go run ./models/testmodel/gen -kind llm -size realistic -type q8_0 -o 1b-q8_0.gguf
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

func main() {
	kind := flag.String("kind", "llm", "model kind: llm")
	size := flag.String("size", "tiny", "size: tiny or realistic")
	typ := flag.String("type", "", "weight type: f32, f16 or q8_0 (default f16)")
	out := flag.String("o", "", "output path (required)")
	flag.Parse()
	if err := run(*kind, *size, *typ, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(kind, size, typ, out string) error {
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
	switch kind {
	case "llm":
		var c testmodel.LlamaConfig
		switch size {
		case "tiny":
			c = testmodel.TinyLlama()
			c.Type = t
		case "realistic":
			c = testmodel.RealisticLlama(t)
		default:
			return fmt.Errorf("unknown -size %q for llm (want tiny or realistic)", size)
		}
		return testmodel.WriteLlamaFile(out, c)
	}
	return fmt.Errorf("unknown -kind %q (want llm)", kind)
}
