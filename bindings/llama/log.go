package llama

import "C"

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"unsafe"
)

// Native log levels (enum ggml_log_level).
const (
	nativeDebug = 1
	nativeInfo  = 2
	nativeWarn  = 3
	nativeError = 4
	nativeCont  = 5
)

// nativeLog assembles the fragments llama.cpp and ggml log into lines and
// hands each line to slog. Native code may log from several threads at once.
var nativeLog struct {
	mu      sync.Mutex // guards the fields below
	line    strings.Builder
	level   int
	capture *[]string // error lines recorded while a load runs, or nil
}

//export owlLlamaLog
func owlLlamaLog(level C.int, text *C.char, _ unsafe.Pointer) {
	s := C.GoString(text)
	nativeLog.mu.Lock()
	defer nativeLog.mu.Unlock()
	if int(level) != nativeCont {
		nativeLog.level = int(level)
	}
	for {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			nativeLog.line.WriteString(s)
			return
		}
		nativeLog.line.WriteString(s[:i])
		emitNativeLine(nativeLog.level, nativeLog.line.String())
		nativeLog.line.Reset()
		s = s[i+1:]
	}
}

// emitNativeLine logs one complete native line; nativeLog.mu is held.
func emitNativeLine(level int, line string) {
	line = strings.TrimSpace(line)
	if line == "" {
		return
	}
	lv := slog.LevelDebug
	switch level {
	case nativeWarn:
		// llama.cpp warns about routine choices (a context shorter than
		// trained); they are information to owl's users.
		lv = slog.LevelInfo
	case nativeError:
		lv = slog.LevelError
		if nativeLog.capture != nil {
			// The caller returns these lines as its error; log them quietly.
			*nativeLog.capture = append(*nativeLog.capture, line)
			lv = slog.LevelDebug
		}
	}
	slog.Log(context.Background(), lv, line, "src", "llama.cpp")
}

// captureErrors runs fn and returns the native error lines logged meanwhile.
// Callers serialize through loadMu, so only one capture is active at a time.
func captureErrors(fn func()) []string {
	var lines []string
	nativeLog.mu.Lock()
	nativeLog.capture = &lines
	nativeLog.mu.Unlock()
	fn()
	nativeLog.mu.Lock()
	nativeLog.capture = nil
	nativeLog.mu.Unlock()
	return lines
}
