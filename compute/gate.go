// Package compute shares the machine's CPU cores among the models that
// compute on them.
//
// ggml's CPU backend runs a graph on a pool of worker threads that spin
// while they wait for each other between operations. Two graphs computing
// at once with as many threads as there are cores (a transcription and a
// text model's decode step, say) therefore do not share the cores: each
// spins on cores the other needs, and both slow down by one to two orders
// of magnitude. A Gate prevents that: every graph evaluation takes as many
// units as it has threads, out of as many units as the machine has cores,
// and waits while they are not free. Waiters are served highest priority
// first, and in arrival order among equals.
//
// The same priority semaphore admits requests to a model (a speech
// model's transcriptions), with AcquireContext: a bounded number may wait,
// and a waiter leaves when its context ends.
package compute

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
)

// ErrFull is returned by AcquireContext when as many callers as it allows
// are already waiting.
var ErrFull = errors.New("too many waiting")

// Gate is a priority semaphore over CPU cores. The zero value is not
// usable; a nil *Gate admits everything at once.
type Gate struct {
	mu       sync.Mutex
	capacity int
	used     int
	next     uint64
	waiters  []*waiter
	stats    Stats // guarded by mu, as are used, next and waiters
}

type waiter struct {
	prio  int
	order uint64
	n     int
	ready chan struct{} // closed when the units are granted
}

// Stats count a Gate's use since it was made.
type Stats struct {
	Acquired int64 // callers admitted
	Waited   int64 // callers that had to wait (including those that left)
	Refused  int64 // callers AcquireContext turned away with ErrFull
	Left     int64 // callers whose context ended while they waited
	MaxUsed  int   // the most units held at one time
}

// NewGate returns a Gate of capacity units; capacity ≤ 0 means the number
// of CPUs.
func NewGate(capacity int) *Gate {
	if capacity <= 0 {
		capacity = runtime.NumCPU()
	}
	return &Gate{capacity: capacity}
}

var shared = NewGate(0)

// Shared is the process's Gate over all of the machine's CPUs, which every
// engine uses unless told otherwise: the cores are the machine's, however
// many engines a program makes.
func Shared() *Gate { return shared }

// Capacity is the number of units the Gate shares.
func (g *Gate) Capacity() int {
	if g == nil {
		return 0
	}
	return g.capacity
}

// Acquire takes n units (n ≤ 0, or more than the capacity, takes all of
// them) at priority prio, waiting until they are free and no waiter of
// higher priority, or of the same priority but earlier, is still waiting.
// It returns the units taken, to give back with Release.
func (g *Gate) Acquire(prio, n int) int {
	if g == nil {
		return 0
	}
	if n <= 0 || n > g.capacity {
		n = g.capacity
	}
	g.mu.Lock()
	g.stats.Acquired++
	if len(g.waiters) == 0 && g.used+n <= g.capacity {
		g.take(n)
		g.mu.Unlock()
		return n
	}
	g.stats.Waited++
	w := &waiter{prio: prio, order: g.next, n: n, ready: make(chan struct{})}
	g.next++
	g.waiters = append(g.waiters, w)
	g.mu.Unlock()
	<-w.ready
	return n
}

// AcquireContext is Acquire for callers that may give up: it returns
// ErrFull at once when maxWaiting callers (maxWaiting ≥ 0) are already
// waiting, and the cause of ctx's end if that comes first (the units are
// then not held).
func (g *Gate) AcquireContext(ctx context.Context, prio, n, maxWaiting int) (int, error) {
	if g == nil {
		return 0, nil
	}
	if n <= 0 || n > g.capacity {
		n = g.capacity
	}
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	g.mu.Lock()
	if len(g.waiters) == 0 && g.used+n <= g.capacity {
		g.stats.Acquired++
		g.take(n)
		g.mu.Unlock()
		return n, nil
	}
	if maxWaiting >= 0 && len(g.waiters) >= maxWaiting {
		g.stats.Refused++
		g.mu.Unlock()
		return 0, ErrFull
	}
	g.stats.Acquired++
	g.stats.Waited++
	w := &waiter{prio: prio, order: g.next, n: n, ready: make(chan struct{})}
	g.next++
	g.waiters = append(g.waiters, w)
	g.mu.Unlock()
	select {
	case <-w.ready:
		return n, nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	if i := slices.Index(g.waiters, w); i >= 0 {
		g.waiters = slices.Delete(g.waiters, i, i+1)
		g.stats.Acquired--
		g.stats.Left++
		g.grant() // it may have been the one blocking those behind it
		g.mu.Unlock()
		return 0, context.Cause(ctx)
	}
	g.mu.Unlock()
	// Granted as the context ended: give the units back.
	g.Release(n)
	g.mu.Lock()
	g.stats.Acquired--
	g.stats.Left++
	g.mu.Unlock()
	return 0, context.Cause(ctx)
}

// Release gives back n units taken by Acquire and admits the waiters that
// now fit, in order. The first waiter in order that does not fit blocks
// those after it, so that an evaluation needing every core is not starved
// by smaller ones.
func (g *Gate) Release(n int) {
	if g == nil || n == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.used -= n
	if g.used < 0 {
		panic("compute: Release of units not acquired")
	}
	g.grant()
}

// grant admits waiters in order while the first fits. g.mu is held.
func (g *Gate) grant() {
	for len(g.waiters) > 0 {
		best := 0
		for i, w := range g.waiters {
			if b := g.waiters[best]; w.prio > b.prio || w.prio == b.prio && w.order < b.order {
				best = i
			}
		}
		w := g.waiters[best]
		if g.used+w.n > g.capacity {
			return
		}
		g.waiters = append(g.waiters[:best], g.waiters[best+1:]...)
		g.take(w.n)
		close(w.ready)
	}
}

func (g *Gate) take(n int) {
	g.used += n
	g.stats.MaxUsed = max(g.stats.MaxUsed, g.used)
}

// Do runs f holding n units at priority prio.
func (g *Gate) Do(prio, n int, f func()) {
	held := g.Acquire(prio, n)
	defer g.Release(held)
	f()
}

// Waiting is the number of callers waiting.
func (g *Gate) Waiting() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.waiters)
}

// Used is the number of units held.
func (g *Gate) Used() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.used
}

// Stats returns the Gate's counters.
func (g *Gate) Stats() Stats {
	if g == nil {
		return Stats{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stats
}
