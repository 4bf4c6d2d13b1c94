package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/owlengine/owl/engine"
)

// transcribeFlags are the decoding knobs, named as whisper.cpp's and
// OpenAI's command lines name them.
type transcribeFlags struct {
	lang, prompt            string
	translate, noTimestamps bool
	wordTimestamps          bool
	noContext, noFallback   bool
	beamSize, bestOf        int
	temperature, tempInc    float64
	compressionThreshold    float64
	logprobThreshold        float64
	noSpeechThreshold       float64
	seed                    uint64
}

func (f *transcribeFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVarP(&f.lang, "language", "l", "auto", "spoken language code or name; auto detects it")
	fs.BoolVar(&f.translate, "translate", false, "translate into English (multilingual models)")
	fs.StringVar(&f.prompt, "prompt", "", "initial prompt: vocabulary or style for the first window")
	fs.BoolVar(&f.noContext, "no-context", false, "do not condition each window on the previous text (cures repetition loops)")
	fs.IntVar(&f.beamSize, "beam-size", engine.DefaultBeamSize, "beams at temperature 0 (1 is greedy)")
	fs.IntVar(&f.bestOf, "best-of", engine.DefaultBestOf, "candidates sampled at temperatures above 0")
	fs.Float64Var(&f.temperature, "temperature", 0, "first decoding temperature")
	fs.Float64Var(&f.tempInc, "temperature-inc", 0.2, "temperature step of the fallback")
	fs.BoolVar(&f.noFallback, "no-fallback", false, "decode once per window, at --temperature")
	fs.Float64Var(&f.compressionThreshold, "compression-ratio-threshold", engine.DefaultCompressionRatio, "fall back when the text compresses better than this (negative: never)")
	fs.Float64Var(&f.logprobThreshold, "logprob-threshold", engine.DefaultLogProbThreshold, "fall back when the average log-probability is lower (-inf: never)")
	fs.Float64Var(&f.noSpeechThreshold, "no-speech-threshold", engine.DefaultNoSpeechThreshold, "no-speech probability above which a low-confidence window is skipped (above 1: never)")
	fs.BoolVar(&f.noTimestamps, "no-timestamps", false, "decode without timestamp tokens")
	fs.BoolVar(&f.wordTimestamps, "word-timestamps", false, "align words and tokens to the audio")
	fs.Uint64Var(&f.seed, "seed", 0, "seed of the sampling at temperatures above 0")
}

func (f *transcribeFlags) options() (engine.TranscribeOptions, error) {
	switch {
	case f.beamSize < 1 || f.beamSize > 16:
		return engine.TranscribeOptions{}, usageError{fmt.Errorf("--beam-size %d: want 1 to 16", f.beamSize)}
	case f.bestOf < 1 || f.bestOf > 16:
		return engine.TranscribeOptions{}, usageError{fmt.Errorf("--best-of %d: want 1 to 16", f.bestOf)}
	case f.temperature < 0 || f.temperature > 2 || math.IsNaN(f.temperature):
		return engine.TranscribeOptions{}, usageError{fmt.Errorf("--temperature %v: want 0 to 2", f.temperature)}
	case !f.noFallback && (f.tempInc <= 0 || math.IsNaN(f.tempInc)):
		return engine.TranscribeOptions{}, usageError{fmt.Errorf("--temperature-inc %v must be positive (or pass --no-fallback)", f.tempInc)}
	case f.noSpeechThreshold < 0:
		return engine.TranscribeOptions{}, usageError{fmt.Errorf("--no-speech-threshold %v must not be negative", f.noSpeechThreshold)}
	}
	temps := []float64{f.temperature}
	if !f.noFallback {
		for t := f.temperature + f.tempInc; t <= 1.0+1e-9; t += f.tempInc {
			temps = append(temps, math.Round(t*1000)/1000)
		}
	}
	return engine.TranscribeOptions{Language: f.lang, Translate: f.translate, Prompt: f.prompt, NoContext: f.noContext,
		BeamSize: f.beamSize, BestOf: f.bestOf, Temperatures: temps, CompressionRatioThreshold: f.compressionThreshold,
		LogProbThreshold: f.logprobThreshold, NoSpeechThreshold: f.noSpeechThreshold,
		NoTimestamps: f.noTimestamps, WordTimestamps: f.wordTimestamps, Seed: f.seed}, nil
}

func newTranscribeCmd() *cobra.Command {
	var (
		tf                        transcribeFlags
		model, outDir, backend    string
		vadModel                  string
		vadOn                     bool
		vadParams                 = engine.DefaultVADParams()
		threads                   int
		gpu                       gpuFlags
		formats                   []string
		asJSON, flashAttn, noProg bool
	)
	cmd := &cobra.Command{
		Use:   "transcribe -m MODEL.bin AUDIO [AUDIO…]",
		Short: "Transcribe speech in audio files with a whisper.cpp model",
		Long: `Transcribe recognizes the speech in audio files (WAV, FLAC, MP3, Ogg Vorbis;
any rate and channel count) with a whisper.cpp model
file (ggml-*.bin: tiny to large-v3, .en or multilingual, any quantization) and
prints the text, one segment per line; --json prints the segments with times,
decoding statistics and token probabilities instead.

-o FORMAT (repeatable: txt, srt, vtt, json, lrc) also writes AUDIO.FORMAT
beside each audio file or into --output-dir.

Decoding follows OpenAI's transcribe: beam search (5 beams), then sampling
(best of 5) at rising temperatures when a window's text repeats itself or is
improbable; windows that hold no speech are skipped; each window is
conditioned on the previous one's text unless --no-context.`,
		Args: usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" {
				return usageError{fmt.Errorf("no model: pass -m ggml-MODEL.bin")}
			}
			if err := resolveModels(&model, &vadModel); err != nil {
				return err
			}
			if threads < 0 {
				return usageError{fmt.Errorf("--threads %d must not be negative", threads)}
			}
			for _, f := range formats {
				if !slices.Contains(engine.TranscriptFormats, f) {
					return usageError{fmt.Errorf("-o %q: want one of %s", f, strings.Join(engine.TranscriptFormats, ", "))}
				}
			}
			if backend != "native" && backend != "whispercpp" {
				return usageError{fmt.Errorf("--backend %q: want native or whispercpp", backend)}
			}
			opts, err := tf.options()
			if err != nil {
				return err
			}
			eo := engine.Options{Threads: threads, FlashAttn: flashAttn, SpeechBackend: backend}
			if err := gpu.apply(&eo); err != nil {
				return err
			}
			e := engine.New(eo)
			defer e.Close()
			showProgress := !asJSON && !noProg && term.IsTerminal(int(os.Stdout.Fd()))
			for _, audioPath := range args {
				o := opts
				var bar *progressbar.ProgressBar
				if showProgress {
					bar = progressbar.NewOptions64(1000, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription(filepath.Base(audioPath)),
						progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
					o.OnProgress = func(done, total time.Duration) {
						if total > 0 {
							bar.Set64(int64(1000 * done / total))
						}
					}
				}
				req := engine.TranscribeRequest{Model: model, File: audioPath, TranscribeOptions: o}
				if vadOn || vadModel != "" || vadTuned(cmd) {
					req.VAD, req.VADModel, req.VADParams = "energy", vadModel, vadParams
					if vadModel != "" {
						req.VAD = "silero"
					}
				}
				tr, err := e.Transcribe(cmd.Context(), req)
				if bar != nil {
					bar.Finish()
				}
				if err != nil {
					return err
				}
				if err := printTranscript(tr, asJSON); err != nil {
					return err
				}
				for _, f := range formats {
					if err := writeTranscriptFile(tr, audioPath, outDir, f); err != nil {
						return err
					}
				}
				if verboseEnabled() {
					t := tr.Timings
					fmt.Fprintf(os.Stderr, "%s: language %s, mel %.0f ms, encode %.0f ms (%d windows), decode %.0f ms (%d steps, %d tokens, %d fallbacks)\n",
						audioPath, tr.Language, ms(t.Mel), ms(t.Encode), t.Windows, ms(t.Decode), t.DecodeSteps, t.Tokens, t.Fallbacks)
				}
			}
			return nil
		},
	}
	tf.register(cmd)
	fs := cmd.Flags()
	fs.StringVarP(&model, "model", "m", "", "whisper.cpp model file (ggml-*.bin)")
	fs.IntVarP(&threads, "threads", "t", 0, "CPU threads (default: all CPUs)")
	fs.StringArrayVarP(&formats, "output", "o", nil, "also write AUDIO.FORMAT (txt, srt, vtt, json, lrc); repeatable")
	fs.StringVar(&outDir, "output-dir", "", "folder for -o files (default: beside the audio)")
	fs.BoolVar(&asJSON, "json", false, "print JSON (segments, times, token probabilities) instead of text")
	fs.BoolVar(&flashAttn, "flash-attn", false, "use flash-attention kernels")
	gpu.register(fs, "device")
	fs.BoolVar(&noProg, "no-progress", false, "no progress bar")
	fs.BoolVar(&vadOn, "vad", false, "decode only the speech a voice activity detector finds (energy-based unless --vad-model)")
	fs.StringVar(&vadModel, "vad-model", "", "ggml Silero VAD model (ggml-silero-v5.1.2.bin); implies --vad")
	addVADParamFlags(fs, &vadParams, " (implies --vad)")
	fs.StringVar(&backend, "backend", "native", "recognizer: native (owl's Whisper on ggml) or whispercpp (libwhisper; builds with -tags whispercpp)")
	fs.SetNormalizeFunc(normalizeFlag)
	return cmd
}

// vadParamFlags are the flags of addVADParamFlags.
var vadParamFlags = []string{"vad-threshold", "vad-min-speech", "vad-min-silence", "vad-pad", "vad-max-speech"}

// addVADParamFlags registers the parameters that turn speech probabilities
// into segments (whisper.cpp's --vad-* options), each help text ending in
// suffix.
func addVADParamFlags(fs *pflag.FlagSet, p *engine.VADParams, suffix string) {
	fs.Float64Var(&p.Threshold, "vad-threshold", p.Threshold, "speech probability that starts speech"+suffix)
	fs.DurationVar(&p.MinSpeech, "vad-min-speech", p.MinSpeech, "speech shorter than this is ignored"+suffix)
	fs.DurationVar(&p.MinSilence, "vad-min-silence", p.MinSilence, "pauses shorter than this do not end speech"+suffix)
	fs.DurationVar(&p.Pad, "vad-pad", p.Pad, "audio kept on each side of speech"+suffix)
	fs.DurationVar(&p.MaxSpeech, "vad-max-speech", p.MaxSpeech, "speech longer than this is split, at its last pause when it has one (0: no limit)"+suffix)
}

// vadTuned reports whether a VAD parameter was given.
func vadTuned(cmd *cobra.Command) bool {
	for _, name := range vadParamFlags {
		if cmd.Flags().Changed(name) {
			return true
		}
	}
	return false
}

func printTranscript(tr *engine.Transcript, asJSON bool) error {
	out := bufio.NewWriter(os.Stdout)
	format := "txt"
	if asJSON {
		format = "json"
	}
	if err := engine.WriteTranscript(out, tr, format); err != nil {
		return err
	}
	return out.Flush()
}

// writeTranscriptFile writes tr as AUDIO.FORMAT into dir (default: the audio's folder).
func writeTranscriptFile(tr *engine.Transcript, audioPath, dir, format string) error {
	if dir == "" {
		dir = filepath.Dir(audioPath)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
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
