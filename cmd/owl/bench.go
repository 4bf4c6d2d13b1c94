package main

import (
	"fmt"
	"math"
	"runtime"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/owlengine/owl/engine"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure speed",
	}
	cmd.AddCommand(newBenchLLMCmd())
	return cmd
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
			fmt.Printf("peak RSS: %s\n", humanBytes(peakRSS()))
			return nil
		},
	}
	ef.register(cmd)
	cmd.Flags().IntVarP(&prompt, "prompt-tokens", "p", 512, "prompt tokens (pp test)")
	cmd.Flags().IntVarP(&gen, "gen-tokens", "n", 128, "generated tokens (tg test)")
	cmd.Flags().IntVarP(&repeat, "repetitions", "r", 3, "repetitions of each test")
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
