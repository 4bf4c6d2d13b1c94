package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/owlengine/owl/engine"
)

func newGenerateCmd() *cobra.Command {
	var (
		ef         engineFlags
		sf         sampleFlags
		prompt     string
		promptFile string
		asJSON     bool
	)
	cmd := &cobra.Command{
		Use:   "generate -m MODEL.gguf -p PROMPT",
		Short: "Continue a text prompt (no chat template)",
		Long: `Generate continues the prompt as plain text, after the model's BOS token,
streaming the continuation to standard output. The prompt comes from -p, from
-f FILE, or from standard input when neither is given.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ef.check(); err != nil {
				return err
			}
			opts, err := sf.options()
			if err != nil {
				return err
			}
			text, err := readPrompt(prompt, promptFile)
			if err != nil {
				return err
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
			res, err := e.Generate(cmd.Context(), engine.GenerateRequest{Model: ef.model, Prompt: text, GenerateOptions: opts}, onChunk)
			return finishResult(out, ef.model, res, err, asJSON)
		},
	}
	ef.register(cmd)
	sf.register(cmd, 256)
	cmd.Flags().StringVarP(&prompt, "prompt", "p", "", "prompt text")
	cmd.Flags().StringVarP(&promptFile, "file", "f", "", "read the prompt from this file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object with the text and statistics")
	return cmd
}

// readPrompt returns the prompt from -p, -f, or standard input.
func readPrompt(prompt, file string) (string, error) {
	switch {
	case prompt != "" && file != "":
		return "", usageError{fmt.Errorf("give the prompt with -p or -f, not both")}
	case prompt != "":
		return prompt, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("prompt file: %w", err)
		}
		return string(b), nil
	case !term.IsTerminal(int(os.Stdin.Fd())):
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return "", fmt.Errorf("reading the prompt from standard input: %w", err)
		}
		if len(b) == 0 {
			return "", usageError{fmt.Errorf("standard input is empty: no prompt")}
		}
		return string(b), nil
	}
	return "", usageError{fmt.Errorf("no prompt: pass -p TEXT, -f FILE or pipe it to standard input")}
}

type jsonResult struct {
	Model            string  `json:"model"`
	Text             string  `json:"text"`
	FinishReason     string  `json:"finish_reason"`
	PromptTokens     int     `json:"prompt_tokens"`
	CachedTokens     int     `json:"cached_tokens"`
	CompletionTokens int     `json:"completion_tokens"`
	PromptMS         float64 `json:"prompt_ms"`
	GenerateMS       float64 `json:"generate_ms"`
}

// finishResult ends the output of a generation streamed to out (or, with
// asJSON, prints it as one JSON object) and returns the generation's error.
func finishResult(out io.Writer, model string, res engine.Result, err error, asJSON bool) error {
	if err != nil {
		if !asJSON && len(res.Tokens) > 0 {
			fmt.Fprintln(out)
		}
		return err
	}
	if asJSON {
		return writeJSONResult(out, model, res)
	}
	fmt.Fprintln(out)
	logTimings(res)
	return nil
}

func writeJSONResult(w io.Writer, model string, r engine.Result) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(jsonResult{Model: model, Text: r.Text, FinishReason: r.FinishReason, PromptTokens: r.PromptTokens,
		CachedTokens: r.CachedTokens, CompletionTokens: len(r.Tokens), PromptMS: ms(r.PromptDuration), GenerateMS: ms(r.GenerateDuration)})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// logTimings prints llama.cpp-style timings to standard error in verbose mode.
func logTimings(r engine.Result) {
	if !verboseEnabled() {
		return
	}
	evaluated := r.PromptTokens - r.CachedTokens
	fmt.Fprintf(os.Stderr, "prompt: %d tokens (%d cached) in %.1f ms, %.1f tokens/s\n", r.PromptTokens, r.CachedTokens, ms(r.PromptDuration), rate(evaluated, r.PromptDuration))
	fmt.Fprintf(os.Stderr, "generate: %d tokens in %.1f ms, %.1f tokens/s (%s)\n", len(r.Tokens), ms(r.GenerateDuration), rate(len(r.Tokens), r.GenerateDuration), r.FinishReason)
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
