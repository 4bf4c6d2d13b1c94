package ggml

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
)

// checkCensus compares what g counts with what ggml holds: the same
// objects, and at least as many nodes as the graph's nodes and leaves.
func checkCensus(t *testing.T, g *Graph) {
	t.Helper()
	objects, nodes, leaves := census(g.ctx)
	if objects != g.objects {
		t.Errorf("ggml holds %d objects, the graph counted %d", objects, g.objects)
	}
	if nodes+leaves > g.used {
		t.Errorf("ggml's graph has %d nodes and %d leaves, more than the %d counted", nodes, leaves, g.used)
	}
}

// Every op counts exactly the objects it makes in ggml's context, and the
// weights and stored tensors it reads bound the graph's leaves.
func TestOpsCountTheirNodes(t *testing.T) {
	for _, fa := range []bool{false, true} {
		b := backend(t, fa)
		w, _ := b.Weight("w") // [8, 4]
		s := b.NewStore()
		defer s.Close()
		cache, err := s.Zeros(F16, 8, 2, 40)
		if err != nil {
			t.Fatal(err)
		}
		g := b.NewGraph()
		x := g.Input(make([]float32, 16), 8, 2)
		y := w.Mulmat(g, x)                                          // [4, 2]
		y = y.Add(g, g.Input([]float32{1, 2, 3, 4}, 4))              // broadcast rows
		y = y.Mul(g, y).Scale(g, 0.5).Sqrt(g).Tanh(g).ReLU(g)        // elementwise
		z := x.LayerNorm(g, w.View(g, 0, 8), w.View(g, 32, 8), 1e-5) // weight rows as scale and bias
		z = z.GELUInPlace(g).Sigmoid(g).ReLUInPlace(g).Softmax(g)
		z = z.Concat(g, x, 1).Reshape(g, 8, 2, 2).Permute(g, 1, 0, 2, 3).Contiguous(g)
		ids := g.InputInts([]int32{3, 0}, 2)
		r := w.Rows(g, ids).Cast(g, F16).Cast(g, F32)
		q := g.Input(make([]float32, 8*2*5), 8, 2, 5)
		kc := cache.View(g, 0, 8, cache.Stride(1), 2, cache.Stride(2), 37)
		g.Forward(g.Input(make([]float32, 16), 8, 2).CopyTo(g, cache.View(g, 0, 16)))
		mask := g.Input(make([]float32, 37*5), 37, 5)
		a := q.Attention(g, kc, kc, mask, 0.3, false)
		a2 := q.Attention(g, kc, kc, Tensor{}, 0.3, false)
		var a4, a5 Tensor
		if !fa { // values cached transposed, few queries: the fused form
			vt, err := s.Zeros(F16, 40, 8, 2)
			if err != nil {
				t.Fatal(err)
			}
			vv := vt.View(g, 0, 37, vt.Stride(1), 8, vt.Stride(2), 2)
			a4 = q.Attention(g, kc, vv, mask, 0.3, true)
			a5 = q.Attention(g, kc, vv, Tensor{}, 0.3, true)
		}
		defer func(n int) { attnChunkBytes = n }(attnChunkBytes)
		attnChunkBytes = 4 * 37 * 2 * 2 // chunks of two queries
		a3 := q.Attention(g, kc, kc, mask, 0.3, false)
		attnChunkBytes = 16 << 20
		var aw Tensor
		if !fa {
			_, aw = q.AttentionWeights(g, kc, kc, 0.3, false)
		}
		img := g.Input(make([]float32, 30*3), 30, 1, 3, 1)
		cols := img.IM2Col(g, g.InputF16(make([]float32, 3*3*4), 3, 1, 3, 4), 1, 1, 1, 0, 1, 1)
		outs := []Tensor{y, z, r, a, a2, a3, cols}
		for _, o := range []Tensor{aw, a4, a5} {
			if o.Valid() {
				outs = append(outs, o)
			}
		}
		if err := g.Compute(outs...); err != nil {
			t.Fatalf("flash %v: %v", fa, err)
		}
		checkCensus(t, g)
		t.Logf("flash %v: %d objects, %d nodes of %d", fa, g.objects, g.Used(), g.Capacity())
		g.Close()
	}
}

// A graph built past its capacity refuses the ops that do not fit, and
// Compute says so; nothing reaches ggml's own (fatal) check.
func TestGraphFull(t *testing.T) {
	b := backend(t, false)
	w, _ := b.Weight("w")
	g := b.NewGraph()
	defer g.Close()
	x := g.Input(make([]float32, 8), 8, 1)
	made := 0
	for range 2 * g.Capacity() {
		y := w.Mulmat(g, x)
		if !y.Valid() {
			break
		}
		x = y.Reshape(g, 4).Concat(g, y.Reshape(g, 4), 0).Reshape(g, 8, 1)
		made++
	}
	err := g.Compute(x)
	if !errors.Is(err, ErrGraphFull) {
		t.Fatalf("after %d layers in a graph of %d: %v", made, g.Capacity(), err)
	}
	if g.Used() > g.Capacity() {
		t.Fatalf("%d nodes used of %d", g.Used(), g.Capacity())
	}
	checkCensus(t, g)
	t.Logf("%d layers fit; then: %v", made, err)
}

// Operands ggml would assert on give ErrShape instead.
func TestShapeErrors(t *testing.T) {
	b := backend(t, false)
	w, _ := b.Weight("w") // [8, 4]
	s := b.NewStore()
	defer s.Close()
	cache, err := s.Zeros(F16, 8, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Zeros(F32, 0, 3); !errors.Is(err, ErrShape) {
		t.Errorf("stored tensor of size 0: %v", err)
	}
	for _, tc := range []struct {
		name  string
		build func(g *Graph) Tensor
	}{
		{"input count", func(g *Graph) Tensor { return g.Input(make([]float32, 7), 8) }},
		{"input shape", func(g *Graph) Tensor { return g.Input(nil, 0) }},
		{"input dims", func(g *Graph) Tensor { return g.Input(make([]float32, 1), 1, 1, 1, 1, 1) }},
		{"mul_mat", func(g *Graph) Tensor { return w.Mulmat(g, g.Input(make([]float32, 6), 6)) }},
		{"mul_mat transposed", func(g *Graph) Tensor {
			return w.Permute(g, 1, 0, 2, 3).Mulmat(g, g.Input(make([]float32, 4), 4))
		}},
		{"add", func(g *Graph) Tensor { return w.Add(g, g.Input(make([]float32, 3), 3)) }},
		{"mul", func(g *Graph) Tensor { return g.Input(make([]float32, 3), 3).Mul(g, w) }},
		{"norm", func(g *Graph) Tensor {
			return w.LayerNorm(g, g.Input(make([]float32, 3), 3), g.Input(make([]float32, 8), 8), 1e-5)
		}},
		{"concat", func(g *Graph) Tensor { return w.Concat(g, g.Input(make([]float32, 6), 6), 1) }},
		{"concat dim", func(g *Graph) Tensor { return w.Concat(g, w, 4) }},
		{"reshape", func(g *Graph) Tensor { return w.Reshape(g, 5, 6) }},
		{"permute", func(g *Graph) Tensor { return w.Permute(g, 1, 1, 2, 3) }},
		{"permute range", func(g *Graph) Tensor { return w.Permute(g, 0, 4, 2, 3) }},
		{"view past the end", func(g *Graph) Tensor { return w.View(g, 8, 32) }},
		{"view strides", func(g *Graph) Tensor { return cache.View(g, 0, 8, 16, 5) }},
		{"view reaching past the end", func(g *Graph) Tensor { return cache.View(g, 0, 2, 70, 2) }},
		{"view odd shape", func(g *Graph) Tensor { return w.View(g, 0, 8, 32) }},
		{"view negative offset", func(g *Graph) Tensor { return w.View(g, -4, 1) }},
		{"cpy", func(g *Graph) Tensor { return g.Input(make([]float32, 3), 3).CopyTo(g, cache) }},
		{"get_rows", func(g *Graph) Tensor { return w.Rows(g, g.Input([]float32{1}, 1)) }},
		{"unary on columns", func(g *Graph) Tensor { return w.Permute(g, 1, 0, 2, 3).GELUInPlace(g) }},
		{"soft_max on columns", func(g *Graph) Tensor { return w.Permute(g, 1, 0, 2, 3).Softmax(g) }},
		{"im2col", func(g *Graph) Tensor {
			return g.Input(make([]float32, 2), 2, 1, 1, 1).IM2Col(g, g.InputF16(make([]float32, 3), 3, 1, 1, 1), 1, 1, 0, 0, 1, 1)
		}},
		{"attention", func(g *Graph) Tensor {
			q := g.Input(make([]float32, 8*2), 8, 2, 1)
			return q.Attention(g, g.Input(make([]float32, 6*2*3), 6, 2, 3), g.Input(make([]float32, 6*2*3), 6, 2, 3), Tensor{}, 1, false)
		}},
		{"an op on a failed op", func(g *Graph) Tensor { return w.Reshape(g, 5).Add(g, w) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := b.NewGraph()
			defer g.Close()
			out := tc.build(g)
			if out.Valid() {
				t.Fatalf("made a tensor of shape %v", out.Shape())
			}
			err := g.Compute(out)
			if !errors.Is(err, ErrShape) {
				t.Fatalf("Compute: %v", err)
			}
			t.Log(err)
			checkCensus(t, g)
		})
	}
	// Flash attention's kernel has rules of its own.
	fb := backend(t, true)
	g := fb.NewGraph()
	defer g.Close()
	q := g.Input(make([]float32, 8*2*3), 8, 2, 3)
	k := g.Input(make([]float32, 8*2*5), 8, 2, 5)
	if out := q.Attention(g, k, k, g.Input(make([]float32, 5*2), 5, 2), 1, false); out.Valid() || !errors.Is(g.Err(), ErrShape) {
		t.Fatalf("a mask of 2 rows for 3 queries: %v", g.Err())
	}
}

// The zero Tensor answers questions about itself without crashing.
func TestZeroTensor(t *testing.T) {
	var z Tensor
	if z.Valid() || z.Dim(0) != 0 || z.Stride(1) != 0 || z.Shape() != nil || z.Floats() != nil {
		t.Fatal("zero tensor")
	}
	if elements([]int{math.MaxInt32, math.MaxInt32, math.MaxInt32, math.MaxInt32}) != -1 {
		t.Fatal("elements overflow")
	}
}

// Every backend computes on the one CPU backend the ml package makes per
// process: backends of different thread counts, computing from many
// goroutines and closed while others compute, give the right results and
// never deadlock (a backend closed with its own thread pool attached to
// the shared CPU backend once left it pointing at freed memory).
func TestBackendsShareTheCPU(t *testing.T) {
	a := backend(t, false)
	if cpus, err := cpuBackends(a.b); err != nil || len(cpus) == 0 {
		t.Fatalf("the ml backend's CPU backends: %v, %v", cpus, err)
	}
	check := func(b *Backend) error {
		w, _ := b.Weight("w")
		g := b.NewGraph()
		defer g.Close()
		y := w.Mulmat(g, g.Input([]float32{1, 0, 0, 0, 0, 0, 0, 1}, 8, 1))
		if err := g.Compute(y); err != nil {
			return err
		}
		for o, v := range y.Floats() {
			if want := float32(16*o+7) / 10; math.Abs(float64(v-want)) > 1e-5 {
				return fmt.Errorf("row %d: %v, want %v", o, v, want)
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			b := a
			if i%2 == 1 {
				b = backend(t, false)
				b.threads = 1
				defer b.Close()
			}
			for range 20 {
				if err := check(b); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
