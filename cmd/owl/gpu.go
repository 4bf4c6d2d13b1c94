package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/llm"
)

// gpuFlags say which GPUs models go to and how much of each.
type gpuFlags struct {
	layers    int
	devices   string
	maxMemory string
}

// register adds --gpu-layers (-ngl, --num-gpu), --device (deviceFlag: the
// name, for commands whose --device is an audio device) and
// --max-device-memory, with their environment defaults.
func (f *gpuFlags) register(fs *pflag.FlagSet, deviceFlag string) {
	layers := engine.AllGPULayers
	if v, err := strconv.Atoi(os.Getenv("OWL_GPU_LAYERS")); err == nil {
		layers = v
	}
	fs.IntVar(&f.layers, "gpu-layers", layers, "layers of a text model to offload to a GPU (-1: every layer that fits; 0: none, CPU only); $OWL_GPU_LAYERS")
	fs.StringVar(&f.devices, deviceFlag, os.Getenv("OWL_DEVICES"), "GPUs to use, by name as owl devices lists them (Vulkan0,Vulkan1), or cpu for none; $OWL_DEVICES (default: every GPU)")
	fs.StringVar(&f.maxMemory, "max-device-memory", os.Getenv("OWL_MAX_DEVICE_MEMORY"), "memory budget of each GPU, e.g. 6GiB (default: 90% of its free memory)")
}

// apply checks the flags and sets them in o.
func (f *gpuFlags) apply(o *engine.Options) error {
	if f.layers < engine.AllGPULayers {
		return usageError{fmt.Errorf("--gpu-layers %d: want -1 (all that fit), 0 (none) or a number of layers", f.layers)}
	}
	o.GPULayers = f.layers
	if f.maxMemory != "" {
		b, err := engine.ParseBytes(f.maxMemory)
		if err != nil {
			return usageError{fmt.Errorf("--max-device-memory: %w", err)}
		}
		o.MaxDeviceMemory = b
	}
	if f.devices == "" {
		return nil
	}
	gpus := llm.GPUs()
	for name := range strings.SplitSeq(f.devices, ",") {
		name = strings.TrimSpace(name)
		if strings.EqualFold(name, "cpu") {
			o.GPULayers, o.Devices = 0, nil
			return nil
		}
		found := false
		for _, g := range gpus {
			found = found || strings.EqualFold(g.Name, name)
		}
		if !found {
			return usageError{fmt.Errorf("GPU %q: no such device (owl devices lists them)", name)}
		}
		o.Devices = append(o.Devices, name)
	}
	return nil
}

// newEngine makes an engine of o with the GPU flags applied.
func newEngine(f *gpuFlags, o engine.Options) (*engine.Engine, error) {
	if err := f.apply(&o); err != nil {
		return nil, err
	}
	return engine.New(o), nil
}

// gpuArgs rewrites llama.cpp's single-dash -ngl N into --gpu-layers N.
func gpuArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		switch {
		case a == "-ngl":
			a = "--gpu-layers"
		case strings.HasPrefix(a, "-ngl="):
			a = "--gpu-layers=" + strings.TrimPrefix(a, "-ngl=")
		case a == "--":
			out = append(out, args[len(out):]...)
			return out
		}
		out = append(out, a)
	}
	return out
}
