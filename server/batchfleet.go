package server

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/owlengine/owl/fleet"
	"github.com/owlengine/owl/models/store"
)

// runFleet puts the lines of batch id left to do on the fleet's stream,
// for the workers holding their models, and collects their results,
// until every line has one or ctx ends. A restarted server queues only
// the lines neither answered nor queued already, so nothing is lost and
// nothing runs twice.
func (b *batches) runFleet(ctx context.Context, id string, lines []batchLine, out, bad *fleet.ResultFile, add func(batchResult) error) {
	c := b.s.cfg.Fleet
	log := b.s.log.With("batch", id)
	known := map[string]bool{}
	for _, l := range lines {
		known[l.CustomID] = true
	}
	left := func() int { return len(lines) - out.Count() - bad.Count() }
	// What is on the stream, then what came back: a line on neither
	// (and in neither file) is queued. In this order, a line answered
	// meanwhile is in the results.
	var pending map[string]bool
	for {
		var err error
		if pending, err = c.Pending(ctx, id); err == nil {
			break
		}
		log.Warn("server: reading the fleet's queue", "err", err)
		if sleepCtx(ctx, time.Second) {
			return
		}
	}
	cctx, stop := context.WithCancel(ctx)
	arrived := make(chan struct{}, 1)
	collected, caughtUp := make(chan struct{}), make(chan struct{})
	var once sync.Once
	go func() {
		defer close(collected)
		c.Collect(cctx, id, func(r batchResult) error {
			if !known[r.CustomID] || out.Has(r.CustomID) || bad.Has(r.CustomID) {
				return nil // a line run twice, or one of another batch with the same id: dropped
			}
			if err := add(r); err != nil {
				return err
			}
			select {
			case arrived <- struct{}{}:
			default:
			}
			return nil
		}, func() { once.Do(func() { close(caughtUp) }) })
	}()
	defer func() { stop(); <-collected }()
	select {
	case <-caughtUp:
	case <-ctx.Done():
		return
	}
	var queue []batchLine
	for _, l := range lines {
		if !out.Has(l.CustomID) && !bad.Has(l.CustomID) && !pending[fleet.LineKey(l.CustomID)] {
			queue = append(queue, l)
		}
	}
	waiting := false
	for len(queue) > 0 {
		workers, err := c.Workers(ctx)
		if err == nil && len(workers) == 0 {
			if !waiting {
				log.Info("server: no worker is up in the fleet; the batch waits for one", "lines", len(queue))
				waiting = true
			}
			err = fmt.Errorf("no workers")
		}
		if err != nil {
			if sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		waiting = false
		var again []batchLine
		for _, l := range queue {
			if ctx.Err() != nil {
				return
			}
			kind := fleet.KindOf(l.URL)
			req, err := b.s.prepareLine(id, l)
			if err != nil {
				add(lineFailed(b.s, l, err))
				continue
			}
			model, ok := fleet.Route(workers, kind, req.Model)
			if !ok {
				held := fleet.Held(workers, kind)
				add(batchResult{ID: newID("batch_req_"), CustomID: l.CustomID, Error: &batchLineError{Code: "model_not_found",
					Message: fmt.Sprintf("no worker of the fleet runs %s lines of model %s (they run: %s)", kind, quoteShort(req.Model), cmp.Or(strings.Join(held, ", "), "none"))}})
				continue
			}
			if err := c.Submit(ctx, kind, model, req); err != nil {
				log.Warn("server: queueing a line", "line", l.CustomID, "err", err)
				again = append(again, l)
			}
		}
		queue = again
		if len(queue) > 0 && sleepCtx(ctx, time.Second) {
			return
		}
	}
	for left() > 0 {
		select {
		case <-arrived:
		case <-ctx.Done():
			return
		}
	}
}

// endFleet takes what the fleet still holds of a batch that ended: its
// lines if it was cancelled, and the results that came after.
func (b *batches) endFleet(id string, cancelled bool) {
	c := b.s.cfg.Fleet
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cancelled {
		if err := c.Cancel(ctx, id); err != nil {
			b.s.log.Warn("server: taking a cancelled batch's lines off the fleet", "batch", id, "err", err)
		}
	}
	if err := c.Forget(ctx, id); err != nil {
		b.s.log.Warn("server: clearing a batch's results in the fleet", "batch", id, "err", err)
	}
}

// sleepCtx waits d, and says whether ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false
	case <-ctx.Done():
		return true
	}
}

// FleetModels lists the models of the server's folder as a worker
// advertises them: each text model for chat, completion and embedding
// lines, each speech model for transcriptions, with the other names
// requests may give it. kinds, when not empty, keeps only those kinds of
// work (fleet.KindChat, …).
func (s *Server) FleetModels(kinds []string) ([]fleet.ModelInfo, error) {
	for _, k := range kinds {
		if !slices.Contains(fleet.Kinds, k) {
			return nil, fmt.Errorf("kind of work %q: want some of %s", k, strings.Join(fleet.Kinds, ", "))
		}
	}
	ms, err := s.models.list()
	if len(ms) == 0 && err != nil {
		return nil, err
	}
	var out []fleet.ModelInfo
	for _, m := range ms {
		var work []string
		switch m.Kind {
		case store.KindLLM:
			work = []string{fleet.KindChat, fleet.KindComplete, fleet.KindEmbed}
		case store.KindWhisper:
			work = []string{fleet.KindTranscribe}
		default:
			continue
		}
		if len(kinds) > 0 {
			work = slices.DeleteFunc(work, func(k string) bool { return !slices.Contains(kinds, k) })
		}
		if len(work) == 0 {
			continue
		}
		info := fleet.ModelInfo{Name: m.Name, Work: work}
		base := filepath.Base(m.Path)
		for _, a := range []string{m.Name + ":latest", base, strings.TrimSuffix(base, filepath.Ext(base)), m.Source} {
			if a != "" && a != m.Name && !slices.Contains(info.Aliases, a) {
				info.Aliases = append(info.Aliases, a)
			}
		}
		out = append(out, info)
	}
	return out, nil
}

// batchCollector exports the batches' progress, and with a fleet its
// workers as they advertise themselves, to Prometheus.
type batchCollector struct {
	s                                  *Server
	batches, requests                  *prometheus.Desc
	workers, workerLines, workerFlight *prometheus.Desc
	queued                             *prometheus.Desc
}

func newBatchCollector(s *Server) *batchCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("owl_"+name, help, labels, nil)
	}
	return &batchCollector{s: s,
		batches:      d("batches", "Batches of the Batch API by status.", "status"),
		requests:     d("batch_requests", "Lines of each batch under way: total, completed and failed.", "batch", "state"),
		workers:      d("fleet_workers", "Workers of the fleet advertising themselves."),
		workerLines:  d("fleet_worker_lines_total", "Lines each worker of the fleet handled (done: results stored; retried: handed back; dead: out of deliveries).", "worker", "outcome"),
		workerFlight: d("fleet_worker_lines_in_flight", "Lines each worker of the fleet is running.", "worker"),
		queued:       d("fleet_lines_queued", "Lines on the fleet's stream: waiting, or held by workers."),
	}
}

func (c *batchCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.batches, c.requests, c.workers, c.workerLines, c.workerFlight, c.queued} {
		ch <- d
	}
}

func (c *batchCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.s.batches
	if b == nil {
		return
	}
	b.mu.Lock()
	byStatus := map[string]int{}
	for _, o := range b.objs {
		byStatus[o.Status]++
		switch o.Status {
		case "validating", "in_progress", "finalizing", "cancelling":
			rc := o.RequestCounts
			for state, n := range map[string]int{"total": rc.Total, "completed": rc.Completed, "failed": rc.Failed} {
				ch <- prometheus.MustNewConstMetric(c.requests, prometheus.GaugeValue, float64(n), o.ID, state)
			}
		}
	}
	b.mu.Unlock()
	for st, n := range byStatus {
		ch <- prometheus.MustNewConstMetric(c.batches, prometheus.GaugeValue, float64(n), st)
	}
	fl := c.s.cfg.Fleet
	if fl == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if ws, err := fl.Workers(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(len(ws)))
		for _, w := range ws {
			for outcome, n := range map[string]uint64{"done": w.Done, "retried": w.Retried, "dead": w.Dead} {
				ch <- prometheus.MustNewConstMetric(c.workerLines, prometheus.CounterValue, float64(n), w.ID, outcome)
			}
			ch <- prometheus.MustNewConstMetric(c.workerFlight, prometheus.GaugeValue, float64(w.InFlight), w.ID)
		}
	}
	if n, err := fl.Queued(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(n))
	}
}
