package loadmix

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"
)

// Server is what a server's /metrics said at one time.
type Server struct {
	RSS          uint64 // process_resident_memory_bytes
	MemoryUsed   uint64 // owl_memory_used_bytes
	MemoryBudget uint64 // owl_memory_budget_bytes
	// Over every loaded model: requests holding one, waiting in a queue,
	// and running.
	InUse, Queued, Running int
	Rejected               int64 // owl_model_rejected_total
}

// Scrape reads url's /metrics.
func Scrape(ctx context.Context, client *http.Client, url, apiKey string) (Server, error) {
	var s Server
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return s, err
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := client.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("/metrics: status %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(pmodel.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return s, fmt.Errorf("/metrics: %w", err)
	}
	sum := func(name string) float64 {
		var v float64
		if f := families[name]; f != nil {
			for _, m := range f.GetMetric() {
				switch f.GetType() {
				case dto.MetricType_GAUGE:
					v += m.GetGauge().GetValue()
				case dto.MetricType_COUNTER:
					v += m.GetCounter().GetValue()
				}
			}
		}
		return v
	}
	s.RSS = uint64(sum("process_resident_memory_bytes"))
	s.MemoryUsed = uint64(sum("owl_memory_used_bytes"))
	s.MemoryBudget = uint64(sum("owl_memory_budget_bytes"))
	s.InUse = int(sum("owl_model_requests_in_use"))
	s.Queued = int(sum("owl_model_queue_depth"))
	s.Running = int(sum("owl_model_running_sequences"))
	s.Rejected = int64(sum("owl_model_rejected_total"))
	return s, nil
}

// Watch is what a watcher saw of a server while a load ran.
type Watch struct {
	Samples               int
	PeakRSS, PeakMemory   uint64
	MemoryBudget          uint64
	PeakQueued, PeakInUse int
	Errors                int // scrapes that failed
	LastError             error
}

// WatchServer scrapes url's /metrics every interval until ctx ends.
func WatchServer(ctx context.Context, client *http.Client, url, apiKey string, interval time.Duration) Watch {
	var w Watch
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s, err := Scrape(sctx, client, url, apiKey)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			w.Errors++
			w.LastError = err
		case err == nil:
			w.Samples++
			w.PeakRSS = max(w.PeakRSS, s.RSS)
			w.PeakMemory = max(w.PeakMemory, s.MemoryUsed)
			w.MemoryBudget = s.MemoryBudget
			w.PeakQueued = max(w.PeakQueued, s.Queued)
			w.PeakInUse = max(w.PeakInUse, s.InUse)
		}
		select {
		case <-ctx.Done():
			return w
		case <-t.C:
		}
	}
}

// Health checks that the server at url answers /health.
func Health(ctx context.Context, client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/health: status %d", resp.StatusCode)
	}
	return nil
}

// WaitIdle waits until the server at url answers /health and its models
// hold no request, waiting or running, and returns what it last saw.
func WaitIdle(ctx context.Context, client *http.Client, url, apiKey string, timeout time.Duration) (Server, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last Server
	var lastErr error
	for {
		err := Health(ctx, client, url)
		if err == nil {
			last, err = Scrape(ctx, client, url, apiKey)
			if err == nil && last.InUse == 0 && last.Queued == 0 && last.Running == 0 {
				return last, nil
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return last, fmt.Errorf("the server is not answering: %w", lastErr)
			}
			return last, errors.New("the server is still busy: " + fmt.Sprintf("%d requests in use, %d waiting, %d running", last.InUse, last.Queued, last.Running))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
