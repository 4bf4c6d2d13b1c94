package llm

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"path/filepath"
	"slices"
	"testing"

	"github.com/owlengine/owl/internal/gputest"
	"github.com/owlengine/owl/models/testmodel"
	"github.com/owlengine/owl/vision"
)

// gpuNMSE bounds the difference of a fully offloaded model's logits from
// the CPU's. The GPU's matrix products convert activations to f16 and sum
// in another order than the CPU's kernels; on the tiny model that leaves
// an NMSE near 1e-7. 1e-4 (1% of the logits' RMS) is far from anything a
// wrong kernel, a missing layer or a misplaced KV cache gives (NMSE near
// 1 and beyond).
const gpuNMSE = 1e-4

// TestGPUOffloadEqualsCPU: the tiny model with every layer on the GPU
// gives the CPU's logits at each step of a greedy generation, and the same
// tokens wherever the CPU's best token leads by more than the logits'
// largest difference.
func TestGPUOffloadEqualsCPU(t *testing.T) {
	dev := gputest.Require(t)
	cpu := tinyModel(t)
	gpu, err := Load(tinyPath, LoadOptions{GPULayers: -1, Device: dev.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer gpu.Close()
	if !gpu.OnGPU() || cpu.OnGPU() {
		t.Fatalf("OnGPU: gpu model %v, cpu model %v", gpu.OnGPU(), cpu.OnGPU())
	}
	ctx := func(m *Model) *Context {
		c, err := m.NewContext(ContextOptions{NumCtx: 256, Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	cc, gc := ctx(cpu), ctx(gpu)
	prompt := mustTokenize(t, cpu, "Once upon a time, in a land far away")
	var b Batch
	for i, tok := range prompt {
		b.Add(tok, int32(i), 0, i == len(prompt)-1)
	}
	n := cpu.VocabSize()
	agree, checked := 0, 0
	for step := range 24 {
		cl, err := cc.Decode(&b)
		if err != nil {
			t.Fatal(err)
		}
		cl = slices.Clone(cl[:n])
		gl, err := gc.Decode(&b)
		if err != nil {
			t.Fatal(err)
		}
		gl = gl[:n]
		nmse, maxAbs := gputest.NMSE(gl, cl), gputest.MaxAbs(gl, cl)
		if nmse > gpuNMSE {
			t.Fatalf("step %d: logits NMSE %.3g > %g (max |Δ| %.3g)", step, nmse, gpuNMSE, maxAbs)
		}
		best, second := top2(cl)
		gbest, _ := top2(gl)
		if cl[best]-cl[second] > float32(2*maxAbs) {
			checked++
			if gbest != best {
				t.Fatalf("step %d: GPU's greedy token %d, CPU's %d (lead %.3g, max |Δ| %.3g)", step, gbest, best, cl[best]-cl[second], maxAbs)
			}
		}
		if gbest == best {
			agree++
		}
		if step == 0 {
			t.Logf("step 0: NMSE %.3g, max |Δ| %.3g", nmse, maxAbs)
		}
		// Both follow the CPU's token.
		b.Reset()
		b.Add(Token(best), int32(len(prompt)+step), 0, true)
	}
	t.Logf("%d of 24 greedy tokens equal (%d with a clear lead, all equal)", agree, checked)
	if checked < 12 {
		t.Fatalf("only %d of 24 steps had a clear lead to check", checked)
	}
}

func top2(l []float32) (best, second int) {
	best, second = 0, 1
	if l[1] > l[0] {
		best, second = 1, 0
	}
	for i := 2; i < len(l); i++ {
		switch {
		case l[i] > l[best]:
			best, second = i, best
		case l[i] > l[second]:
			second = i
		}
	}
	return best, second
}

// TestGPUImageEmbeddings: with its text model on the GPU, a projector
// encodes images there, and an image's embeddings equal the CPU's.
func TestGPUImageEmbeddings(t *testing.T) {
	dev := gputest.Require(t)
	dir := t.TempDir()
	model, mmproj := filepath.Join(dir, "model.gguf"), filepath.Join(dir, "mmproj.gguf")
	if err := testmodel.WriteLlamaFile(model, testmodel.TinyLlama()); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteProjectorFile(mmproj, testmodel.TinyLlavaProjector()); err != nil {
		t.Fatal(err)
	}
	img := image.NewRGBA(image.Rect(0, 0, 48, 40))
	for y := range 40 {
		for x := range 48 {
			img.Set(x, y, color.RGBA{uint8(x * 5), uint8(y * 6), uint8(x * y), 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	im, err := vision.DecodeBytes(buf.Bytes(), vision.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	embed := func(o LoadOptions) ([]float32, bool) {
		m, err := Load(model, o)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		p, err := m.OpenProjector(mmproj, 2)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		parts, err := p.Prepare(context.Background(), "Look: "+p.Marker(), []*vision.Image{im}, nil, true, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, part := range parts {
			if part.Image != nil {
				return slices.Clone(part.Image.emb.Data), m.OnGPU()
			}
		}
		t.Fatal("no image chunk")
		return nil, false
	}
	cpu, _ := embed(LoadOptions{})
	gpu, onGPU := embed(LoadOptions{GPULayers: -1, Device: dev.Name})
	if !onGPU {
		t.Fatal("the text model is not on the GPU")
	}
	// The vision encoder's products on the GPU round through f16, as the
	// text model's do (see gpuNMSE).
	nmse := gputest.NMSE(gpu, cpu)
	t.Logf("%d embedding values: NMSE %.3g, max |Δ| %.3g", len(cpu), nmse, gputest.MaxAbs(gpu, cpu))
	if nmse == 0 {
		t.Fatal("the embeddings are the CPU's to the bit: the projector did not compute on the GPU")
	}
	if len(gpu) != len(cpu) || nmse > gpuNMSE {
		t.Fatalf("GPU embeddings (%d values) differ from the CPU's (%d): NMSE %.3g", len(gpu), len(cpu), nmse)
	}
}
