package llama

/*
#cgo CPPFLAGS: -I${SRCDIR}/../../cgo/llamashim
#include <stdlib.h>
#include "owl_llama.h"
#include "mtmd-helper.h"
#include "ggml.h"
#include "ggml-backend.h"

extern void owlLlamaLog(int level, char *text, void *data);
*/
import "C"

import (
	"sync"
	"unsafe"

	_ "github.com/owlengine/owl/cgo/llamashim"

	ollama "github.com/ollama/ollama/llama"
)

var initOnce sync.Once

// Init loads the ggml backends (the GPU backend libraries of LibraryPath)
// and routes native log output into log/slog.
// Every entry point calls it; calling it again does nothing.
func Init() {
	initOnce.Do(func() {
		C.ggml_log_set(C.ggml_log_callback(C.owlLlamaLog), nil)
		loadBackends()
		ollama.BackendInit()
		C.llama_log_set(C.ggml_log_callback(C.owlLlamaLog), nil)
		C.ggml_log_set(C.ggml_log_callback(C.owlLlamaLog), nil)
		C.mtmd_helper_log_set(C.ggml_log_callback(C.owlLlamaLog), nil) // mtmd's and its helpers' logs
	})
}

// cbytes returns a pointer to the first byte of b for a call that does not
// keep it, or nil when b is empty.
func cbytes(b []byte) *C.char {
	if len(b) == 0 {
		return nil
	}
	return (*C.char)(unsafe.Pointer(&b[0]))
}
