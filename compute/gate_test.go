package compute

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitWaiters waits until n callers are queued on g.
func waitWaiters(t *testing.T, g *Gate, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.mu.Lock()
		got := len(g.waiters)
		g.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGateNeverExceedsCapacity(t *testing.T) {
	g := NewGate(4)
	var inUse, worst atomic.Int64
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			n := 1 + i%4
			held := g.Acquire(i%3, n)
			if held != n {
				t.Errorf("acquired %d units, asked %d", held, n)
			}
			now := inUse.Add(int64(held))
			for {
				w := worst.Load()
				if now <= w || worst.CompareAndSwap(w, now) {
					break
				}
			}
			time.Sleep(100 * time.Microsecond)
			inUse.Add(-int64(held))
			g.Release(held)
		})
	}
	wg.Wait()
	if w := worst.Load(); w > 4 {
		t.Fatalf("%d units in use at once, capacity 4", w)
	}
	st := g.Stats()
	if st.Acquired != 64 || st.MaxUsed > 4 || st.Waited == 0 {
		t.Fatalf("stats %+v", st)
	}
	if g.used != 0 || len(g.waiters) != 0 {
		t.Fatalf("left used %d, %d waiters", g.used, len(g.waiters))
	}
}

func TestGateOrder(t *testing.T) {
	g := NewGate(2)
	held := g.Acquire(0, 0) // everything
	if held != 2 {
		t.Fatalf("n=0 took %d units, want all 2", held)
	}
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	enter := func(name string, prio, n int, queued int) {
		wg.Go(func() {
			h := g.Acquire(prio, n)
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			g.Release(h)
		})
		waitWaiters(t, g, queued)
	}
	enter("batch", -1, 1, 1)
	enter("normal-1", 0, 2, 2)
	enter("normal-2", 0, 2, 3)
	enter("interactive", 1, 5, 4) // more than the capacity: all of it
	g.Release(held)
	wg.Wait()
	want := []string{"interactive", "normal-1", "normal-2", "batch"}
	if !slices.Equal(order, want) {
		t.Fatalf("admitted %v, want %v", order, want)
	}
}

// A waiter needing every unit is not overtaken by smaller ones arriving
// after it.
func TestGateNoStarvation(t *testing.T) {
	g := NewGate(2)
	a := g.Acquire(0, 1)
	done := make(chan struct{})
	go func() {
		h := g.Acquire(0, 2)
		g.Release(h)
		close(done)
	}()
	waitWaiters(t, g, 1)
	// One unit is free, but the big waiter is first in line.
	got := make(chan struct{})
	go func() {
		h := g.Acquire(0, 1)
		close(got)
		g.Release(h)
	}()
	waitWaiters(t, g, 2)
	select {
	case <-got:
		t.Fatal("a later, smaller request overtook the waiter needing every unit")
	case <-time.After(20 * time.Millisecond):
	}
	g.Release(a)
	<-done
	<-got
}

func TestNilGate(t *testing.T) {
	var g *Gate
	ran := false
	g.Do(1, 4, func() { ran = true })
	if !ran || g.Capacity() != 0 || g.Stats() != (Stats{}) {
		t.Fatal("a nil gate must admit at once and count nothing")
	}
}

func TestReleaseTooMuchPanics(t *testing.T) {
	g := NewGate(2)
	defer func() {
		if recover() == nil {
			t.Fatal("releasing units never acquired did not panic")
		}
	}()
	g.Release(1)
}

// AcquireContext turns callers away when the queue is full, and a caller
// whose context ends leaves the queue without holding units, letting
// those behind it in.
func TestGateAcquireContext(t *testing.T) {
	g := NewGate(2)
	ctx := context.Background()
	held, err := g.AcquireContext(ctx, 0, 2, 1)
	if err != nil || held != 2 {
		t.Fatalf("free gate: %d, %v", held, err)
	}
	// One waiter may wait; it asks for both units and blocks one asking
	// for one behind it (arrival order).
	leave, cancel := context.WithCancelCause(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := g.AcquireContext(leave, 0, 2, 1)
		errc <- err
	}()
	waitWaiters(t, g, 1)
	if _, err := g.AcquireContext(ctx, 0, 1, 1); !errors.Is(err, ErrFull) {
		t.Fatalf("a second waiter with room for one: %v", err)
	}
	small := make(chan int, 1)
	go func() {
		n, _ := g.AcquireContext(ctx, 0, 1, -1) // unbounded
		small <- n
	}()
	waitWaiters(t, g, 2)
	g.Release(1) // one unit free: the first waiter still does not fit
	select {
	case <-small:
		t.Fatal("a later waiter went ahead of the first")
	case <-time.After(20 * time.Millisecond):
	}
	gone := errors.New("gone")
	cancel(gone)
	if err := <-errc; !errors.Is(err, gone) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	if n := <-small; n != 1 {
		t.Fatalf("the waiter behind got %d units", n)
	}
	g.Release(2)
	st := g.Stats()
	if g.Used() != 0 || g.Waiting() != 0 || st.Refused != 1 || st.Left != 1 || st.Acquired != 2 {
		t.Fatalf("used %d, waiting %d, stats %+v", g.Used(), g.Waiting(), st)
	}
	// A context already ended is refused before queueing.
	done, stop := context.WithCancel(ctx)
	stop()
	if _, err := g.AcquireContext(done, 0, 1, -1); !errors.Is(err, context.Canceled) {
		t.Fatalf("ended context: %v", err)
	}
}

// Callers that come and go under contention leave no units held.
func TestGateAcquireContextChurn(t *testing.T) {
	g := NewGate(3)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%5)*100*time.Microsecond)
			defer cancel()
			n, err := g.AcquireContext(ctx, i%2, 1+i%3, 8)
			if err == nil {
				time.Sleep(50 * time.Microsecond)
				g.Release(n)
			}
		})
	}
	wg.Wait()
	if g.Used() != 0 || g.Waiting() != 0 {
		t.Fatalf("used %d, waiting %d after every caller left", g.Used(), g.Waiting())
	}
}
