package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// WorkerOptions configure Work.
type WorkerOptions struct {
	// ID names the worker in the workers bucket and in logs
	// ("": HOST-PID-RANDOM).
	ID string
	// Models are the models the worker runs, each with the kinds of work
	// it takes for it. A line goes only to a worker holding its model.
	Models []ModelInfo
	// Parallel is how many lines the worker runs at once (4); its engine
	// batches them.
	Parallel int
	// LineTimeout bounds one line's run (0: no bound). A line that runs
	// past it is handed back, and after the last delivery fails with why.
	LineTimeout time.Duration
	// DrainTimeout is how long lines under way may finish once the worker
	// is told to stop; the rest are handed back (30s).
	DrainTimeout time.Duration
	// Version is advertised beside the models.
	Version string
	Logger  *slog.Logger
	// Registerer, when set, gets the worker's Prometheus metrics.
	Registerer prometheus.Registerer
}

// workerMetrics are a worker's Prometheus metrics.
type workerMetrics struct {
	lines    *prometheus.CounterVec
	inFlight prometheus.Gauge
	seconds  *prometheus.HistogramVec
}

func newWorkerMetrics(r prometheus.Registerer) *workerMetrics {
	m := &workerMetrics{
		lines: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "owl_worker_lines_total",
			Help: "Batch lines a worker handled, by kind of work and outcome (done: a result written; retried: handed back to run again; dead: out of deliveries; store_failed: the result could not be stored)."},
			[]string{"kind", "outcome"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "owl_worker_lines_in_flight", Help: "Batch lines the worker is running."}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "owl_worker_line_seconds", Help: "Time to run one batch line, by kind of work.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12)}, []string{"kind"}),
	}
	if r != nil {
		r.MustRegister(m.lines, m.inFlight, m.seconds)
	}
	return m
}

// How long a worker waits before asking again when no queue had a line.
const (
	minIdle = 10 * time.Millisecond
	maxIdle = 500 * time.Millisecond
)

// worker is one run of Work.
type worker struct {
	c    *Cluster
	run  Runner
	o    WorkerOptions
	log  *slog.Logger
	met  *workerMetrics
	info WorkerInfo
	mu   sync.Mutex // guards info

	inFlight             atomic.Int64
	done, retried, deads atomic.Uint64
}

// Work takes lines for the options' models off the stream and runs them
// through run until ctx ends: then it takes no more, lets the lines
// under way finish for DrainTimeout, hands back the rest and withdraws
// its advertisement. A line's result is stored before the line is
// acknowledged, so a worker that dies leaves its lines to be handed out
// again, and a line run twice overwrites its result.
func (c *Cluster) Work(ctx context.Context, run Runner, o WorkerOptions) error {
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 30 * time.Second
	}
	if o.ID == "" {
		host, _ := os.Hostname()
		var b [3]byte
		rand.Read(b[:])
		o.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	o.ID = token(o.ID)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if len(o.Models) == 0 {
		return errors.New("fleet: a worker with no models has no work")
	}
	host, _ := os.Hostname()
	w := &worker{c: c, run: run, o: o, log: o.Logger.With("worker", o.ID), met: newWorkerMetrics(o.Registerer),
		info: WorkerInfo{ID: o.ID, Host: host, Version: o.Version, Started: time.Now().UTC(), Models: o.Models, Parallel: o.Parallel}}

	type queue struct {
		kind, model string
		cons        jetstream.Consumer
	}
	var queues []queue
	for _, m := range o.Models {
		for _, kind := range m.Work {
			cons, err := c.consumer(ctx, kind, m.Name)
			if err != nil {
				return err
			}
			queues = append(queues, queue{kind, m.Name, cons})
		}
	}
	if err := w.advertise(ctx); err != nil {
		return err
	}
	beat := time.NewTicker(c.cfg.Heartbeat)
	defer beat.Stop()
	go func() {
		for {
			select {
			case <-beat.C:
				if err := w.advertise(ctx); err != nil && ctx.Err() == nil {
					w.log.Warn("fleet: renewing the worker's advertisement", "err", err)
				}
			case <-ctx.Done():
				return
			}
		}
	}()

	// Lines run under runCtx, which outlives ctx by DrainTimeout.
	runCtx, stopRuns := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRuns()
	// One loop takes lines while the worker has room: it asks each queue
	// in turn for a line waiting now (no slot is held while a queue is
	// empty), stays on a queue while it has lines, and waits a little
	// longer each time every queue was empty.
	slots := make(chan struct{}, o.Parallel)
	var lines sync.WaitGroup
	next, idle := 0, minIdle
	for ctx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		var msg jetstream.Msg
		var kind string
		for k := range queues {
			q := &queues[(next+k)%len(queues)]
			batch, err := q.cons.FetchNoWait(1)
			if err == nil {
				for m := range batch.Messages() {
					msg = m
				}
				err = batch.Error()
			}
			if gone(err) {
				if cons, err := c.consumer(ctx, q.kind, q.model); err == nil {
					q.cons = cons
				}
			}
			if msg != nil {
				next, kind = (next+k)%len(queues), q.kind
				break
			}
		}
		if msg == nil {
			<-slots
			sleep(ctx, idle)
			idle = min(2*idle, maxIdle)
			continue
		}
		idle = minIdle
		lines.Go(func() {
			defer func() { <-slots }()
			w.handle(runCtx, kind, msg)
		})
	}
	w.mu.Lock()
	w.info.Stopping = true
	w.mu.Unlock()
	w.advertise(context.Background())
	drained := make(chan struct{})
	go func() { lines.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(o.DrainTimeout):
		w.log.Info("fleet: handing back the lines under way", "lines", w.inFlight.Load())
		stopRuns()
		<-drained
	}
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.workers.Delete(dctx, o.ID)
	return nil
}

// consumer is the durable consumer of a model's lines of a kind, shared
// by every worker holding it.
func (c *Cluster) consumer(ctx context.Context, kind, model string) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{Durable: consumerName(kind, model), Description: kind + " lines of " + model,
		FilterSubject: "owl.line." + kind + "." + token(model) + ".>", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: c.cfg.AckWait, MaxDeliver: c.cfg.MaxDeliver, MaxAckPending: 10000}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, LinesStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("fleet: the consumer of %s %s lines: %w", model, kind, err)
	}
	return cons, nil
}

// advertise renews the worker's entry in the workers bucket.
func (w *worker) advertise(ctx context.Context) error {
	w.mu.Lock()
	w.info.Seen = time.Now().UTC()
	w.info.InFlight = int(w.inFlight.Load())
	w.info.Done, w.info.Retried, w.info.Dead = w.done.Load(), w.retried.Load(), w.deads.Load()
	data, err := json.Marshal(w.info)
	w.mu.Unlock()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = w.c.workers.Put(ctx, w.o.ID, data)
	return err
}

// handle runs one line and stores its result, or hands it back.
func (w *worker) handle(ctx context.Context, kind string, msg jetstream.Msg) {
	w.inFlight.Add(1)
	w.met.inFlight.Inc()
	defer func() { w.inFlight.Add(-1); w.met.inFlight.Dec() }()
	start := time.Now()
	var m lineMsg
	if err := json.Unmarshal(msg.Data(), &m); err != nil || m.CustomID == "" || m.Batch == "" {
		w.log.Warn("fleet: a message on the lines stream is not a line; dropped", "subject", msg.Subject())
		msg.TermWithReason("not an owl batch line")
		return
	}
	meta, err := msg.Metadata()
	if err != nil {
		msg.Term()
		return
	}
	key := LineKey(m.CustomID)
	log := w.log.With("batch", m.Batch, "line", m.CustomID, "delivery", meta.NumDelivered)
	retry := func(reason string) {
		if meta.NumDelivered < uint64(w.c.cfg.MaxDeliver) {
			log.Info("fleet: handing a line back", "reason", reason)
			w.retried.Add(1)
			w.met.lines.WithLabelValues(kind, "retried").Inc()
			msg.NakWithDelay(time.Duration(meta.NumDelivered) * 500 * time.Millisecond)
			return
		}
		// The last delivery: the line fails, with why.
		res := Result{ID: "batch_req_dead_" + key, CustomID: m.CustomID, Error: &LineError{Code: "max_deliveries",
			Message: fmt.Sprintf("failed on each of %d deliveries; the last: %s", meta.NumDelivered, reason)}}
		if err := w.store(m.Batch, key, res); err != nil {
			log.Warn("fleet: storing a dead line's result", "err", err)
			return // the advisory dead-letters it
		}
		dead := nats.NewMsg("owl.dead." + m.Batch)
		dead.Data = msg.Data()
		dead.Header.Set("Owl-Reason", res.Error.Message)
		dead.Header.Set("Owl-Line-Subject", msg.Subject())
		pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		w.c.js.PublishMsg(pctx, dead)
		cancel()
		w.deads.Add(1)
		w.met.lines.WithLabelValues(kind, "dead").Inc()
		msg.Ack()
	}
	if m.Blob != "" {
		gctx, cancel := context.WithTimeout(ctx, time.Minute)
		m.Body, err = w.c.blobs.GetBytes(gctx, m.Blob)
		cancel()
		if err != nil {
			retry("reading its body from the object store: " + err.Error())
			return
		}
	}

	// The line runs; the stream hears it is under way every third of its
	// ack time.
	runCtx, cancelRun := context.WithCancel(ctx)
	if w.o.LineTimeout > 0 {
		runCtx, cancelRun = context.WithTimeout(ctx, w.o.LineTimeout)
	}
	progress := make(chan struct{})
	go func() {
		t := time.NewTicker(max(w.c.cfg.AckWait/3, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-t.C:
				msg.InProgress()
			case <-progress:
				return
			}
		}
	}()
	res, ok := w.run.RunRequest(runCtx, m.Request)
	timedOut := errors.Is(runCtx.Err(), context.DeadlineExceeded)
	close(progress)
	cancelRun()
	switch {
	case !ok && timedOut:
		retry(fmt.Sprintf("it ran past the worker's line time limit of %s", w.o.LineTimeout))
		return
	case !ok:
		// The worker is stopping: the line goes to another.
		w.retried.Add(1)
		w.met.lines.WithLabelValues(kind, "retried").Inc()
		msg.Nak()
		return
	case res.Response != nil && (res.Response.StatusCode >= 500 || res.Response.StatusCode == 429):
		// The worker could not run it now (memory, a model that would not
		// load, a full queue): another delivery may.
		retry(fmt.Sprintf("status %d: %s", res.Response.StatusCode, errorMessage(res.Response.Body)))
		return
	}
	// The answer is not run again for want of a place to keep it: the
	// worker holds the line and tries again until it is stored (a store
	// that filled up is emptied as servers collect), or until it stops.
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := w.store(m.Batch, key, res)
		if err == nil {
			break
		}
		w.met.lines.WithLabelValues(kind, "store_failed").Inc()
		if errors.Is(err, nats.ErrConnectionClosed) {
			return // the worker is cut off: the line's ack time runs out, and it goes to another
		}
		log.Warn("fleet: storing a result failed; trying again", "err", err, "in", wait)
		if sleep(ctx, wait); ctx.Err() != nil {
			w.retried.Add(1)
			msg.Nak()
			return
		}
		msg.InProgress()
	}
	actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		// Delivered again later, it overwrites this result.
		log.Warn("fleet: acknowledging a line", "err", err)
	}
	w.done.Add(1)
	w.met.lines.WithLabelValues(kind, "done").Inc()
	w.met.seconds.WithLabelValues(kind).Observe(time.Since(start).Seconds())
}

func (w *worker) store(batch, key string, res Result) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return w.c.putResult(ctx, batch, key, w.o.ID, res)
}

// errorMessage is the message of an API error body, or the body.
func errorMessage(body []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	if len(body) > 200 {
		body = body[:200]
	}
	return string(body)
}
