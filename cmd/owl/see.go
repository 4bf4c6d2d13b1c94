package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/store"
)

func newSeeCmd() *cobra.Command {
	var (
		ef     engineFlags
		sf     sampleFlags
		prompt string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "see -m MODEL.gguf --mmproj MMPROJ.gguf IMAGE [IMAGE...] [-p PROMPT]",
		Short: "Ask a vision model about images",
		Long: `See shows the images (JPEG, PNG, GIF, WebP, BMP or TIFF, recognized by
content) to a vision model with its projector and streams its answer to the
prompt. The images come first, in order, then the prompt, in one user
message formatted by the model's chat template.`,
		Args: usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ef.check(); err != nil {
				return err
			}
			if ef.mmproj == "" {
				return usageError{fmt.Errorf("no projector: pass --mmproj MMPROJ.gguf (the vision part of the model)")}
			}
			opts, err := sf.options()
			if err != nil {
				return err
			}
			var images [][]byte
			for _, path := range args {
				data, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				images = append(images, data)
			}
			e := ef.engine()
			defer e.Close()
			out := bufio.NewWriter(os.Stdout)
			defer out.Flush()
			var onChunk func(engine.Chunk) error
			if !asJSON {
				onChunk = func(c engine.Chunk) error {
					out.WriteString(c.Text)
					return out.Flush()
				}
			}
			req := engine.ChatRequest{Model: ef.model, Projector: ef.mmproj, GenerateOptions: opts,
				Messages: []engine.Message{{Role: "user", Content: prompt, Images: images}}}
			res, err := e.Chat(cmd.Context(), req, onChunk)
			return finishResult(out, ef.model, res, err, asJSON)
		},
	}
	ef.register(cmd)
	sf.register(cmd, 256)
	cmd.Flags().StringVarP(&prompt, "prompt", "p", "Describe this image.", "what to ask about the images")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object with the text and statistics")
	return cmd
}

func newBenchVisionCmd() *cobra.Command {
	var (
		ef     engineFlags
		image  string
		repeat int
	)
	cmd := &cobra.Command{
		Use:   "vision -m MODEL.gguf --mmproj MMPROJ.gguf [-f IMAGE]",
		Short: "Image encoding time, tokens per image and prefill speed of a vision model",
		Long: `Bench vision encodes an image (default: a generated 224×224 picture) with the
projector, never from a cache, and evaluates it with a short prompt on a
fresh context, reporting the encoder's time per image, the KV cells
(tokens) and positions the image takes, and prefill tokens/s.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ef.check(); err != nil {
				return err
			}
			if ef.mmproj == "" {
				return usageError{fmt.Errorf("no projector: pass --mmproj MMPROJ.gguf")}
			}
			var data []byte
			if image != "" {
				var err error
				if data, err = os.ReadFile(image); err != nil {
					return err
				}
			}
			e := ef.engine()
			defer e.Close()
			r, err := e.BenchVision(cmd.Context(), engine.VisionBenchRequest{Model: ef.model, Projector: ef.mmproj, Image: data, Repetitions: repeat})
			if err != nil {
				return err
			}
			fmt.Printf("model: %s (%s), projector: %s\n", ef.model, r.Description, ef.mmproj)
			fmt.Printf("image: %d×%d, %d tokens over %d positions\n", r.Width, r.Height, r.ImageTokens, r.ImagePositions)
			fmt.Printf("encode:  %8.1f ± %.1f ms per image\n", mean(r.EncodeMS), stddev(r.EncodeMS))
			fmt.Printf("prefill: %8.1f ± %.1f tokens/s\n", mean(r.PrefillTPS), stddev(r.PrefillTPS))
			fmt.Printf("peak RSS: %s\n", store.FormatBytes(peakRSS()))
			return nil
		},
	}
	ef.register(cmd)
	cmd.Flags().StringVarP(&image, "file", "f", "", "image to encode (default: a generated 224×224 picture)")
	cmd.Flags().IntVarP(&repeat, "repetitions", "r", 3, "repetitions")
	return cmd
}
