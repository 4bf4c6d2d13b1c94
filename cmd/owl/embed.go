package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/owlengine/owl/engine"
)

func newEmbedCmd() *cobra.Command {
	var (
		model      string
		threads    int
		gpu        gpuFlags
		dimensions int
		raw        bool
	)
	cmd := &cobra.Command{
		Use:   "embed -m MODEL TEXT...",
		Short: "Embeddings of texts: one JSON line per text",
		Long: `Embed prints the embedding of each TEXT (or of each line of standard input
when no TEXT is given) as a JSON line {"text", "embedding"}: an embedding
model's vector (a BERT-family GGUF, pooled as it says) or a generative
model's (its hidden states' mean), normalized to unit length unless --raw.
Texts are embedded together, each alone in the model's eyes.`,
		Example: `  owl embed -m nomic-embed-text "The owl sees at night." "Owls hunt mice."
  owl embed -m tiny.gguf < sentences.txt`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" {
				return usageError{errors.New("embed needs a model (-m)")}
			}
			path, err := resolveModel(model)
			if err != nil {
				return err
			}
			texts := args
			if len(texts) == 0 {
				sc := bufio.NewScanner(os.Stdin)
				sc.Buffer(nil, 1<<20)
				for sc.Scan() {
					if t := sc.Text(); t != "" {
						texts = append(texts, t)
					}
				}
				if err := sc.Err(); err != nil {
					return err
				}
			}
			if len(texts) == 0 {
				return usageError{errors.New("no text: pass texts or lines on standard input")}
			}
			eo := engine.Options{Threads: threads}
			if err := gpu.apply(&eo); err != nil {
				return err
			}
			e := engine.New(eo)
			defer e.Close()
			res, err := e.Embed(cmd.Context(), engine.EmbedRequest{Model: path, Inputs: texts, Truncate: true, Normalize: !raw, Dimensions: dimensions})
			if err != nil {
				return err
			}
			w := bufio.NewWriter(os.Stdout)
			defer w.Flush()
			enc := json.NewEncoder(w)
			for i, v := range res.Embeddings {
				if err := enc.Encode(struct {
					Text      string    `json:"text"`
					Embedding []float32 `json:"embedding"`
				}{texts[i], v}); err != nil {
					return err
				}
			}
			fmt.Fprintf(os.Stderr, "owl: %d embeddings of %d dimensions, %d tokens, %.0f ms\n", len(res.Embeddings), len(res.Embeddings[0]), res.PromptTokens, res.Duration.Seconds()*1000)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&model, "model", "m", "", "text or embedding model (GGUF)")
	fs.IntVar(&dimensions, "dimensions", 0, "keep the first N dimensions (Matryoshka models)")
	fs.BoolVar(&raw, "raw", false, "the vectors as the model makes them, not normalized")
	fs.IntVarP(&threads, "threads", "t", 0, "CPU threads (default: all CPUs)")
	gpu.register(fs, "device")
	fs.SetNormalizeFunc(normalizeFlag)
	return cmd
}
