package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/owlengine/owl/engine"
)

func newTranscribeCmd() *cobra.Command {
	var (
		model, lang, outDir string
		threads             int
		formats             []string
		asJSON, translate   bool
		noTimestamps        bool
		flashAttn           bool
	)
	cmd := &cobra.Command{
		Use:   "transcribe -m MODEL.bin AUDIO.wav",
		Short: "Transcribe speech in an audio file with a whisper.cpp model",
		Long: `Transcribe recognizes the speech in a 16-kHz WAV file with a whisper.cpp model
file (ggml-*.bin: tiny to large-v3, .en or multilingual, any quantization) and
prints the text, one segment per line. --json prints the segments with their
times and token probabilities instead. -o FORMAT (repeatable: txt, json) also
writes AUDIO.FORMAT beside the audio or into --output-dir.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			audioPath := args[0]
			if model == "" {
				return usageError{fmt.Errorf("no model: pass -m ggml-MODEL.bin")}
			}
			if threads < 0 {
				return usageError{fmt.Errorf("--threads %d must not be negative", threads)}
			}
			for _, f := range formats {
				if !slices.Contains(engine.TranscriptFormats, f) {
					return usageError{fmt.Errorf("-o %q: want one of %s", f, strings.Join(engine.TranscriptFormats, ", "))}
				}
			}
			e := engine.New(engine.Options{Threads: threads, FlashAttn: flashAttn})
			defer e.Close()
			tr, err := e.Transcribe(cmd.Context(), engine.TranscribeRequest{Model: model, File: audioPath,
				TranscribeOptions: engine.TranscribeOptions{Language: lang, Translate: translate, NoTimestamps: noTimestamps}})
			if err != nil {
				return err
			}
			out := bufio.NewWriter(os.Stdout)
			stdoutFormat := "txt"
			if asJSON {
				stdoutFormat = "json"
			}
			if err := engine.WriteTranscript(out, tr, stdoutFormat); err != nil {
				return err
			}
			if err := out.Flush(); err != nil {
				return err
			}
			for _, f := range formats {
				if err := writeTranscriptFile(tr, audioPath, outDir, f); err != nil {
					return err
				}
			}
			if verboseEnabled() {
				t := tr.Timings
				fmt.Fprintf(os.Stderr, "mel %.0f ms, encode %.0f ms (%d windows), decode %.0f ms (%d tokens)\n",
					ms(t.Mel), ms(t.Encode), t.Windows, ms(t.Decode), t.Tokens)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&model, "model", "m", "", "whisper.cpp model file (ggml-*.bin)")
	fs.IntVarP(&threads, "threads", "t", 0, "CPU threads (default: all CPUs)")
	fs.StringArrayVarP(&formats, "output", "o", nil, "also write AUDIO.FORMAT (txt, json); repeatable")
	fs.StringVar(&outDir, "output-dir", "", "folder for -o files (default: beside the audio)")
	fs.BoolVar(&asJSON, "json", false, "print JSON (segments, times, token probabilities) instead of text")
	fs.StringVarP(&lang, "language", "l", "", "spoken language code or name (default: English)")
	fs.BoolVar(&translate, "translate", false, "translate into English (multilingual models)")
	fs.BoolVar(&noTimestamps, "no-timestamps", false, "decode without timestamp tokens")
	fs.BoolVar(&flashAttn, "flash-attn", false, "use flash-attention kernels")
	fs.SetNormalizeFunc(normalizeFlag)
	return cmd
}

// writeTranscriptFile writes tr as AUDIO.FORMAT into dir (default: the audio's folder).
func writeTranscriptFile(tr *engine.Transcript, audioPath, dir, format string) error {
	if dir == "" {
		dir = filepath.Dir(audioPath)
	}
	base := strings.TrimSuffix(filepath.Base(audioPath), filepath.Ext(audioPath))
	path := filepath.Join(dir, base+"."+format)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := engine.WriteTranscript(w, tr, format); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
