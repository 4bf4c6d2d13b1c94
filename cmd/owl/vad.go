package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/owlengine/owl/engine"
	"github.com/spf13/cobra"
)

// jsonSpeech is one file's line of owl vad --json; times in seconds.
type jsonSpeech struct {
	File     string        `json:"file"`
	Detector string        `json:"detector"`
	Duration float64       `json:"duration"`
	Segments []jsonSegment `json:"segments"`
}

type jsonSegment struct {
	Start float64 `json:"start"`
	End   float64 `json:"end"`
}

func newVADCmd() *cobra.Command {
	var (
		gpu      gpuFlags
		vadModel string
		asJSON   bool
		params   = engine.DefaultVADParams()
	)
	cmd := &cobra.Command{
		Use:   "vad AUDIO [AUDIO…]",
		Short: "Print where the speech is in audio files (voice activity detection)",
		Long: `Vad finds the speech in audio files (WAV, FLAC, MP3, Ogg Vorbis) and prints
its segments, one per line: start and end in seconds. These are the segments
owl transcribe --vad decodes, found by the same rules as whisper.cpp's
vad-speech-segments (its times are in centiseconds, owl's in seconds), for
cutting audio before transcribing it elsewhere.

The detector is Silero with --vad-model (a ggml Silero file such as
ggml-silero-v6.2.0.bin), else owl's energy detector. --json prints one JSON
object per file: the detector, the audio's duration and the segments.`,
		Args: usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := params.Check(); err != nil {
				return usageError{err}
			}
			if err := resolveModels(&vadModel); err != nil {
				return err
			}
			kind := "energy"
			if vadModel != "" {
				kind = "silero"
			}
			e, err := newEngine(&gpu, engine.Options{})
			if err != nil {
				return err
			}
			defer e.Close()
			enc := json.NewEncoder(os.Stdout)
			for _, path := range args {
				sp, err := e.DetectSpeech(cmd.Context(), engine.SpeechRequest{File: path, VAD: kind, VADModel: vadModel, VADParams: params})
				if err != nil {
					return err
				}
				if asJSON {
					out := jsonSpeech{File: path, Detector: sp.Detector, Duration: sp.Duration.Seconds(), Segments: []jsonSegment{}}
					for _, s := range sp.Segments {
						out.Segments = append(out.Segments, jsonSegment{seconds(s.Start), seconds(s.End)})
					}
					if err := enc.Encode(out); err != nil {
						return err
					}
					continue
				}
				if len(args) > 1 {
					fmt.Printf("%s:\n", path)
				}
				for _, s := range sp.Segments {
					fmt.Printf("%.3f\t%.3f\n", seconds(s.Start), seconds(s.End))
				}
				if verboseEnabled() {
					fmt.Fprintf(os.Stderr, "%s: %d speech segments in %.2f s (%s)\n", path, len(sp.Segments), sp.Duration.Seconds(), sp.Detector)
				}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	gpu.register(fs, "device")
	fs.StringVar(&vadModel, "vad-model", "", "ggml Silero VAD model (ggml-silero-v6.2.0.bin; default: the energy detector)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object per file")
	addVADParamFlags(fs, &params, "")
	fs.SetNormalizeFunc(normalizeFlag)
	return cmd
}

// seconds rounds d to milliseconds, in seconds.
func seconds(d time.Duration) float64 { return d.Round(time.Millisecond).Seconds() }
