package compute

import (
	"runtime"
	"sync"
	"time"
)

// Spare estimates how many of the machine's CPUs other programs leave
// free: the CPUs, less the CPU time the other programs ran over the last
// moments (niced ones too: they still take a core for a time slice now
// and then, which is what costs). It reads /proc/stat and this process's
// own CPU time at most every spareInterval; where /proc/stat cannot be
// read it reports every CPU free.
//
// Small graphs use it to choose their threads: ggml's threads spin at the
// barrier after every op, and when another program holds a core the
// thread waiting there spins for the whole of the other's time slice, so
// a decoder step that takes 3 ms alone takes ten times that beside a busy
// program with two threads, and less with one.
func Spare() float64 {
	spare.mu.Lock()
	defer spare.mu.Unlock()
	now := time.Now()
	if now.Sub(spare.at) < spareInterval {
		return spare.value
	}
	busy, own, ok := cpuTimes()
	if !ok {
		spare.value = float64(runtime.NumCPU())
		return spare.value
	}
	if !spare.at.IsZero() {
		wall := now.Sub(spare.at).Seconds()
		others := ((busy - spare.busy) - (own - spare.own)) / wall
		free := float64(runtime.NumCPU()) - max(others, 0)
		// A moving average: a compile keeps the cores busy for seconds,
		// a short burst should not halve owl's threads.
		spare.value = 0.5*spare.value + 0.5*max(free, 0)
	}
	spare.at, spare.busy, spare.own = now, busy, own
	return spare.value
}

// spareInterval is how often Spare reads the machine's CPU time.
const spareInterval = 100 * time.Millisecond

var spare = struct {
	mu        sync.Mutex // guards the fields below
	at        time.Time
	busy, own float64 // seconds of CPU time at the last reading
	value     float64
}{value: float64(runtime.NumCPU())}
