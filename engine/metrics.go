package engine

import (
	"slices"
	"strings"
	"time"

	"github.com/owlengine/owl/vision"
)

// ImageCacheStats are the counters of a vision model's cache of image
// embeddings.
type ImageCacheStats = vision.CacheStats

// Metrics is a snapshot of the engine: memory, and for each loaded model
// its use and, for text models, its scheduler's counters (cumulative since
// the model loaded).
type Metrics struct {
	MemoryBudget uint64          // bytes of RAM
	MemoryUsed   uint64          // estimated bytes of the loaded models in RAM
	Loads        int64           // model loads started
	Unloads      int64           // models unloaded (evicted, expired, failed or closed)
	Devices      []DeviceMetrics // the GPUs models may go to, each with its own budget (found when a model first asks for one)
	Models       []ModelMetrics
}

// ModelMetrics describe one loaded model.
type ModelMetrics struct {
	Path         string
	Projector    string // the vision projector loaded with a text model
	Kind         string // "text", "speech" or "voice"
	Bytes        uint64 // estimated memory in RAM
	Device       string // the GPU holding part or all of it ("": none)
	DeviceBytes  uint64 // estimated memory on Device
	GPULayers    int    // its layers on Device (a speech or voice model: 1, whole)
	Loading      bool
	InUse        int           // requests holding the model
	LoadDuration time.Duration // how long loading took
	LastUsed     time.Time
	KeepAlive    time.Duration // negative: forever

	// The model's queue: text and speech models.
	QueueDepth int           // requests waiting for a slot
	QueueWait  WaitHistogram // how long the admitted requests waited
	Rejected   int64         // requests turned away busy: the queue full, or QueueWait over
	Requests   int64         // requests admitted
	Running    int           // text: sequences in the batch; speech: transcriptions running
	Slots      int           // text: sequences the KV cache holds; speech: transcriptions at once
	Context    int           // text: tokens one sequence may hold

	// Text models.
	Steps         int64 // decode steps
	StepTokens    int64 // tokens evaluated by all steps
	DecodeTokens  int64 // generated tokens evaluated
	PromptTokens  int64 // prompt tokens evaluated
	CachedTokens  int64 // prompt tokens reused from the prefix cache instead
	ImagesEncoded int64 // image chunks the projector encoded (cache hits excluded)
	ImageCache    ImageCacheStats

	// GenTokensPerSecond is the generated tokens evaluated per second of
	// the steps that evaluated any (all sequences together).
	GenTokensPerSecond float64
}

// Metrics returns a snapshot of the engine's state and counters.
func (e *Engine) Metrics() Metrics {
	e.mu.Lock()
	out := Metrics{MemoryBudget: e.budget, MemoryUsed: e.used, Loads: int64(e.loads), Unloads: int64(e.unloads), Devices: e.deviceMetrics()}
	vals := make([]closer, 0, len(e.loaded))
	for _, m := range e.loaded {
		mm := ModelMetrics{Path: m.path, Projector: m.projector, Kind: m.kind.String(), Bytes: m.bytes, InUse: m.refs,
			LastUsed: m.lastUsed, KeepAlive: m.keepAlive, DeviceBytes: m.vram, GPULayers: m.layers}
		if m.gpu != nil {
			mm.Device = m.gpu.dev.Name
		}
		var val closer
		select {
		case <-m.ready:
			mm.LoadDuration = m.loadTime
			if m.err == nil {
				val = m.val
			}
		default:
			mm.Loading = true
		}
		out.Models = append(out.Models, mm)
		vals = append(vals, val)
	}
	e.mu.Unlock()
	for i, v := range vals {
		mm := &out.Models[i]
		switch v := v.(type) {
		case *textModel:
			v.metrics(mm)
		case *speechModel:
			v.metrics(mm)
		case *voiceModel:
			v.metrics(mm)
		}
	}
	slices.SortFunc(out.Models, func(a, b ModelMetrics) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// metrics fills in a text model's scheduler counters.
func (t *textModel) metrics(mm *ModelMetrics) {
	r := t.runner
	mm.QueueDepth = r.queueDepth()
	mm.QueueWait = r.queue.snapshot()
	mm.Rejected = r.queue.rejected.Load()
	mm.Slots = len(r.slots)
	mm.Context = r.perSeq
	mm.Running = int(r.stats.running.Load())
	mm.Requests = r.stats.requests.Load()
	mm.Steps = r.stats.steps.Load()
	mm.StepTokens = r.stats.stepTokens.Load()
	mm.DecodeTokens = r.stats.decodeTokens.Load()
	mm.PromptTokens = r.stats.promptTokens.Load()
	mm.CachedTokens = r.stats.cachedTokens.Load()
	if proj, cache := t.vision(); proj != nil {
		mm.ImagesEncoded = proj.Encodes()
		mm.ImageCache = cache.Stats()
	}
	if ns := r.stats.genNanos.Load(); ns > 0 {
		mm.GenTokensPerSecond = float64(mm.DecodeTokens) / (float64(ns) / 1e9)
	}
}
