package ggml

/*
#include "ggml.h"
*/
import "C"

import (
	"reflect"
	"unsafe"

	"github.com/ollama/ollama/ml"
)

// census counts, from ggml's own structures, what a graph built on ctx
// holds: the objects in its context, and the nodes and leaves of its
// graph (zero before the first Forward). The counts the package keeps in
// Go must bound these; the tests compare them. The ml package keeps the
// native pointers in unexported fields, which are read here by name.
func census(c ml.Context) (objects, nodes, leaves int) {
	v := reflect.ValueOf(c).Elem()
	ctx := (*C.struct_ggml_context)(unsafe.Pointer(v.FieldByName("ctx").Pointer()))
	used := int(C.ggml_used_mem(ctx))
	graph := (*C.struct_ggml_cgraph)(unsafe.Pointer(v.FieldByName("graph").Pointer()))
	if graph != nil {
		used -= int(C.ggml_graph_overhead_custom(C.size_t(c.MaxGraphNodes()), false))
		nodes = int(C.ggml_graph_n_nodes(graph))
		seen := map[*C.struct_ggml_tensor]bool{}
		for i := range nodes {
			seen[C.ggml_graph_node(graph, C.int(i))] = true
		}
		for i := range nodes {
			n := C.ggml_graph_node(graph, C.int(i))
			for _, s := range n.src {
				if s != nil && !seen[s] {
					seen[s] = true
					leaves++
				}
			}
		}
	}
	return used / int(C.ggml_tensor_overhead()), nodes, leaves
}
