package compute

import (
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
