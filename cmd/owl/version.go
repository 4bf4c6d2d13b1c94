package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/llm"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print owl's version, the CPU features it was compiled with and its GPUs",
		Args:  usageArgs(cobra.NoArgs),
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Printf("owl %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			fmt.Printf("cpu features: %s\n", strings.Join(engine.SystemFeatures(), " "))
			printGPUs(os.Stdout)
		},
	}
}

// printGPUs lists the GPU backend libraries owl found and the GPUs they
// drive, with their memory; or says that models run on the CPU.
func printGPUs(w io.Writer) {
	libs := llm.BackendLibraries()
	gpus := llm.GPUs()
	for _, l := range libs {
		state := "loaded"
		if !l.Loaded {
			state = "not loaded (no driver, or no device it can use)"
		}
		fmt.Fprintf(w, "gpu backend: %s, %s\n", l.Path, state)
	}
	if len(gpus) == 0 {
		if len(libs) == 0 {
			fmt.Fprintln(w, "gpus: none (a CPU build: make build GPU=vulkan adds the Vulkan backend); models run on the CPU")
		} else {
			fmt.Fprintln(w, "gpus: none usable; models run on the CPU")
		}
		return
	}
	fmt.Fprintln(w, "gpus:")
	for _, g := range gpus {
		free, total := g.Memory()
		fmt.Fprintf(w, "  %-9s %s (%s, %s), %s free of %s\n", g.Name, g.Description, g.Backend, g.Kind, engine.FormatBytes(free), engine.FormatBytes(total))
	}
}
