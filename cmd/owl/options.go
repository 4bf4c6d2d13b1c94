package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/owlengine/owl/engine"
)

// engineFlags are the flags that size how a model runs.
type engineFlags struct {
	gpu       gpuFlags
	opts      engine.Options // set by check
	model     string
	mmproj    string
	threads   int
	ctxSize   int
	batch     int
	kvType    string
	flashAttn bool
	noMmap    bool
}

func (f *engineFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVarP(&f.model, "model", "m", "", "model file (GGUF) or store name")
	fs.StringVar(&f.mmproj, "mmproj", "", "vision projector (mmproj GGUF) for images; a store model's paired projector by default")
	fs.IntVarP(&f.threads, "threads", "t", 0, "CPU threads (default: all CPUs)")
	fs.IntVarP(&f.ctxSize, "ctx-size", "c", 0, "context size in tokens (default: min(4096, trained))")
	fs.IntVarP(&f.batch, "batch", "b", 512, "prompt tokens per decode step")
	fs.StringVar(&f.kvType, "kv-type", "f16", "KV cache type: f16, q8_0 or q4_0")
	fs.BoolVar(&f.flashAttn, "flash-attn", false, "use flash-attention kernels")
	fs.BoolVar(&f.noMmap, "no-mmap", false, "read the model into memory instead of mapping it")
	f.gpu.register(fs, "device")
	cmd.Flags().SetNormalizeFunc(normalizeFlag)
}

func (f *engineFlags) check() error {
	switch {
	case f.model == "":
		return usageError{fmt.Errorf("no model: pass -m MODEL.gguf")}
	case f.threads < 0:
		return usageError{fmt.Errorf("--threads %d must not be negative", f.threads)}
	case f.ctxSize < 0:
		return usageError{fmt.Errorf("--ctx-size %d must not be negative", f.ctxSize)}
	case f.batch <= 0:
		return usageError{fmt.Errorf("--batch %d must be positive", f.batch)}
	}
	switch f.kvType {
	case "f16", "q8_0", "q4_0":
	default:
		return usageError{fmt.Errorf("--kv-type %q: want f16, q8_0 or q4_0", f.kvType)}
	}
	model, paired, err := resolveWithProjector(f.model)
	if err != nil {
		return err
	}
	f.model = model
	if f.mmproj == "" {
		f.mmproj = paired
	}
	if f.mmproj, err = resolveModel(f.mmproj); err != nil {
		return err
	}
	// One request at a time: one KV-cache slot of --ctx-size.
	f.opts = engine.Options{Threads: f.threads, NumCtx: f.ctxSize, NumBatch: f.batch, Parallel: 1, KVType: f.kvType, FlashAttn: f.flashAttn, NoMmap: f.noMmap}
	if err := f.gpu.apply(&f.opts); err != nil {
		return err
	}
	if st, err := os.Stat(f.model); err != nil {
		return fmt.Errorf("%s: no such file", f.model)
	} else if st.IsDir() {
		return fmt.Errorf("%s: is a directory, not a model file", f.model)
	}
	return nil
}

func (f *engineFlags) engine() *engine.Engine {
	return engine.New(f.opts)
}

// sampleFlags are the generation knobs.
type sampleFlags struct {
	maxTokens     int
	temperature   float32
	topK          int
	topP          float32
	minP          float32
	repeatPenalty float32
	repeatLastN   int
	seed          int64
	stop          []string
}

func (f *sampleFlags) register(cmd *cobra.Command, maxTokens int) {
	d := engine.DefaultSampling()
	fs := cmd.Flags()
	fs.IntVarP(&f.maxTokens, "max-tokens", "n", maxTokens, "most tokens to generate (0: until the model stops or the context is full)")
	fs.Float32Var(&f.temperature, "temperature", d.Temperature, "sampling temperature; 0 is greedy")
	fs.IntVar(&f.topK, "top-k", d.TopK, "sample from the K most likely tokens (0: all)")
	fs.Float32Var(&f.topP, "top-p", d.TopP, "sample from the smallest set reaching this probability (1: all)")
	fs.Float32Var(&f.minP, "min-p", d.MinP, "drop tokens below this fraction of the top probability")
	fs.Float32Var(&f.repeatPenalty, "repeat-penalty", d.RepeatPenalty, "penalize recently seen tokens (1: off)")
	fs.IntVar(&f.repeatLastN, "repeat-last-n", d.RepeatLastN, "how many recent tokens the penalty sees")
	fs.Int64Var(&f.seed, "seed", -1, "random seed (-1: a random one)")
	fs.StringArrayVar(&f.stop, "stop", nil, "stop before this string (repeatable)")
}

func (f *sampleFlags) options() (engine.GenerateOptions, error) {
	s := engine.Sampling{Temperature: f.temperature, TopK: f.topK, TopP: f.topP, MinP: f.minP,
		RepeatPenalty: f.repeatPenalty, RepeatLastN: f.repeatLastN, Seed: f.seed}
	if err := s.Validate(); err != nil {
		return engine.GenerateOptions{}, usageError{err}
	}
	if f.maxTokens < 0 {
		return engine.GenerateOptions{}, usageError{fmt.Errorf("--max-tokens %d must not be negative", f.maxTokens)}
	}
	for _, s := range f.stop {
		if s == "" {
			return engine.GenerateOptions{}, usageError{fmt.Errorf("--stop needs a non-empty string")}
		}
	}
	return engine.GenerateOptions{Sampling: s, MaxTokens: f.maxTokens, Stop: f.stop}, nil
}
