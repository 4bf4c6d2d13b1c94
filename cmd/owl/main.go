// Command owl is the offline speech, vision and text engine's command line.
//
//	owl generate -m model.gguf -p "Once upon a time"
//	owl chat -m model.gguf
//	owl models info model.gguf
//	owl pull whisper:base.en
//	owl bench llm -m model.gguf
//	owl version
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// usageError marks errors in how owl was called (exit code 2).
type usageError struct{ error }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	root.SetArgs(gpuArgs(args))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintln(os.Stderr, "owl:", msg)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	if errors.Is(err, context.Canceled) {
		return 130
	}
	return 1
}

func newRootCmd() *cobra.Command {
	var verbose bool
	root := &cobra.Command{
		Use:           "owl",
		Short:         "owl: offline speech recognition, image understanding and text generation",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelDebug
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
		},
	}
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q; owl --help lists them", args[0])}
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log what owl and llama.cpp are doing")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newTranscribeCmd(), newListenCmd(), newVADCmd(), newSayCmd(), newVoicesCmd(), newAssistCmd(), newSeeCmd(), newDevicesCmd(), newGenerateCmd(), newChatCmd(), newEmbedCmd(), newModelsCmd(), newPullCmd(), newServeCmd(), newWorkerCmd(), newBenchCmd(), newVersionCmd())
	return root
}

// flagAliases maps the names llama.cpp and ollama users type to owl's flags.
var flagAliases = map[string]string{
	"n-predict":    "max-tokens",
	"num-predict":  "max-tokens",
	"temp":         "temperature",
	"num-ctx":      "ctx-size",
	"num-thread":   "threads",
	"batch-size":   "batch",
	"cache-type":   "kv-type",
	"num-gpu":      "gpu-layers",
	"n-gpu-layers": "gpu-layers",
}

func normalizeFlag(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	name = strings.ReplaceAll(name, "_", "-")
	if a, ok := flagAliases[name]; ok {
		name = a
	}
	return pflag.NormalizedName(name)
}

// verboseEnabled reports whether -v was given.
func verboseEnabled() bool {
	return slog.Default().Enabled(context.Background(), slog.LevelDebug)
}

// usageArgs marks a positional-argument error as a usage error.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
