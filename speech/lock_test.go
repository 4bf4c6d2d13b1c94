package speech

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// Waiters get the lock highest priority first, then in order of arrival.
func TestPriorityLock(t *testing.T) {
	var l priorityLock
	l.lock(0)
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i, prio := range []int{0, -1, 1, 0, 1} {
		wg.Go(func() {
			l.lock(prio)
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			l.unlock()
		})
		for {
			l.mu.Lock()
			n := len(l.waiters)
			l.mu.Unlock()
			if n == i+1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	l.unlock()
	wg.Wait()
	if want := []int{2, 4, 0, 3, 1}; !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
	l.lock(0) // free again
	l.unlock()
}
