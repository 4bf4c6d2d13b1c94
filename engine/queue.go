package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/owlengine/owl/compute"
	"github.com/owlengine/owl/speech"
)

// QueueWaitBuckets are the upper bounds, in seconds, of the buckets in
// which a model's queue waits are counted.
var QueueWaitBuckets = []float64{0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// WaitHistogram counts how long the requests admitted to a model waited
// for it: Buckets[i] is the number that waited at most
// QueueWaitBuckets[i] seconds (cumulative, as Prometheus counts).
type WaitHistogram struct {
	Buckets []uint64
	Count   uint64
	Sum     float64 // seconds
}

// queueStats are the counters of a model's queue: the waits of the
// requests it admitted, and the requests it turned away busy.
type queueStats struct {
	mu       sync.Mutex // guards wait
	wait     WaitHistogram
	rejected atomic.Int64
}

func (q *queueStats) observe(d time.Duration) {
	s := d.Seconds()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.wait.Buckets == nil {
		q.wait.Buckets = make([]uint64, len(QueueWaitBuckets))
	}
	for i, b := range QueueWaitBuckets {
		if s <= b {
			q.wait.Buckets[i]++
		}
	}
	q.wait.Count++
	q.wait.Sum += s
}

func (q *queueStats) snapshot() WaitHistogram {
	q.mu.Lock()
	defer q.mu.Unlock()
	h := q.wait
	h.Buckets = append(make([]uint64, 0, len(QueueWaitBuckets)), q.wait.Buckets...)
	if len(h.Buckets) == 0 {
		h.Buckets = make([]uint64, len(QueueWaitBuckets))
	}
	return h
}

// BusyError is ErrBusy with what is known of how long a place would take
// to free: RetryAfter, when positive, is the expected wait.
type BusyError struct {
	Reason     string
	RetryAfter time.Duration
}

func (e *BusyError) Error() string { return ErrBusy.Error() + ": " + e.Reason }

// Unwrap makes a BusyError an ErrBusy.
func (e *BusyError) Unwrap() error { return ErrBusy }

// errQueueWait is the cause of a wait that ran past Options.QueueWait.
var errQueueWait = errors.New("queue wait over")

// speechModel is a loaded speech model and the admission of its
// transcriptions: at most Options.Parallel run at once, at most
// Options.MaxQueue wait (highest priority first, then in arrival order),
// and a waiter leaves when its context ends or Options.QueueWait is over.
// Live transcriptions are admitted as whole streams by their callers (the
// server's stream limit) and do not take these slots.
type speechModel struct {
	rec speech.Recognizer
	slotQueue
}

// Close frees the recognizer.
func (m *speechModel) Close() error { return m.rec.Close() }

// slotQueue admits a model's requests to its places (a speech model's
// transcriptions at once, a voice's syntheses), most urgent first, and
// keeps the pace from which a newcomer's wait is estimated. what names a
// request in messages ("transcriptions").
type slotQueue struct {
	slots    *compute.Gate
	maxQueue int
	what     string
	queue    queueStats
	requests atomic.Int64

	mu sync.Mutex // guards service
	// service is a moving average of how long the model's requests run.
	service time.Duration
}

func newSlotQueue(places, maxQueue int, what string) slotQueue {
	return slotQueue{slots: compute.NewGate(places), maxQueue: maxQueue, what: what}
}

// expectedWait estimates how long a newcomer would wait for a slot: a
// round of the average request for each Parallel of those ahead of it (0
// before any request has finished, or with a slot free).
func (m *slotQueue) expectedWait() time.Duration {
	m.mu.Lock()
	service := m.service
	m.mu.Unlock()
	if m.slots.Used() < m.slots.Capacity() {
		return 0
	}
	rounds := m.slots.Waiting()/m.slots.Capacity() + 1
	return time.Duration(rounds) * service
}

// finished folds a request's running time into the average.
func (m *slotQueue) finished(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.service == 0 {
		m.service = d
	} else {
		m.service = (7*m.service + 3*d) / 10
	}
}

// metrics fills in the queue's counters.
func (m *slotQueue) metrics(mm *ModelMetrics) {
	mm.QueueDepth = m.slots.Waiting()
	mm.QueueWait = m.queue.snapshot()
	mm.Rejected = m.queue.rejected.Load()
	mm.Requests = m.requests.Load()
	mm.Running = m.slots.Used()
	mm.Slots = m.slots.Capacity()
}

// admit waits for one of m's slots; done gives it back, saying whether the
// request ran to its end (only those count toward the model's pace). A
// request that would wait longer than Options.QueueWait by the model's
// recent pace is turned away at once, with that wait as its RetryAfter.
func (e *Engine) admit(ctx context.Context, m *slotQueue, prio int, name string) (done func(completed bool), err error) {
	start := time.Now()
	wctx := ctx
	if e.opts.QueueWait > 0 {
		if wait := m.expectedWait(); wait > e.opts.QueueWait {
			m.queue.rejected.Add(1)
			return nil, &BusyError{RetryAfter: wait, Reason: fmt.Sprintf("%s runs %d %s at once and %d wait: about %s before a new one starts, more than the %s a request may wait",
				name, m.slots.Capacity(), m.what, m.slots.Waiting(), wait.Round(time.Second), e.opts.QueueWait)}
		}
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeoutCause(ctx, e.opts.QueueWait, errQueueWait)
		defer cancel()
	}
	n, err := m.slots.AcquireContext(wctx, prio, 1, m.maxQueue)
	switch {
	case errors.Is(err, compute.ErrFull):
		m.queue.rejected.Add(1)
		return nil, &BusyError{RetryAfter: m.expectedWait(), Reason: fmt.Sprintf("%d %s are waiting for %s", m.maxQueue, m.what, name)}
	case errors.Is(err, errQueueWait) && ctx.Err() == nil:
		m.queue.rejected.Add(1)
		return nil, &BusyError{RetryAfter: m.expectedWait(), Reason: fmt.Sprintf("waited %s for one of the %d %s %s runs at once",
			e.opts.QueueWait, m.slots.Capacity(), m.what, name)}
	case err != nil:
		return nil, err
	}
	m.queue.observe(time.Since(start))
	m.requests.Add(1)
	admitted := time.Now()
	return func(completed bool) {
		if completed {
			m.finished(time.Since(admitted))
		}
		m.slots.Release(n)
	}, nil
}
