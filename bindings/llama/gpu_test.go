package llama

import (
	"os"
	"testing"
)

// TestGPUDevices: with a GPU backend library on the library path, it is
// loaded, its GPU listed with its memory and found by name, and the CPU
// listed too. (The package's own test cannot import internal/gputest: it
// imports this package.)
func TestGPUDevices(t *testing.T) {
	gpus := GPUs()
	if len(gpus) == 0 {
		if os.Getenv("OWL_TEST_GPU") != "" {
			t.Fatalf("OWL_TEST_GPU is set but there is no GPU; libraries %+v", Libraries())
		}
		t.Skip("no GPU (make test-gpu runs this on lavapipe)")
	}
	libs := Libraries()
	if len(libs) == 0 || !libs[0].Loaded || libs[0].Name == "" {
		t.Fatalf("libraries %+v", libs)
	}
	g := gpus[0]
	free, total := g.Memory()
	if g.Name == "" || g.Backend != libs[0].Name || total == 0 || free > total || g.Total != total {
		t.Fatalf("GPU %+v: memory %d free of %d", g, free, total)
	}
	if d, ok := DeviceByName(g.Name); !ok || d.Description != g.Description {
		t.Fatalf("DeviceByName(%q) = %+v, %v", g.Name, d, ok)
	}
	cpu := false
	for _, d := range Devices() {
		cpu = cpu || d.Kind == DeviceCPU
	}
	if !cpu {
		t.Fatalf("no CPU among %+v", Devices())
	}
}
