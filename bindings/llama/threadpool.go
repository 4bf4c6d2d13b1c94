package llama

/*
#include "ggml.h"
#include "ggml-cpu.h"
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// Threadpool is a pool of CPU threads that computes a context's or a
// backend's graphs. Without one, ggml starts and joins threads for every
// graph, which for the small graphs of a decode step costs more than the
// step itself; with one, the threads sleep between graphs (they do not
// poll for work, so that idle models leave the cores to busy ones) and
// wake for the next. Close it after whatever computes with it.
type Threadpool struct {
	once sync.Once
	p    *C.struct_ggml_threadpool
	n    int
}

// NewThreadpool starts a pool of n threads.
func NewThreadpool(n int) (*Threadpool, error) {
	Init()
	if n < 1 || n > C.GGML_MAX_N_THREADS {
		return nil, fmt.Errorf("threadpool of %d threads (want 1 to %d)", n, C.GGML_MAX_N_THREADS)
	}
	params := C.ggml_threadpool_params_default(C.int(n))
	params.poll = 0
	p := C.ggml_threadpool_new(&params)
	if p == nil {
		return nil, fmt.Errorf("could not start a threadpool of %d threads", n)
	}
	return &Threadpool{p: p, n: n}, nil
}

// Threads is the number of threads in the pool.
func (t *Threadpool) Threads() int { return t.n }

// Native is the pool's ggml_threadpool, for the ggml binding.
func (t *Threadpool) Native() unsafe.Pointer { return unsafe.Pointer(t.p) }

// Close stops the threads. It is idempotent.
func (t *Threadpool) Close() {
	t.once.Do(func() { C.ggml_threadpool_free(t.p) })
}
