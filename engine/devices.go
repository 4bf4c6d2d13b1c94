package engine

import (
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/owlengine/owl/llm"
	"github.com/owlengine/owl/models"
)

// AllGPULayers, as Options.GPULayers, offloads every layer of a text model
// that fits its GPU's budget (and speech and voice models whole).
const AllGPULayers = -1

// gpuBudget is the memory budget of one GPU. Each model placed on it
// counts its estimated device bytes here, as it counts the rest in the
// RAM budget.
type gpuBudget struct {
	dev    llm.Device
	budget uint64
	used   uint64 // e.mu guards it
}

// gpuNote is said once per process: a GPU build (a backend library found)
// that finds no GPU runs on the CPU.
var gpuNote sync.Once

// initGPUs finds the GPUs the engine may place models on; gpusOnce runs it
// when a model first asks for a GPU.
func (e *Engine) initGPUs() {
	gpus := llm.GPUs()
	if len(gpus) == 0 {
		gpuNote.Do(func() {
			var libs []string
			for _, l := range llm.BackendLibraries() {
				libs = append(libs, l.Path)
			}
			if len(libs) > 0 {
				slog.Warn("no usable GPU: the backend libraries found no device their drivers can run (for a software or CPU-type Vulkan device, name it in GGML_VK_VISIBLE_DEVICES); running on the CPU", "libraries", strings.Join(libs, ","))
			}
		})
		return
	}
	var found []*gpuBudget
	for _, d := range gpus {
		if len(e.opts.Devices) > 0 && !slices.ContainsFunc(e.opts.Devices, func(n string) bool { return strings.EqualFold(n, d.Name) }) {
			continue
		}
		b := e.opts.MaxDeviceMemory
		if b == 0 {
			free, _ := d.Memory()
			b = free / 10 * 9
		}
		found = append(found, &gpuBudget{dev: d, budget: b})
	}
	e.mu.Lock()
	e.gpus = found
	e.mu.Unlock()
}

// footprint is what a model takes in memory, and what of it a GPU can
// take: units of perLayer bytes (a text model's blocks and its output
// layer; a speech or voice model whole), plus fixed bytes (compute
// buffers) on the GPU once any unit is there.
type footprint struct {
	total    uint64 // everything, on the CPU
	units    int
	perLayer uint64
	fixed    uint64
}

// textFootprint splits a text model's estimate into its layers.
func textFootprint(g *models.GGUF, est models.MemoryEstimate) footprint {
	blocks, _ := g.Uint(g.Architecture() + ".block_count")
	units := int(blocks) + 1
	return footprint{total: est.Total(), units: units, perLayer: (est.Weights + est.KVCache) / uint64(units), fixed: est.Compute}
}

// wholeFootprint is a model that goes to a GPU whole or not at all.
func wholeFootprint(est models.MemoryEstimate) footprint {
	return footprint{total: est.Total(), units: 1, perLayer: est.Weights + est.KVCache, fixed: est.Compute}
}

// placement is where a model goes: layers units of it on gpu (nil: all on
// the CPU), taking vram bytes there.
type placement struct {
	gpu    *gpuBudget
	layers int
	vram   uint64
}

// ram is the RAM a model takes when placed as p.
func (f footprint) ram(p placement) uint64 {
	moved := uint64(p.layers) * f.perLayer
	return f.total - min(f.total, moved)
}

// Device is the name of the placement's GPU ("" for the CPU).
func (p placement) device() string {
	if p.gpu == nil {
		return ""
	}
	return p.gpu.dev.Name
}

// place chooses the GPU and the units of f it takes: as many units as the
// engine's GPULayers asks (all for AllGPULayers) that fit a GPU's budget
// once its idle models are unloaded, on the GPU that takes the most. e.mu
// is held.
func (e *Engine) place(f footprint, wantUnits int) placement {
	if len(e.gpus) == 0 || wantUnits == 0 {
		return placement{}
	}
	if wantUnits < 0 || wantUnits > f.units {
		wantUnits = f.units
	}
	best := placement{}
	for _, g := range e.gpus {
		busy := uint64(0)
		for _, m := range e.loaded {
			if m.gpu == g && m.refs > 0 {
				busy += m.vram
			}
		}
		if busy+f.fixed >= g.budget {
			continue
		}
		room := g.budget - busy - f.fixed
		n := wantUnits
		if f.perLayer > 0 {
			n = min(n, int(room/f.perLayer))
		}
		if n > best.layers || n == best.layers && n > 0 && g.budget-g.used > best.gpu.budget-best.gpu.used {
			best = placement{gpu: g, layers: n, vram: uint64(n)*f.perLayer + f.fixed}
		}
	}
	if best.layers == 0 {
		return placement{}
	}
	return best
}

// gpuUnits is how many units of a text model want GPU layers are; speech
// and voice models go whole whenever any offload is asked for.
func (e *Engine) gpuUnits(kind modelKind, want int) int {
	if kind != kindText && want != 0 {
		return AllGPULayers
	}
	return want
}

// DeviceMetrics are a GPU's budget and use.
type DeviceMetrics struct {
	Name        string // "Vulkan0"
	Description string // the hardware
	Budget      uint64 // bytes models may take on it
	Used        uint64 // estimated bytes of the models placed on it
	Free, Total uint64 // as the driver reports them now
}

// deviceMetrics snapshots the GPUs' budgets. e.mu is held.
func (e *Engine) deviceMetrics() []DeviceMetrics {
	out := make([]DeviceMetrics, 0, len(e.gpus))
	for _, g := range e.gpus {
		free, total := g.dev.Memory()
		out = append(out, DeviceMetrics{Name: g.dev.Name, Description: g.dev.Description, Budget: g.budget, Used: g.used, Free: free, Total: total})
	}
	return out
}
