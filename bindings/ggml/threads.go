package ggml

/*
#include "ggml-backend.h"
#include "ggml-cpu.h"
*/
import "C"

import (
	"errors"
	"reflect"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ollama/ollama/ml"

	"github.com/owlengine/owl/bindings/llama"
)

// cpuBackends are the CPU backends of b's scheduler. The ml package keeps
// the scheduler in an unexported field, read here by name (the module is
// pinned; TestThreadpool fails should the field go).
func cpuBackends(b ml.Backend) ([]C.ggml_backend_t, error) {
	v := reflect.ValueOf(b)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, errors.New("ml backend is not a ggml backend")
	}
	f := v.Elem().FieldByName("sched")
	if !f.IsValid() || f.Kind() != reflect.Pointer {
		return nil, errors.New("ml backend has no scheduler")
	}
	sched := C.ggml_backend_sched_t(unsafe.Pointer(f.Pointer()))
	var out []C.ggml_backend_t
	for i := range int(C.ggml_backend_sched_get_n_backends(sched)) {
		if be := C.ggml_backend_sched_get_backend(sched, C.int(i)); C.ggml_backend_is_cpu(be) {
			out = append(out, be)
		}
	}
	return out, nil
}

// The ml package makes one CPU backend per process and every ml backend
// computes on it: its threads, its thread count and its work buffer are
// shared by every model owl runs on ggml. So graphs compute one at a time
// (computeMu), each with its own backend's thread count, on one pool of
// as many threads as the machine has CPUs, attached once.
var (
	computeMu  sync.Mutex // guards the shared CPU backend while a graph computes
	sharedPool *llama.Threadpool
	poolErr    error
	poolOnce   sync.Once
)

// withCPU runs f holding the shared CPU backend, set to compute b's
// graphs with threads threads.
func withCPU(b ml.Backend, threads int, f func()) error {
	cpus, err := cpuBackends(b)
	if err != nil {
		return err
	}
	poolOnce.Do(func() {
		if sharedPool, poolErr = llama.NewThreadpool(runtime.NumCPU()); poolErr == nil {
			for _, be := range cpus {
				C.ggml_backend_cpu_set_threadpool(be, C.ggml_threadpool_t(sharedPool.Native()))
			}
		}
	})
	if poolErr != nil {
		return poolErr
	}
	computeMu.Lock()
	defer computeMu.Unlock()
	for _, be := range cpus {
		C.ggml_backend_cpu_set_n_threads(be, C.int(min(threads, sharedPool.Threads())))
	}
	f()
	return nil
}
