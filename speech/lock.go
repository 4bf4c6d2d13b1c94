package speech

import "sync"

// priorityLock is a mutex whose waiters are served highest priority first,
// then in order of arrival: live dictation's graphs go before a batch
// transcription's on a shared model.
type priorityLock struct {
	mu      sync.Mutex // guards the fields below
	held    bool
	next    uint64
	waiters []*lockWaiter
}

type lockWaiter struct {
	prio  int
	order uint64
	ready chan struct{} // closed when the lock is handed over
}

func (l *priorityLock) lock(prio int) {
	l.mu.Lock()
	if !l.held {
		l.held = true
		l.mu.Unlock()
		return
	}
	w := &lockWaiter{prio: prio, order: l.next, ready: make(chan struct{})}
	l.next++
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()
	<-w.ready
}

// unlock hands the lock to the first waiter, if any.
func (l *priorityLock) unlock() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.waiters) == 0 {
		l.held = false
		return
	}
	best := 0
	for i, w := range l.waiters {
		if b := l.waiters[best]; w.prio > b.prio || w.prio == b.prio && w.order < b.order {
			best = i
		}
	}
	w := l.waiters[best]
	l.waiters = append(l.waiters[:best], l.waiters[best+1:]...)
	close(w.ready)
}
