package server

import (
	"net/http"
	"path/filepath"

	"github.com/owlengine/owl/engine"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsCollector exports the engine's metrics to Prometheus, read from
// Backend.Metrics at each scrape.
type metricsCollector struct {
	be Backend

	budget, used, loads, unloads                                    *prometheus.Desc
	bytes, inUse, queue, running, slots                             *prometheus.Desc
	requests, steps, stepTokens, decodeTokens, promptTokens, cached *prometheus.Desc
	tps, loadSeconds, loading                                       *prometheus.Desc
	images, imageHits, imageBytes                                   *prometheus.Desc
	queueWait, rejected                                             *prometheus.Desc
	devBudget, devUsed, devFree, devBytes                           *prometheus.Desc
}

func newMetricsCollector(be Backend) *metricsCollector {
	model := []string{"model", "kind"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc("owl_"+name, help, labels, nil)
	}
	return &metricsCollector{
		be:           be,
		budget:       d("memory_budget_bytes", "Memory budget for loaded models.", nil),
		used:         d("memory_used_bytes", "Estimated memory of the loaded models.", nil),
		loads:        d("model_loads_total", "Model loads started.", nil),
		unloads:      d("model_unloads_total", "Models unloaded (evicted, expired, failed or closed).", nil),
		bytes:        d("model_memory_bytes", "Estimated memory of a loaded model.", model),
		loading:      d("model_loading", "1 while the model is loading.", model),
		inUse:        d("model_requests_in_use", "Requests holding the model.", model),
		queue:        d("model_queue_depth", "Requests waiting for a slot of the model.", model),
		queueWait:    d("model_queue_wait_seconds", "How long the requests the model admitted waited in its queue.", model),
		rejected:     d("model_rejected_total", "Requests turned away busy (the model's queue full, or the queue wait over) since the model loaded.", model),
		running:      d("model_running_sequences", "Sequences in a text model's batch; transcriptions a speech model runs.", model),
		slots:        d("model_slots", "Sequences a text model's KV cache holds; transcriptions a speech model runs at once.", model),
		requests:     d("model_requests_total", "Requests admitted since the model loaded.", model),
		steps:        d("model_decode_steps_total", "Decode steps since the model loaded.", model),
		stepTokens:   d("model_step_tokens_total", "Tokens evaluated by all decode steps since the model loaded.", model),
		decodeTokens: d("model_generated_tokens_total", "Generated tokens evaluated since the model loaded.", model),
		promptTokens: d("model_prompt_tokens_total", "Prompt tokens evaluated since the model loaded.", model),
		cached:       d("model_cached_prompt_tokens_total", "Prompt tokens reused from the prefix cache since the model loaded.", model),
		tps:          d("model_generation_tokens_per_second", "Generated tokens per second of decode steps that generated any.", model),
		loadSeconds:  d("model_load_seconds", "How long the model took to load.", model),
		images:       d("model_images_encoded_total", "Images the model's projector encoded (cache hits excluded) since the model loaded.", model),
		imageHits:    d("model_image_cache_hits_total", "Images found in the model's embedding cache instead of encoded.", model),
		imageBytes:   d("model_image_cache_bytes", "Bytes of image embeddings the model's cache holds.", model),
		devBudget:    d("device_memory_budget_bytes", "Memory budget of a GPU for loaded models.", []string{"device"}),
		devUsed:      d("device_memory_used_bytes", "Estimated memory of the models on a GPU.", []string{"device"}),
		devFree:      d("device_memory_free_bytes", "Free memory of a GPU, as its driver reports it.", []string{"device"}),
		devBytes:     d("model_device_memory_bytes", "Estimated memory of a loaded model on its GPU.", append(model, "device")),
	}
}

// Describe sends the descriptors of every metric.
func (c *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.budget, c.used, c.loads, c.unloads, c.bytes, c.loading, c.inUse, c.queue, c.running, c.slots,
		c.requests, c.steps, c.stepTokens, c.decodeTokens, c.promptTokens, c.cached, c.tps, c.loadSeconds,
		c.images, c.imageHits, c.imageBytes, c.queueWait, c.rejected, c.devBudget, c.devUsed, c.devFree, c.devBytes} {
		ch <- d
	}
}

// Collect reads the engine's metrics.
func (c *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.be.Metrics()
	ch <- prometheus.MustNewConstMetric(c.budget, prometheus.GaugeValue, float64(m.MemoryBudget))
	ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(m.MemoryUsed))
	ch <- prometheus.MustNewConstMetric(c.loads, prometheus.CounterValue, float64(m.Loads))
	ch <- prometheus.MustNewConstMetric(c.unloads, prometheus.CounterValue, float64(m.Unloads))
	for _, d := range m.Devices {
		ch <- prometheus.MustNewConstMetric(c.devBudget, prometheus.GaugeValue, float64(d.Budget), d.Name)
		ch <- prometheus.MustNewConstMetric(c.devUsed, prometheus.GaugeValue, float64(d.Used), d.Name)
		ch <- prometheus.MustNewConstMetric(c.devFree, prometheus.GaugeValue, float64(d.Free), d.Name)
	}
	seen := map[[2]string]bool{}
	for _, mm := range m.Models {
		labels := []string{filepath.Base(mm.Path), mm.Kind}
		if key := [2]string{labels[0], labels[1]}; seen[key] {
			continue // two files of one name in different folders: report the first
		} else {
			seen[key] = true
		}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
		}
		counter := func(d *prometheus.Desc, v int64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
		}
		loading := 0.0
		if mm.Loading {
			loading = 1
		}
		gauge(c.bytes, float64(mm.Bytes))
		if mm.Device != "" {
			ch <- prometheus.MustNewConstMetric(c.devBytes, prometheus.GaugeValue, float64(mm.DeviceBytes), append(labels, mm.Device)...)
		}
		gauge(c.loading, loading)
		gauge(c.inUse, float64(mm.InUse))
		gauge(c.loadSeconds, mm.LoadDuration.Seconds())
		if mm.Loading {
			continue
		}
		gauge(c.queue, float64(mm.QueueDepth))
		gauge(c.running, float64(mm.Running))
		gauge(c.slots, float64(mm.Slots))
		counter(c.requests, mm.Requests)
		counter(c.rejected, mm.Rejected)
		buckets := make(map[float64]uint64, len(engine.QueueWaitBuckets))
		for i, b := range engine.QueueWaitBuckets {
			if i < len(mm.QueueWait.Buckets) {
				buckets[b] = mm.QueueWait.Buckets[i]
			}
		}
		ch <- prometheus.MustNewConstHistogram(c.queueWait, mm.QueueWait.Count, mm.QueueWait.Sum, buckets, labels...)
		if mm.Kind != "text" {
			continue
		}
		gauge(c.tps, mm.GenTokensPerSecond)
		counter(c.steps, mm.Steps)
		counter(c.stepTokens, mm.StepTokens)
		counter(c.decodeTokens, mm.DecodeTokens)
		counter(c.promptTokens, mm.PromptTokens)
		counter(c.cached, mm.CachedTokens)
		if mm.Projector != "" {
			counter(c.images, mm.ImagesEncoded)
			counter(c.imageHits, int64(mm.ImageCache.Hits))
			gauge(c.imageBytes, float64(mm.ImageCache.Bytes))
		}
	}
}

// metricsHandler serves the engine's metrics, the server's own (live
// streams) and Go's runtime metrics.
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.collector, newBatchCollector(s))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "owl_live_streams", Help: "Live transcriptions running."},
		func() float64 { return float64(len(s.streams)) }))
	reg.MustRegister(prometheus.NewGoCollector())
	reg.MustRegister(prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{})) // resident memory, CPU, open files
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: nil})
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) error {
	s.metricsOnce.Do(func() { s.metrics = s.metricsHandler() })
	s.metrics.ServeHTTP(w, r)
	return nil
}
