package server

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/internal/gputest"
)

// TestGPUServe: a server whose engine offloads runs a vision chat and a
// transcription on the GPU; /api/ps gives ollama's size_vram (the CLI's
// "100% GPU"), /metrics the GPU's budget and use and each model's share.
func TestGPUServe(t *testing.T) {
	dev := gputest.Require(t)
	e := engine.New(engine.Options{Threads: 2, NumCtx: 512, Parallel: 1, GPULayers: engine.AllGPULayers, CacheDir: filepath.Join(modelsDir, "cache")})
	defer e.Close()
	ts := testServer(t, Config{Engine: e})
	body := `{"model":"seer","stream":false,"options":{"num_predict":4},"messages":[{"role":"user","content":"What is it?","images":["` + base64.StdEncoding.EncodeToString(pngImage(t, 16, 12)) + `"]}]}`
	if code, _, b := post(t, ts.URL+"/api/chat", "application/json", []byte(body)); code != http.StatusOK {
		t.Fatalf("/api/chat: %d %s", code, b)
	}
	// One temperature, no fallback ladder: lavapipe computes slowly.
	form, ctype := multipartForm(t, map[string]string{"model": "ggml-micro.en", "temperature": "1"}, "a.wav", jfkShort)
	if code, _, b := post(t, ts.URL+"/v1/audio/transcriptions", ctype, form); code != http.StatusOK {
		t.Fatalf("transcription: %d %s", code, b)
	}
	code, b := get(t, ts.URL+"/api/ps")
	var ps struct {
		Models []struct {
			Name     string `json:"name"`
			Size     int64  `json:"size"`
			SizeVRAM int64  `json:"size_vram"`
		} `json:"models"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &ps) != nil || len(ps.Models) != 2 {
		t.Fatalf("/api/ps: %d %s", code, b)
	}
	met := e.Metrics()
	for _, m := range ps.Models {
		if m.SizeVRAM <= 0 || m.SizeVRAM > m.Size {
			t.Fatalf("/api/ps: %s has size %d, size_vram %d: want part or all of it on the GPU", m.Name, m.Size, m.SizeVRAM)
		}
	}
	m := scrape(t, ts.URL)
	labels := map[string]string{"device": dev.Name}
	budget, _ := sample(t, m, "owl_device_memory_budget_bytes", dto.MetricType_GAUGE, labels)
	used, _ := sample(t, m, "owl_device_memory_used_bytes", dto.MetricType_GAUGE, labels)
	if len(met.Devices) != 1 || budget != float64(met.Devices[0].Budget) || used != float64(met.Devices[0].Used) || used <= 0 || used > budget {
		t.Fatalf("device metrics: budget %v, used %v; engine %+v", budget, used, met.Devices)
	}
	var sum float64
	for _, s := range m["owl_model_device_memory_bytes"].GetMetric() {
		sum += s.GetGauge().GetValue()
	}
	if sum != used {
		t.Fatalf("the models' device memory adds up to %v, the device's use is %v", sum, used)
	}
}
