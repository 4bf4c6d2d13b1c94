package llama

/*
#include "ggml.h"
*/
import "C"

// TypeLayout returns the block size and bytes per block of ggml type t as the
// compiled ggml knows it, and false for a type it does not (removed or out
// of range). Tests compare owl's own table with it.
func TypeLayout(t int) (blockSize, typeSize uint64, ok bool) {
	if t < 0 || t >= int(C.GGML_TYPE_COUNT) {
		return 0, 0, false
	}
	bs := C.ggml_blck_size(C.enum_ggml_type(t))
	if bs == 0 {
		return 0, 0, false
	}
	return uint64(bs), uint64(C.ggml_type_size(C.enum_ggml_type(t))), true
}
