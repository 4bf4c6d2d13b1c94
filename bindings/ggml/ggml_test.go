package ggml

import (
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/owlengine/owl/models"
)

// backend loads a GGUF holding one 8×4 f32 weight "w" (values i/10).
func backend(t *testing.T, fa bool) *Backend {
	t.Helper()
	path := filepath.Join(t.TempDir(), "w.gguf")
	vals := make([]float32, 32)
	for i := range vals {
		vals[i] = float32(i) / 10
	}
	err := writeFile(path, []models.GGUFKV{{Key: "general.architecture", Value: "test"}, {Key: "test.block_count", Value: uint32(1)}},
		[]models.TensorSpec{{Name: "w", Type: models.TypeF32, Dims: []uint64{8, 4}, Write: func(w io.Writer) error {
			_, err := w.Write(models.Float32Bytes(vals))
			return err
		}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(context.Background(), path, Options{Threads: 2, FlashAttn: fa})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func TestMulmat(t *testing.T) {
	b := backend(t, false)
	w, err := b.Weight("w")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Weight("nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("missing weight: %v", err)
	}
	g := b.NewGraph()
	defer g.Close()
	x := g.Input([]float32{1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 8, 2)
	y := w.Mulmat(g, x)
	if err := g.Compute(y); err != nil {
		t.Fatal(err)
	}
	got := y.Floats()
	// Row o of w is (8o .. 8o+7)/10: y[o][0] = w[o][0] + w[o][7], y[o][1] = Σ w[o].
	for o := range 4 {
		want0 := float32(8*o+8*o+7) / 10
		want1 := float32(8*(8*o)+28) / 10
		if math.Abs(float64(got[o]-want0)) > 1e-5 || math.Abs(float64(got[4+o]-want1)) > 1e-4 {
			t.Fatalf("y = %v", got)
		}
	}
}

func TestStoreAndCopy(t *testing.T) {
	b := backend(t, false)
	s := b.NewStore()
	defer s.Close()
	dst, err := s.Zeros(F16, 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	g := b.NewGraph()
	src := g.Input([]float32{1, 2, 3, 4, 5, 6, 7, 8}, 4, 2)
	g.Forward(src.CopyTo(g, dst.View(g, 4*2, 8))) // into columns 1 and 2
	if err := g.Compute(); err != nil {
		t.Fatal(err)
	}
	g.Close()
	g = b.NewGraph()
	defer g.Close()
	out := dst.Cast(g, F32)
	if err := g.Compute(out); err != nil {
		t.Fatal(err)
	}
	want := []float32{0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}
	for i, v := range out.Floats() {
		if v != want[i] {
			t.Fatalf("store = %v, want %v", out.Floats(), want)
		}
	}
}

// refAttention computes attention in float64 for q [d, heads, nq], k, v
// [d, heads, nkv] (flattened, innermost first) and an optional mask [nkv, nq].
func refAttention(q, k, v, mask []float32, d, heads, nq, nkv int, scale float64) []float64 {
	out := make([]float64, d*heads*nq)
	for h := range heads {
		for i := range nq {
			s := make([]float64, nkv)
			mx := math.Inf(-1)
			for j := range nkv {
				for e := range d {
					s[j] += float64(q[(i*heads+h)*d+e]) * float64(k[(j*heads+h)*d+e])
				}
				s[j] *= scale
				if mask != nil {
					s[j] += float64(mask[i*nkv+j])
				}
				mx = math.Max(mx, s[j])
			}
			sum := 0.0
			for j := range s {
				s[j] = math.Exp(s[j] - mx)
				sum += s[j]
			}
			for e := range d {
				acc := 0.0
				for j := range nkv {
					acc += s[j] * float64(v[(j*heads+h)*d+e])
				}
				out[(i*heads+h)*d+e] = acc / sum
			}
		}
	}
	return out
}

func TestAttention(t *testing.T) {
	const d, heads = 16, 2
	seed := uint32(1)
	rnd := func(n int) []float32 {
		out := make([]float32, n)
		for i := range out {
			seed = seed*1664525 + 1013904223
			out[i] = float32(seed>>8)/float32(1<<24)*2 - 1
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		nq, nkv     int
		masked, fa  bool
		vTransposed bool
		chunkBytes  int
	}{
		{"keys padded to 16", 40, 37, false, false, false, 16 << 20},
		{"causal mask", 12, 12, true, false, false, 16 << 20},
		{"one query, transposed values", 1, 37, false, false, true, 16 << 20},
		{"chunks of queries", 40, 37, false, false, false, 4 * 37 * heads * 7},
		{"chunks with mask", 30, 30, true, false, false, 4 * 30 * heads * 4},
		{"flash", 40, 37, true, true, false, 16 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func(n int) { attnChunkBytes = n }(attnChunkBytes)
			attnChunkBytes = tc.chunkBytes
			b := backend(t, tc.fa)
			q, k, v := rnd(d*heads*tc.nq), rnd(d*heads*tc.nkv), rnd(d*heads*tc.nkv)
			var mask []float32
			if tc.masked {
				mask = make([]float32, tc.nkv*tc.nq)
				for i := range tc.nq {
					for j := range tc.nkv {
						if j > i+tc.nkv-tc.nq {
							mask[i*tc.nkv+j] = float32(math.Inf(-1))
						}
					}
				}
			}
			g := b.NewGraph()
			defer g.Close()
			vv := g.Input(v, d, heads, tc.nkv)
			if tc.vTransposed {
				vv = vv.Permute(g, 1, 2, 0, 3).Contiguous(g)
			}
			var mt Tensor
			if mask != nil {
				mt = g.Input(mask, tc.nkv, tc.nq)
			}
			out := g.Input(q, d, heads, tc.nq).Attention(g, g.Input(k, d, heads, tc.nkv), vv, mt, 0.25, tc.vTransposed)
			if err := g.Compute(out); err != nil {
				t.Fatal(err)
			}
			got := out.Floats()
			want := refAttention(q, k, v, mask, d, heads, tc.nq, tc.nkv, 0.25)
			tol := 1e-5
			if tc.fa {
				tol = 5e-3 // f16 keys and values
			}
			for i := range want {
				if math.Abs(float64(got[i])-want[i]) > tol {
					t.Fatalf("element %d: %v, want %v", i, got[i], want[i])
				}
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(context.Background(), filepath.Join(t.TempDir(), "none.gguf"), Options{}); err == nil {
		t.Fatal("loaded a missing file")
	}
}

func writeFile(path string, kvs []models.GGUFKV, ts []models.TensorSpec) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := models.WriteGGUF(f, kvs, ts); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
