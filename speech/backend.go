package speech

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// A Backend opens a recognizer for a model file.
type Backend func(ctx context.Context, path string, o LoadOptions) (Recognizer, error)

// NativeBackend is owl's own Whisper on ggml.
const NativeBackend = "native"

var backends = struct {
	sync.Mutex // guards m
	m          map[string]Backend
}{m: map[string]Backend{
	NativeBackend: func(ctx context.Context, path string, o LoadOptions) (Recognizer, error) { return Load(ctx, path, o) },
}}

// RegisterBackend makes a recognizer backend available to Open under name;
// optional backends (such as whispercpp, built with its tag) register
// themselves when linked in.
func RegisterBackend(name string, b Backend) {
	backends.Lock()
	defer backends.Unlock()
	backends.m[name] = b
}

// Open loads the model at path with the named backend ("" is native).
func Open(ctx context.Context, backend, path string, o LoadOptions) (Recognizer, error) {
	if backend == "" {
		backend = NativeBackend
	}
	backends.Lock()
	b, ok := backends.m[backend]
	var names []string
	for n := range backends.m {
		names = append(names, n)
	}
	backends.Unlock()
	if !ok {
		slices.Sort(names)
		return nil, fmt.Errorf("%w: speech backend %q is not in this build (have: %s)", ErrBadOption, backend, strings.Join(names, ", "))
	}
	return b(ctx, path, o)
}

// Describer is implemented by recognizers that describe their model.
type Describer interface{ Describe() string }
