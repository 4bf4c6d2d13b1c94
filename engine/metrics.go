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
	MemoryBudget uint64 // bytes
	MemoryUsed   uint64 // estimated bytes of the loaded models
	Loads        int64  // model loads started
	Unloads      int64  // models unloaded (evicted, expired, failed or closed)
	Models       []ModelMetrics
}

// ModelMetrics describe one loaded model.
type ModelMetrics struct {
	Path         string
	Projector    string // the vision projector loaded with a text model
	Kind         string // "text" or "speech"
	Bytes        uint64 // estimated memory
	Loading      bool
	InUse        int           // requests holding the model
	LoadDuration time.Duration // how long loading took
	LastUsed     time.Time
	KeepAlive    time.Duration // negative: forever

	// Text models.
	QueueDepth    int   // requests waiting for a slot
	Running       int   // sequences in the batch
	Slots         int   // sequences the KV cache holds
	Requests      int64 // requests admitted
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
	out := Metrics{MemoryBudget: e.budget, MemoryUsed: e.used, Loads: int64(e.loads), Unloads: int64(e.unloads)}
	var texts []*textModel
	for _, m := range e.loaded {
		mm := ModelMetrics{Path: m.path, Projector: m.projector, Kind: m.kind.String(), Bytes: m.bytes, InUse: m.refs,
			LastUsed: m.lastUsed, KeepAlive: m.keepAlive}
		select {
		case <-m.ready:
			mm.LoadDuration = m.loadTime
			if t, ok := m.val.(*textModel); ok && m.err == nil {
				texts = append(texts, t)
			} else {
				texts = append(texts, nil)
			}
		default:
			mm.Loading = true
			texts = append(texts, nil)
		}
		out.Models = append(out.Models, mm)
	}
	e.mu.Unlock()
	for i, t := range texts {
		if t == nil {
			continue
		}
		r, mm := t.runner, &out.Models[i]
		mm.QueueDepth = r.queueDepth()
		mm.Slots = len(r.slots)
		mm.Running = int(r.stats.running.Load())
		mm.Requests = r.stats.requests.Load()
		mm.Steps = r.stats.steps.Load()
		mm.StepTokens = r.stats.stepTokens.Load()
		mm.DecodeTokens = r.stats.decodeTokens.Load()
		mm.PromptTokens = r.stats.promptTokens.Load()
		mm.CachedTokens = r.stats.cachedTokens.Load()
		if t.proj != nil {
			mm.ImagesEncoded = t.proj.Encodes()
			mm.ImageCache = t.images.Stats()
		}
		if ns := r.stats.genNanos.Load(); ns > 0 {
			mm.GenTokensPerSecond = float64(mm.DecodeTokens) / (float64(ns) / 1e9)
		}
	}
	slices.SortFunc(out.Models, func(a, b ModelMetrics) int { return strings.Compare(a.Path, b.Path) })
	return out
}
