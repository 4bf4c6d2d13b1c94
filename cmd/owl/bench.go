package main

import (
	"fmt"
	"math"
	"runtime"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/store"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure speed",
	}
	cmd.AddCommand(newBenchLLMCmd(), newBenchSpeechCmd(), newBenchListenCmd(), newBenchEngineCmd(), newBenchVisionCmd(), newBenchServeCmd(), newBenchSpeakCmd(), newBenchAssistCmd())
	return cmd
}

func newBenchSpeechCmd() *cobra.Command {
	var (
		gpu         gpuFlags
		model, file string
		threads     int
		beam        int
		flashAttn   bool
	)
	cmd := &cobra.Command{
		Use:   "speech -m MODEL.bin [-f AUDIO.wav]",
		Short: "Mel, encoder and decoder timings, real-time factor and peak memory of a whisper model",
		Long: `Bench speech transcribes AUDIO (default: 30 seconds of generated tones and
noise) and reports the time of the mel front end, the encoder per 30-second
window, the decoder per token, the real-time factor (processing time over
audio duration) and peak memory.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" {
				return usageError{fmt.Errorf("no model: pass -m ggml-MODEL.bin")}
			}
			if err := resolveModels(&model); err != nil {
				return err
			}
			samples := benchAudio()
			if file != "" {
				var err error
				if samples, err = engine.ReadAudio(file); err != nil {
					return err
				}
			}
			e, err := newEngine(&gpu, engine.Options{Threads: threads, FlashAttn: flashAttn})
			if err != nil {
				return err
			}
			defer e.Close()
			o := engine.TranscribeOptions{BeamSize: beam, Temperatures: []float64{0}}
			r, err := e.BenchSpeech(cmd.Context(), model, samples, o)
			if err != nil {
				return err
			}
			t := r.Timings
			fmt.Printf("model: %s (%s)\n", model, r.Description)
			fmt.Printf("threads: %d, beams: %d, audio: %.1f s, load: %.0f ms\n", r.Threads, beam, r.Audio.Seconds(), ms(r.Load))
			fmt.Printf("mel:     %8.1f ms\n", ms(t.Mel))
			if t.Windows > 0 {
				fmt.Printf("encode:  %8.1f ms per window (%d windows)\n", ms(t.Encode)/float64(t.Windows), t.Windows)
			}
			if t.DecodeSteps > 0 {
				per := func(d time.Duration) float64 { return ms(d) / float64(t.DecodeSteps) }
				fmt.Printf("decode:  %8.2f ms per step (%d steps, %d tokens): %.2f ms evaluating the decoder, %.2f ms decoding rules and search\n",
					per(t.Decode), t.DecodeSteps, t.Tokens, per(t.DecodeGraphs), per(t.Decode-t.DecodeGraphs))
			}
			fmt.Printf("RTF:     %8.3f (%.2f s for %.1f s of audio)\n", r.Wall.Seconds()/r.Audio.Seconds(), r.Wall.Seconds(), r.Audio.Seconds())
			fmt.Printf("peak RSS: %s\n", store.FormatBytes(peakRSS()))
			return nil
		},
	}
	fs := cmd.Flags()
	gpu.register(fs, "device")
	fs.StringVarP(&model, "model", "m", "", "whisper.cpp model file (ggml-*.bin)")
	fs.StringVarP(&file, "file", "f", "", "16-kHz WAV to transcribe (default: 30 s of generated audio)")
	fs.IntVarP(&threads, "threads", "t", 0, "CPU threads (default: all CPUs)")
	fs.BoolVar(&flashAttn, "flash-attn", false, "use flash-attention kernels")
	fs.IntVar(&beam, "beam-size", 1, "beams (1 is greedy); decoding runs at temperature 0 without fallback")
	return cmd
}

// benchAudio is 30 seconds of tones and noise, the same on every run.
func benchAudio() []float32 {
	const rate = 16000
	out := make([]float32, 30*rate)
	seed := uint64(1)
	for i := range out {
		t := float64(i) / rate
		seed = seed*6364136223846793005 + 1442695040888963407
		noise := float64(seed>>40)/float64(1<<24) - 0.5
		out[i] = float32(0.3*math.Sin(2*math.Pi*(200+20*t)*t) + 0.05*noise)
	}
	return out
}

func newBenchLLMCmd() *cobra.Command {
	var (
		ef                  engineFlags
		prompt, gen, repeat int
	)
	cmd := &cobra.Command{
		Use:   "llm -m MODEL.gguf",
		Short: "Prompt and generation tokens/s of a text model, and peak memory",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ef.check(); err != nil {
				return err
			}
			e := ef.engine()
			defer e.Close()
			res, err := e.BenchLLM(cmd.Context(), engine.BenchRequest{Model: ef.model, PromptTokens: prompt, GenTokens: gen, Repetitions: repeat})
			if err != nil {
				return err
			}
			threads := ef.threads
			if threads == 0 {
				threads = runtime.NumCPU()
			}
			fmt.Printf("model: %s (%s)\n", ef.model, res.Description)
			fmt.Printf("threads: %d, load: %.0f ms\n", threads, ms(res.LoadDuration))
			fmt.Printf("pp%-5d %8.2f ± %.2f tokens/s\n", res.PromptTokens, mean(res.PromptTPS), stddev(res.PromptTPS))
			fmt.Printf("tg%-5d %8.2f ± %.2f tokens/s\n", res.GenTokens, mean(res.GenTPS), stddev(res.GenTPS))
			fmt.Printf("peak RSS: %s\n", store.FormatBytes(peakRSS()))
			return nil
		},
	}
	ef.register(cmd)
	cmd.Flags().IntVarP(&prompt, "prompt-tokens", "p", 512, "prompt tokens (pp test)")
	cmd.Flags().IntVarP(&gen, "gen-tokens", "n", 128, "generated tokens (tg test)")
	cmd.Flags().IntVarP(&repeat, "repetitions", "r", 3, "repetitions of each test")
	return cmd
}

func newBenchEngineCmd() *cobra.Command {
	var (
		ef                engineFlags
		speechModel, file string
		streams           []int
		prompt, gen, n    int
	)
	cmd := &cobra.Command{
		Use:   "engine -m MODEL.gguf [--speech ggml-MODEL.bin]",
		Short: "Aggregate throughput of concurrent requests: text streams batched together, transcriptions at once",
		Long: `Bench engine measures continuous batching. For each count in --streams, that
many requests generate --gen-tokens each at the same time on one model
(a KV-cache slot each); the aggregate tokens/s of all streams is compared
with one stream's. With --speech, it also transcribes AUDIO --count times
one after another and then --count times at once on one speech model.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ef.model == "" && speechModel == "" {
				return usageError{fmt.Errorf("no model: pass -m MODEL.gguf and/or --speech ggml-MODEL.bin")}
			}
			e := ef.engine()
			defer e.Close()
			if ef.model != "" {
				runs, desc, err := e.BenchBatching(cmd.Context(), engine.BatchBenchRequest{Model: ef.model, Streams: streams, PromptTokens: prompt, GenTokens: gen})
				if err != nil {
					return err
				}
				fmt.Printf("model: %s (%s)\n", ef.model, desc)
				fmt.Printf("%8s %10s %12s %14s %10s %8s\n", "streams", "tokens", "wall s", "aggregate t/s", "decode t/s", "vs 1")
				for _, r := range runs {
					fmt.Printf("%8d %10d %12.2f %14.2f %10.2f %7.2fx\n", r.Streams, r.Tokens, r.Wall.Seconds(), r.Aggregate, r.DecodeRate, r.Aggregate/runs[0].Aggregate)
				}
			}
			if speechModel != "" {
				samples := benchAudio()
				if file != "" {
					var err error
					if samples, err = engine.ReadAudio(file); err != nil {
						return err
					}
				}
				r, err := e.BenchTranscriptions(cmd.Context(), speechModel, samples, n, engine.TranscribeOptions{BeamSize: 1, Temperatures: []float64{0}})
				if err != nil {
					return err
				}
				fmt.Printf("speech: %s (%s)\n", speechModel, r.Description)
				fmt.Printf("%d transcriptions one after another: %.2f s; at once: %.2f s (%.2fx)\n", r.Count, r.Sequential.Seconds(), r.Concurrent.Seconds(), r.Sequential.Seconds()/r.Concurrent.Seconds())
			}
			fmt.Printf("peak RSS: %s\n", store.FormatBytes(peakRSS()))
			return nil
		},
	}
	ef.register(cmd)
	fs := cmd.Flags()
	fs.IntSliceVar(&streams, "streams", []int{1, 2, 4, 8}, "concurrent streams per run")
	fs.IntVarP(&prompt, "prompt-tokens", "p", 32, "prompt tokens per stream")
	fs.IntVarP(&gen, "gen-tokens", "n", 64, "tokens each stream generates")
	fs.StringVar(&speechModel, "speech", "", "whisper.cpp model for the transcription benchmark")
	fs.StringVarP(&file, "file", "f", "", "audio to transcribe (default: 30 s of generated audio)")
	fs.IntVar(&n, "count", 4, "transcriptions")
	return cmd
}

// peakRSS is the largest resident set size of this process so far.
func peakRSS() uint64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return uint64(ru.Maxrss) * 1024 // kilobytes on Linux
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func stddev(xs []float64) float64 {
	if len(xs) < 2 {
		return 0
	}
	m, s := mean(xs), 0.0
	for _, x := range xs {
		s += (x - m) * (x - m)
	}
	return math.Sqrt(s / float64(len(xs)-1))
}
