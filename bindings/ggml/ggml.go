// Package ggml is the tensor API owl's own networks (Whisper, Silero VAD)
// are written in: ggml's CPU backend reached through ollama's ml package.
//
// A Backend holds a model's weights, loaded from a GGUF file. A Graph is the
// scratch space of one evaluation: build it from weights, inputs and ops,
// Compute it, read the results, Close it. A Store holds tensors that outlive
// graphs (KV caches). Methods of one Graph or Store must not be called
// concurrently; one Backend computes one graph at a time.
//
// # No native aborts
//
// ggml asserts its preconditions and aborts the process when one fails: a
// graph context with no room for another tensor, operands whose shapes do
// not fit the op, a view past the end of its tensor. This package checks
// every one of them in Go before it calls ggml, so that no input can bring
// the process down. A Graph holds at most Capacity nodes (ggml objects and
// the weights and stored tensors it reads, which bounds what the graph and
// ggml's scheduler hold); an op that would go past it, or whose operands do
// not fit, is not made: it returns the zero Tensor, every later op on the
// graph does nothing, and Compute and Reserve return the first error
// (ErrGraphFull, or ErrShape naming the op and the shapes). Builders
// that put a variable amount of work into one graph (the decoder steps of
// concurrent transcriptions) read Used after building a graph of known
// shape to learn what each share costs, and split the work so that it
// fits.
package ggml

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync/atomic"

	"github.com/ollama/ollama/ml"
	mlggml "github.com/ollama/ollama/ml/backend/ggml"

	"github.com/owlengine/owl/bindings/llama"
)

// ErrCompute wraps failures of the native backend (allocation, computation).
var ErrCompute = errors.New("ggml backend")

// ErrGraphFull is returned for a graph built past its Capacity.
var ErrGraphFull = errors.New("ggml graph full")

// ErrShape is returned for an op whose operands ggml would refuse (shapes
// that do not fit, a view past the end of its tensor, a non-contiguous
// operand where one must be contiguous).
var ErrShape = errors.New("ggml tensor shapes")

// Type is a tensor element type for inputs and stored tensors.
type Type int

// Element types of created tensors.
const (
	F32 Type = iota
	F16
	I32
)

func (t Type) ml() ml.DType {
	switch t {
	case F16:
		return ml.DTypeF16
	case I32:
		return ml.DTypeI32
	}
	return ml.DTypeF32
}

// Options configure a Backend.
type Options struct {
	Threads   int  // CPU threads; 0 means runtime.NumCPU()
	FlashAttn bool // fused attention kernels
	// Device is the GPU (llama.Devices' name, "Vulkan0") the weights go
	// to, and with them the graph ops that read them; "" keeps everything
	// on the CPU.
	Device string
}

// ErrNoDevice is returned for a Device no loaded backend has.
var ErrNoDevice = errors.New("no such GPU")

// everyLayer is a layer list past any model's layer count: ollama's ml
// package puts a tensor on a GPU when the number in its name (its block)
// is in the list, the output layer (the block count) included.
var everyLayer = func() []int {
	l := make([]int, 1024)
	for i := range l {
		l[i] = i
	}
	return l
}()

// Backend holds the weights of one model.
type Backend struct {
	b        ml.Backend
	threads  int
	fa       bool
	closed   bool
	capacity int // nodes a graph may hold (see Graph.Capacity)
}

// Load reads the weights of the GGUF file at path.
func Load(ctx context.Context, path string, o Options) (b *Backend, err error) {
	llama.Init() // one ggml: backends loaded and logs routed into slog once
	if o.Threads <= 0 {
		o.Threads = runtime.NumCPU()
	}
	defer recoverInto(&err, "loading "+path)
	fa := ml.FlashAttentionDisabled
	if o.FlashAttn {
		fa = ml.FlashAttentionEnabled
	}
	params := ml.BackendParams{AllocMemory: true, NumThreads: o.Threads, FlashAttention: fa}
	if o.Device != "" {
		d, ok := llama.DeviceByName(o.Device)
		if !ok || !d.IsGPU() {
			return nil, fmt.Errorf("%w %q", ErrNoDevice, o.Device)
		}
		id, lib := d.BackendID()
		params.GPULayers = ml.GPULayersList{{DeviceID: ml.DeviceID{ID: id, Library: lib}, Layers: everyLayer}}
	}
	mb, err := mlggml.New(path, params)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCompute, path, err)
	}
	if err := mb.Load(ctx, nil); err != nil {
		mb.Close()
		return nil, fmt.Errorf("%w: loading %s: %v", ErrCompute, path, err)
	}
	// A graph context and the backend's scheduler are both made for the
	// same number of nodes; probe it from an empty context.
	probe := mb.NewContext()
	capacity := probe.MaxGraphNodes()
	probe.Close()
	if _, err := cpuBackends(mb); err != nil {
		mb.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrCompute, path, err)
	}
	return &Backend{b: mb, threads: o.Threads, fa: o.FlashAttn, capacity: capacity}, nil
}

// recoverInto turns a panic of the ml package (which panics on allocation
// and compute failures) into an error.
func recoverInto(err *error, what string) {
	if r := recover(); r != nil {
		if e, ok := r.(error); ok {
			*err = fmt.Errorf("%w: %s: %w", ErrCompute, what, e)
		} else {
			*err = fmt.Errorf("%w: %s: %v", ErrCompute, what, r)
		}
	}
}

// Close frees the weights. It is idempotent.
func (b *Backend) Close() {
	if !b.closed {
		b.closed = true
		b.b.Close()
	}
}

// Threads is the number of CPU threads the backend computes with.
func (b *Backend) Threads() int { return b.threads }

// GraphCapacity is the number of nodes each of the backend's graphs holds.
func (b *Backend) GraphCapacity() int { return b.capacity }

// Weight returns the weight tensor named name.
func (b *Backend) Weight(name string) (Tensor, error) {
	t := b.b.Get(name)
	if t == nil {
		return Tensor{}, fmt.Errorf("weight %q is missing", name)
	}
	return Tensor{t: t, leaf: new(leaf)}, nil
}

// Tensor is a node of a graph, a weight, or a stored tensor. The zero
// Tensor is what an op returns when it could not be made.
type Tensor struct {
	t ml.Tensor
	// leaf is set for weights and stored tensors, which a graph reads
	// without holding them: each counts once against the capacity of
	// every graph that reads it.
	leaf *leaf
}

// leaf marks the last graph that counted a weight or stored tensor.
type leaf struct{ graph atomic.Uint64 }

// Shape is the tensor's dimensions, innermost first.
func (t Tensor) Shape() []int {
	if t.t == nil {
		return nil
	}
	return t.t.Shape()
}

// Dim is the size of dimension n (0 for the zero Tensor).
func (t Tensor) Dim(n int) int {
	if t.t == nil {
		return 0
	}
	return t.t.Dim(n)
}

// Stride is the byte stride of dimension n (0 for the zero Tensor).
func (t Tensor) Stride(n int) int {
	if t.t == nil {
		return 0
	}
	return t.t.Stride(n)
}

// Valid reports whether t holds a tensor.
func (t Tensor) Valid() bool { return t.t != nil }

// Floats returns the values of a computed f32 tensor (nil before Compute).
func (t Tensor) Floats() []float32 {
	if t.t == nil {
		return nil
	}
	return t.t.Floats()
}

// Graph is the scratch space of one evaluation.
type Graph struct {
	b        *Backend
	ctx      ml.Context
	id       uint64
	capacity int
	used     int   // nodes taken: objects, and the weights and stored tensors read
	objects  int   // ggml objects made in the graph's context
	threads  int   // the threads it computes with (0: the backend's)
	err      error // the first op that could not be made
}

var graphIDs atomic.Uint64

// NewGraph starts a graph.
func (b *Backend) NewGraph() *Graph {
	return &Graph{b: b, ctx: b.b.NewContext(), id: graphIDs.Add(1), capacity: b.capacity}
}

// Close frees the graph's tensors.
func (g *Graph) Close() { g.ctx.Close() }

// SetThreads makes the graph compute with n threads (1 to the backend's)
// instead of the backend's.
func (g *Graph) SetThreads(n int) { g.threads = min(max(n, 1), g.b.threads) }

func (g *Graph) threadCount() int {
	if g.threads > 0 {
		return g.threads
	}
	return g.b.threads
}

// Capacity is the number of nodes the graph may hold: ggml objects made in
// it, and the weights and stored tensors it reads.
func (g *Graph) Capacity() int { return g.capacity }

// Used is the number of nodes the graph holds so far.
func (g *Graph) Used() int { return g.used }

// Err is the error of the first op that could not be made, if any.
func (g *Graph) Err() error { return g.err }

// fail records the first error of the graph's ops.
func (g *Graph) fail(err error) {
	if g.err == nil {
		g.err = err
	}
}

// ready reports whether an op may read operands: the graph has not
// failed and every operand was made.
func (g *Graph) ready(name string, operands ...Tensor) bool {
	if g.err != nil {
		return false
	}
	for _, o := range operands {
		if o.t == nil {
			g.fail(fmt.Errorf("%w: %s: an operand was not made", ErrShape, name))
			return false
		}
	}
	return true
}

// op reserves room for an op that makes objects ggml tensors from
// operands (which ready has accepted), and reports whether the graph has
// it. Each weight or stored tensor among the operands takes one node the
// first time the graph reads it.
func (g *Graph) op(name string, objects int, operands ...Tensor) bool {
	if g.err != nil {
		return false
	}
	need := objects
	for _, o := range operands {
		if o.leaf != nil && o.leaf.graph.Load() != g.id {
			need++
		}
	}
	if g.used+need > g.capacity {
		g.fail(fmt.Errorf("%w: %s needs %d more nodes; %d of %d are taken", ErrGraphFull, name, need, g.used, g.capacity))
		return false
	}
	for _, o := range operands {
		if o.leaf != nil {
			o.leaf.graph.Store(g.id)
		}
	}
	g.used += need
	g.objects += objects
	return true
}

// check fails the graph with an ErrShape error unless ok.
func (g *Graph) check(ok bool, format string, args ...any) bool {
	if !ok {
		g.fail(fmt.Errorf("%w: "+format, append([]any{ErrShape}, args...)...))
	}
	return ok
}

// input makes an input tensor of values, after checking its shape.
func (g *Graph) input(n int, shape []int, make func() ml.Tensor) (out Tensor) {
	if !g.check(validShape(shape) && elements(shape) == n, "input of %d values as %v", n, shape) || !g.op("input", 1) {
		return Tensor{}
	}
	defer func() {
		if r := recover(); r != nil { // the buffer could not be allocated
			g.fail(fmt.Errorf("%w: allocating an input: %v", ErrCompute, r))
			out = Tensor{}
		}
	}()
	return Tensor{t: make()}
}

// Input makes an f32 input tensor holding values.
func (g *Graph) Input(values []float32, shape ...int) Tensor {
	return g.input(len(values), shape, func() ml.Tensor { return g.ctx.Input().FromFloats(values, shape...) })
}

// InputInts makes an i32 input tensor holding values.
func (g *Graph) InputInts(values []int32, shape ...int) Tensor {
	return g.input(len(values), shape, func() ml.Tensor { return g.ctx.Input().FromInts(values, shape...) })
}

// InputF16 makes an f16 input tensor from values (converted).
func (g *Graph) InputF16(values []float32, shape ...int) Tensor {
	return g.Input(values, shape...).Cast(g, F16)
}

// Forward adds side-effect nodes (copies into stored tensors) to the graph
// now, so that later nodes see their result.
func (g *Graph) Forward(ts ...Tensor) {
	if g.err != nil {
		return
	}
	for _, t := range ts {
		if t.t == nil {
			g.fail(fmt.Errorf("%w: forward: a tensor was not made", ErrShape))
			return
		}
		g.ctx.Forward(t.t)
	}
}

// Compute evaluates the graph up to outs; their Floats are then available.
// A graph whose building failed is not evaluated: Compute returns the
// first error.
func (g *Graph) Compute(outs ...Tensor) (err error) {
	if g.err != nil {
		return g.err
	}
	mts := make([]ml.Tensor, len(outs))
	for i, t := range outs {
		if t.t == nil {
			return fmt.Errorf("%w: compute: an output was not made", ErrShape)
		}
		mts[i] = t.t
	}
	return withCPU(g.b.b, g.threadCount(), func() {
		defer recoverInto(&err, "compute")
		// The CPU backend computes synchronously: once Compute returns,
		// the shared backend is free and the outputs are ready.
		g.ctx.Forward(mts...).Compute(mts...)
	})
}

// Reserve allocates the compute memory the graph up to outs needs, without
// computing it. Reserving the largest graphs a model will run at load time
// spares reallocations (and page faults) while it runs.
func (g *Graph) Reserve(outs ...Tensor) (err error) {
	if g.err != nil {
		return g.err
	}
	for _, t := range outs {
		if t.t == nil {
			return fmt.Errorf("%w: reserve: an output was not made", ErrShape)
		}
	}
	return withCPU(g.b.b, g.b.threads, func() {
		defer recoverInto(&err, "reserving compute memory")
		for _, t := range outs {
			g.ctx.Forward(t.t)
		}
		g.ctx.Reserve()
	})
}

// storeCapacity is the number of tensors a Store holds.
const storeCapacity = 1024

// Store holds tensors that outlive graphs, such as KV caches.
type Store struct {
	ctx ml.Context
	n   int
}

// NewStore makes an empty store.
func (b *Backend) NewStore() *Store { return &Store{ctx: b.b.NewContextSize(storeCapacity)} }

// Zeros allocates a stored tensor of zeros.
func (s *Store) Zeros(t Type, shape ...int) (out Tensor, err error) {
	switch {
	case !validShape(shape):
		return Tensor{}, fmt.Errorf("%w: stored tensor of shape %v", ErrShape, shape)
	case s.n >= storeCapacity:
		return Tensor{}, fmt.Errorf("%w: a store holds at most %d tensors", ErrGraphFull, storeCapacity)
	}
	defer recoverInto(&err, "allocating a stored tensor")
	s.n++
	// Layer 0's buffer: the GPU's when the weights are there (caches that
	// stayed in RAM would be copied to the device at every graph), the
	// CPU's otherwise.
	return Tensor{t: s.ctx.Layer(0).Zeros(t.ml(), shape...), leaf: new(leaf)}, nil
}

// Close frees the stored tensors.
func (s *Store) Close() { s.ctx.Close() }

// validShape reports whether shape has 1 to 4 dimensions, each at least 1.
func validShape(shape []int) bool {
	if len(shape) < 1 || len(shape) > 4 {
		return false
	}
	for _, d := range shape {
		if d < 1 || d > math.MaxInt32 {
			return false
		}
	}
	return true
}

// elements is the number of elements of shape, or -1 past MaxInt64.
func elements(shape []int) int {
	n := 1
	for _, d := range shape {
		if d != 0 && n > math.MaxInt64/d {
			return -1
		}
		n *= d
	}
	return n
}
