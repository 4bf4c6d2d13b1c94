package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"

	"github.com/owlengine/owl/engine"
)

// scrape fetches /metrics and parses it as Prometheus' text format.
func scrape(t testing.TB, ts string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(ts + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || !strings.Contains(ct, "version=0.0.4") {
		t.Fatalf("/metrics Content-Type %q, want Prometheus' text format", ct)
	}
	p := expfmt.NewTextParser(pmodel.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return families
}

// sample returns the value of the series of family name whose labels
// include labels, checking the family's type; ok is false without one.
func sample(t testing.TB, families map[string]*dto.MetricFamily, name string, typ dto.MetricType, labels map[string]string) (v float64, ok bool) {
	t.Helper()
	f := families[name]
	if f == nil {
		return 0, false
	}
	if f.GetType() != typ {
		t.Fatalf("%s is a %v, want a %v", name, f.GetType(), typ)
	}
	if f.GetHelp() == "" {
		t.Errorf("%s has no help text", name)
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, want := range labels {
			if have[k] != want {
				continue next
			}
		}
		switch typ {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		}
		t.Fatalf("%s: unexpected type %v", name, typ)
	}
	return 0, false
}

// histogram returns the count and sum of the histogram series of family
// name whose labels include labels.
func histogram(t testing.TB, families map[string]*dto.MetricFamily, name string, labels map[string]string) (count uint64, sum float64, ok bool) {
	t.Helper()
	f := families[name]
	if f == nil {
		return 0, 0, false
	}
	if f.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("%s is a %v, want a histogram", name, f.GetType())
	}
next:
	for _, m := range f.GetMetric() {
		for _, lp := range m.GetLabel() {
			if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
				continue next
			}
		}
		h := m.GetHistogram()
		last := uint64(0)
		for _, b := range h.GetBucket() {
			if b.GetCumulativeCount() < last {
				t.Fatalf("%s: buckets not cumulative: %v", name, h.GetBucket())
			}
			last = b.GetCumulativeCount()
		}
		if last > h.GetSampleCount() {
			t.Fatalf("%s: %d in the buckets, %d in all", name, last, h.GetSampleCount())
		}
		return h.GetSampleCount(), h.GetSampleSum(), true
	}
	return 0, 0, false
}

func TestMetrics(t *testing.T) {
	ts := testServer(t, Config{})
	counter, gauge := dto.MetricType_COUNTER, dto.MetricType_GAUGE
	tiny := map[string]string{"model": "tiny.gguf", "kind": "text"}
	chat := func(prompt string) {
		t.Helper()
		code, _, b := post(t, ts.URL+"/v1/chat/completions", "application/json",
			[]byte(`{"model":"tiny","max_tokens":6,"temperature":0,"messages":[{"role":"user","content":"`+prompt+`"}]}`))
		if code != http.StatusOK {
			t.Fatalf("chat: %d %s", code, b)
		}
	}
	chat("What do owls eat?")
	m := scrape(t, ts.URL)

	// The engine's memory and loads.
	for _, name := range []string{"owl_memory_budget_bytes", "owl_memory_used_bytes"} {
		if v, ok := sample(t, m, name, gauge, nil); !ok || v <= 0 {
			t.Errorf("%s = %v (present %v), want > 0", name, v, ok)
		}
	}
	if v, ok := sample(t, m, "owl_model_loads_total", counter, nil); !ok || v < 1 {
		t.Errorf("owl_model_loads_total = %v (present %v)", v, ok)
	}
	if _, ok := sample(t, m, "owl_model_unloads_total", counter, nil); !ok {
		t.Error("no owl_model_unloads_total")
	}
	// The loaded text model's series.
	if v, ok := sample(t, m, "owl_model_memory_bytes", gauge, tiny); !ok || v <= 0 {
		t.Errorf("owl_model_memory_bytes of tiny = %v (present %v)", v, ok)
	}
	if v, ok := sample(t, m, "owl_model_loading", gauge, tiny); !ok || v != 0 {
		t.Errorf("owl_model_loading of tiny = %v (present %v), want 0", v, ok)
	}
	if v, ok := sample(t, m, "owl_model_slots", gauge, tiny); !ok || v < 1 {
		t.Errorf("owl_model_slots of tiny = %v (present %v)", v, ok)
	}
	for _, name := range []string{"owl_model_requests_total", "owl_model_decode_steps_total", "owl_model_step_tokens_total",
		"owl_model_generated_tokens_total", "owl_model_prompt_tokens_total"} {
		if v, ok := sample(t, m, name, counter, tiny); !ok || v <= 0 {
			t.Errorf("%s of tiny = %v (present %v), want > 0", name, v, ok)
		}
	}
	if v, ok := sample(t, m, "owl_model_generation_tokens_per_second", gauge, tiny); !ok || v <= 0 {
		t.Errorf("owl_model_generation_tokens_per_second of tiny = %v (present %v)", v, ok)
	}
	// The queue: one wait per admitted request, none turned away.
	admitted, _ := sample(t, m, "owl_model_requests_total", counter, tiny)
	if n, sum, ok := histogram(t, m, "owl_model_queue_wait_seconds", tiny); !ok || float64(n) != admitted || sum < 0 {
		t.Errorf("owl_model_queue_wait_seconds of tiny: %d waits of %v s in all (present %v), want one per request (%v)", n, sum, ok, admitted)
	}
	if v, ok := sample(t, m, "owl_model_rejected_total", counter, tiny); !ok || v != 0 {
		t.Errorf("owl_model_rejected_total of tiny = %v (present %v), want 0", v, ok)
	}
	// Go's runtime metrics and the process's come along.
	if _, ok := sample(t, m, "go_goroutines", gauge, nil); !ok {
		t.Error("no go_goroutines")
	}
	if v, ok := sample(t, m, "process_resident_memory_bytes", gauge, nil); !ok || v <= 0 {
		t.Errorf("process_resident_memory_bytes = %v (present %v)", v, ok)
	}

	// The counters grow with each request.
	before := func(name string) float64 { v, _ := sample(t, m, name, counter, tiny); return v }
	gen, prompt, reqs := before("owl_model_generated_tokens_total"), before("owl_model_prompt_tokens_total"), before("owl_model_requests_total")
	chat("And what do they not eat?")
	m = scrape(t, ts.URL)
	if v, _ := sample(t, m, "owl_model_generated_tokens_total", counter, tiny); v <= gen {
		t.Errorf("generated tokens %v, then %v", gen, v)
	}
	if v, _ := sample(t, m, "owl_model_prompt_tokens_total", counter, tiny); v <= prompt {
		t.Errorf("prompt tokens %v, then %v", prompt, v)
	}
	if v, _ := sample(t, m, "owl_model_requests_total", counter, tiny); v <= reqs {
		t.Errorf("requests %v, then %v", reqs, v)
	}
}

// A live transcription shows in owl_live_streams while it runs, and its
// speech model among the loaded models, without the text models' counters.
func TestMetricsLive(t *testing.T) {
	ts := testServer(t, Config{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	gauge := dto.MetricType_GAUGE
	if v, ok := sample(t, scrape(t, ts.URL), "owl_live_streams", gauge, nil); !ok || v != 0 {
		t.Fatalf("owl_live_streams before any stream = %v (present %v)", v, ok)
	}
	c, _, err := websocket.Dial(ctx, liveURL(ts.URL, url.Values{"model": {"ggml-micro.en"}}), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"ready"`) {
		t.Fatalf("stream: %s %v", b, err)
	}
	// The stream holds its speech model once it is loaded.
	speech := map[string]string{"model": "ggml-micro.en.bin", "kind": "speech"}
	var m map[string]*dto.MetricFamily
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		m = scrape(t, ts.URL)
		loading, _ := sample(t, m, "owl_model_loading", gauge, speech)
		if v, ok := sample(t, m, "owl_model_requests_in_use", gauge, speech); ok && v == 1 && loading == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stream holds no loaded speech model")
		}
	}
	if v, _ := sample(t, m, "owl_live_streams", gauge, nil); v != 1 {
		t.Fatalf("owl_live_streams during a stream = %v", v)
	}
	if v, ok := sample(t, m, "owl_model_memory_bytes", gauge, speech); !ok || v <= 0 {
		t.Fatalf("owl_model_memory_bytes of the speech model = %v (present %v)", v, ok)
	}
	if _, ok := sample(t, m, "owl_model_decode_steps_total", dto.MetricType_COUNTER, speech); ok {
		t.Fatal("a speech model has text model counters")
	}
	// A live stream does not take one of the model's transcription slots.
	if v, ok := sample(t, m, "owl_model_running_sequences", gauge, speech); !ok || v != 0 {
		t.Fatalf("owl_model_running_sequences of the speech model during a stream = %v (present %v)", v, ok)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"end"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := readEvents(ctx, t, c); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("stream ended with %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if v, _ := sample(t, scrape(t, ts.URL), "owl_live_streams", gauge, nil); v == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("owl_live_streams stays above 0 after the stream ended")
		}
	}
}

// A text model with a projector, asked for by every route that takes a
// text model — chat with and without an image and completions through
// the OpenAI API, chat with and without images and generate with and
// without through ollama's — is loaded once: one entry in /api/ps, one
// load in /metrics, one series per model.
func TestOneModelEveryRoute(t *testing.T) {
	e := engine.New(engine.Options{Threads: 1, NumCtx: 512, Parallel: 2, CacheDir: filepath.Join(modelsDir, "cache")})
	defer e.Close()
	ts := testServer(t, Config{Engine: e})
	img := base64.StdEncoding.EncodeToString(pngImage(t, 16, 12))
	for _, r := range []struct{ path, body string }{
		{"/v1/completions", `{"model":"seer","prompt":"The owl","max_tokens":3}`},
		{"/v1/chat/completions", `{"model":"seer","max_tokens":3,"messages":[{"role":"user","content":"Hi"}]}`},
		{"/v1/chat/completions", `{"model":"seer","max_tokens":3,"messages":[{"role":"user","content":[{"type":"text","text":"What is it?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,` + img + `"}}]}]}`},
		{"/api/generate", `{"model":"seer","prompt":"The owl","stream":false,"options":{"num_predict":3}}`},
		{"/api/generate", `{"model":"seer:latest","prompt":"What is it?","images":["` + img + `"],"stream":false,"options":{"num_predict":3}}`},
		{"/api/chat", `{"model":"seer","stream":false,"options":{"num_predict":3},"messages":[{"role":"user","content":"Hi"}]}`},
		{"/api/chat", `{"model":"seer","stream":false,"options":{"num_predict":3},"messages":[{"role":"user","content":"What is it?","images":["` + img + `"]}]}`},
		{"/v1/completions", `{"model":"seer.gguf","prompt":"Again","max_tokens":3}`},
	} {
		if code, _, b := post(t, ts.URL+r.path, "application/json", []byte(r.body)); code != http.StatusOK {
			t.Fatalf("%s %s: %d %s", r.path, r.body[:40], code, b)
		}
	}
	met := e.Metrics()
	if met.Loads != 1 || len(met.Models) != 1 || met.Models[0].Projector == "" {
		t.Fatalf("%d loads, models %+v; want one load of seer with its projector", met.Loads, met.Models)
	}
	if met.Models[0].ImagesEncoded == 0 {
		t.Fatal("no image reached the projector")
	}
	code, b := get(t, ts.URL+"/api/ps")
	var ps struct {
		Models []struct{ Name string } `json:"models"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &ps) != nil || len(ps.Models) != 1 || ps.Models[0].Name != "seer" {
		t.Fatalf("/api/ps: %d %s", code, b)
	}
	m := scrape(t, ts.URL)
	if v, _ := sample(t, m, "owl_model_loads_total", dto.MetricType_COUNTER, nil); v != 1 {
		t.Fatalf("owl_model_loads_total = %v", v)
	}
	if f := m["owl_model_memory_bytes"]; f == nil || len(f.GetMetric()) != 1 {
		t.Fatalf("owl_model_memory_bytes series: %v", f)
	}
	// The projector counts in the model's memory.
	if mm := met.Models[0]; mm.Bytes <= 0 {
		t.Fatalf("model memory %d", mm.Bytes)
	}
}
