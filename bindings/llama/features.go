package llama

/*
#include "owl_llama.h"
*/
import "C"

import "strings"

// Feature is one capability a compiled ggml backend reports, such as the CPU
// backend's "AVX2" = "1".
type Feature struct {
	Backend string
	Name    string
	Value   string
}

// Features lists what every registered ggml backend was compiled with.
func Features() []Feature {
	Init()
	n := C.owl_backend_features(nil, 0)
	buf := make([]byte, int(n)+1)
	n = C.owl_backend_features(cbytes(buf), C.int32_t(len(buf)))
	var out []Feature
	for line := range strings.Lines(string(buf[:n])) {
		parts := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		if len(parts) == 3 {
			out = append(out, Feature{Backend: parts[0], Name: parts[1], Value: parts[2]})
		}
	}
	return out
}

// SystemInfo is llama.cpp's one-line summary of the compiled CPU support.
func SystemInfo() string {
	Init()
	return C.GoString(C.llama_print_system_info())
}
