package engine

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/owlengine/owl/internal/gputest"
	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

// TestGPUBatchedEqualsAlone is the scheduler's batched-equals-alone test
// with every layer of the model on the GPU.
func TestGPUBatchedEqualsAlone(t *testing.T) {
	gputest.Require(t)
	testBatchedEqualsAlone(t, Options{NumCtx: 512, Parallel: 4, NumBatch: 64, GPULayers: AllGPULayers})
}

// TestGPUMemoryAccounting: a model on the GPU counts its layers in the
// GPU's budget and the rest in RAM; a GPU budget too small for every layer
// takes as many as fit; a model that needs the GPU's room unloads the idle
// models there (though RAM has room); a speech model goes whole.
func TestGPUMemoryAccounting(t *testing.T) {
	dev := gputest.Require(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf")
	writeTiny(t, a)
	writeTiny(t, b)
	g, err := models.ReadGGUF(a)
	if err != nil {
		t.Fatal(err)
	}
	probe := New(Options{NumCtx: 512, Parallel: 1, GPULayers: AllGPULayers})
	defer probe.Close()
	fp, err := probe.estimate(modelRef{path: a, kind: kindText})
	if err != nil {
		t.Fatal(err)
	}
	blocks, _ := g.Uint("llama.block_count")
	if fp.units != int(blocks)+1 || fp.perLayer == 0 {
		t.Fatalf("footprint %+v for %d blocks", fp, blocks)
	}
	full := uint64(fp.units)*fp.perLayer + fp.fixed

	gen := func(e *Engine, path string) string {
		t.Helper()
		res, err := e.Generate(context.Background(), GenerateRequest{Model: path, Prompt: "The owl", GenerateOptions: greedy(8)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Text
	}
	cpu := New(Options{NumCtx: 512, Parallel: 1})
	defer cpu.Close()
	want := gen(cpu, a)

	t.Run("all layers", func(t *testing.T) {
		e := New(Options{NumCtx: 512, Parallel: 1, GPULayers: AllGPULayers, MaxDeviceMemory: full * 3 / 2})
		defer e.Close()
		if got := gen(e, a); got != want {
			t.Fatalf("on the GPU %q, on the CPU %q", got, want)
		}
		m := e.Metrics()
		if len(m.Devices) != 1 || m.Devices[0].Name != dev.Name || m.Devices[0].Budget != full*3/2 || m.Devices[0].Used != full {
			t.Fatalf("devices %+v; want %s with budget %d, %d used", m.Devices, dev.Name, full*3/2, full)
		}
		mm := m.Models[0]
		if mm.Device != dev.Name || mm.DeviceBytes != full || mm.GPULayers != fp.units || mm.Bytes != fp.total-uint64(fp.units)*fp.perLayer || m.MemoryUsed != mm.Bytes {
			t.Fatalf("model %+v (RAM used %d); want %d bytes and %d layers on %s, %d in RAM", mm, m.MemoryUsed, full, fp.units, dev.Name, fp.total-uint64(fp.units)*fp.perLayer)
		}
	})

	t.Run("as many layers as fit", func(t *testing.T) {
		e := New(Options{NumCtx: 512, Parallel: 1, GPULayers: AllGPULayers, MaxDeviceMemory: fp.fixed + fp.perLayer*3/2})
		defer e.Close()
		if got := gen(e, a); got != want {
			t.Fatalf("one layer on the GPU %q, on the CPU %q", got, want)
		}
		mm := e.Metrics().Models[0]
		if mm.GPULayers != 1 || mm.DeviceBytes != fp.fixed+fp.perLayer {
			t.Fatalf("model %+v: want 1 layer on the GPU", mm)
		}
		// A GPU budget below the compute buffers: the model stays on the CPU.
		e2 := New(Options{NumCtx: 512, Parallel: 1, GPULayers: AllGPULayers, MaxDeviceMemory: fp.fixed / 2})
		defer e2.Close()
		gen(e2, a)
		if mm := e2.Metrics().Models[0]; mm.Device != "" || mm.DeviceBytes != 0 || mm.Bytes != fp.total {
			t.Fatalf("model %+v: want it all in RAM", mm)
		}
	})

	t.Run("eviction per device", func(t *testing.T) {
		e := New(Options{NumCtx: 512, Parallel: 1, GPULayers: AllGPULayers, MaxDeviceMemory: full * 3 / 2})
		defer e.Close()
		gen(e, a)
		gen(e, b) // a is idle: it leaves the GPU for b, though RAM has room for both
		m := e.Metrics()
		if len(m.Models) != 1 || filepath.Base(m.Models[0].Path) != "b.gguf" || m.Models[0].GPULayers != fp.units || m.Devices[0].Used != full {
			t.Fatalf("after a then b on a GPU with room for one: %+v, devices %+v", m.Models, m.Devices)
		}
	})

	t.Run("num_gpu per request", func(t *testing.T) {
		e := New(Options{NumCtx: 512, Parallel: 1, GPULayers: AllGPULayers})
		defer e.Close()
		gen(e, a)
		zero, one := 0, 1
		for _, c := range []struct {
			layers *int
			device string
			units  int
			loads  int64
		}{{&zero, "", 0, 2}, {nil, "", 0, 2}, {&one, dev.Name, 1, 3}, {&one, dev.Name, 1, 3}} {
			o := greedy(4)
			o.GPULayers = c.layers
			res, err := e.Generate(context.Background(), GenerateRequest{Model: a, Prompt: "The owl", GenerateOptions: o}, nil)
			if err != nil {
				t.Fatal(err)
			}
			m := e.Metrics()
			if mm := m.Models[0]; mm.Device != c.device || mm.GPULayers != c.units || m.Loads != c.loads || res.Text != want[:len(res.Text)] {
				t.Fatalf("num_gpu %v: model on %q with %d layers after %d loads, text %q; want %q, %d, %d loads, a prefix of %q",
					c.layers, mm.Device, mm.GPULayers, m.Loads, res.Text, c.device, c.units, c.loads, want)
			}
		}
	})

	t.Run("speech whole", func(t *testing.T) {
		path := filepath.Join(dir, "ggml-micro.en.bin")
		if err := testmodel.WriteWhisperFile(path, testmodel.WhisperMicro(testmodel.VocabEnglish, 0)); err != nil {
			t.Fatal(err)
		}
		e := New(Options{Parallel: 1, GPULayers: AllGPULayers, CacheDir: dir})
		defer e.Close()
		if _, err := e.Transcribe(context.Background(), TranscribeRequest{Model: path, Samples: make([]float32, 16000)}); err != nil {
			t.Fatal(err)
		}
		mm := e.Metrics().Models[0]
		est, _ := estimateSpeech(path, 1)
		if mm.Device != dev.Name || mm.DeviceBytes != est.Total() || mm.Bytes != est.Compute {
			t.Fatalf("speech model %+v; want %d bytes on %s, %d in RAM", mm, est.Total(), dev.Name, est.Compute)
		}
	})
}
