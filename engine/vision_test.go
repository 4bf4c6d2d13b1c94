package engine

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/png"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/owlengine/owl/llm"
	"github.com/owlengine/owl/models/testmodel"
)

// testPNG encodes a w×h picture: a gradient whose colors depend on seed.
func testPNG(t *testing.T, w, h int, seed uint8) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x*7) + seed, uint8(y*11) ^ seed, seed * 3, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// visionFiles writes a text model and its projector.
func visionFiles(t *testing.T, text testmodel.LlamaConfig, proj testmodel.ProjectorConfig) (string, string) {
	t.Helper()
	dir := t.TempDir()
	model, mmproj := filepath.Join(dir, "model.gguf"), filepath.Join(dir, "mmproj.gguf")
	if err := testmodel.WriteLlamaFile(model, text); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteProjectorFile(mmproj, proj); err != nil {
		t.Fatal(err)
	}
	return model, mmproj
}

// firstLogits records the logits of each request's first step.
func firstLogits(r *textRunner) func() [][]float32 {
	var got [][]float32
	r.onLogits = func(_ []llm.Token, step int, logits []float32) {
		if step == 0 {
			got = append(got, slices.Clone(logits))
		}
	}
	return func() [][]float32 { return got }
}

// An image prompt generates; greedy output is deterministic; different
// images give different first logits; an image seen before in the
// conversation is not encoded again, and the answer's logits equal an
// uncached run's.
func TestVisionChat(t *testing.T) {
	model, mmproj := visionFiles(t, testmodel.TinyLlama(), testmodel.TinyLlavaProjector())
	a, b := testPNG(t, 32, 32, 1), testPNG(t, 40, 30, 90)
	newEngine := func() (*Engine, func() [][]float32) {
		e := New(Options{Threads: 2, NumCtx: 512, Parallel: 2})
		var logits func() [][]float32
		e.onRunner = func(r *textRunner) { logits = firstLogits(r) }
		t.Cleanup(func() { e.Close() })
		return e, func() [][]float32 { return logits() }
	}
	e, logits := newEngine()
	chat := func(e *Engine, msgs ...Message) Result {
		t.Helper()
		res, err := e.Chat(context.Background(), ChatRequest{Model: model, Projector: mmproj, Messages: msgs, GenerateOptions: greedy(6)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	ask := Message{Role: "user", Content: "What is in this picture?", Images: [][]byte{a}}
	first := chat(e, ask)
	again := chat(e, ask)
	if len(first.Tokens) == 0 || first.Text != again.Text {
		t.Fatalf("image chat: %q then %q", first.Text, again.Text)
	}
	other := chat(e, Message{Role: "user", Content: "What is in this picture?", Images: [][]byte{b}})
	l := logits()
	if slices.Equal(l[0], l[2]) || !slices.Equal(l[0], l[1]) {
		t.Fatalf("first logits: same image equal %v, different images equal %v", slices.Equal(l[0], l[1]), slices.Equal(l[0], l[2]))
	}
	_ = other

	// The second turn holds image a twice (in the history and the new
	// question): nothing is encoded.
	m := e.Metrics().Models[0]
	encoded := m.ImagesEncoded
	if encoded != 2 {
		t.Fatalf("%d images encoded for images a, a, b", encoded)
	}
	turn := []Message{ask, {Role: "assistant", Content: first.Text}, {Role: "user", Content: "And here? " + ImageMarker, Images: [][]byte{a}}}
	cached := chat(e, turn...)
	m = e.Metrics().Models[0]
	if m.ImagesEncoded != encoded || cached.CachedTokens == 0 {
		t.Fatalf("second turn: %d more encodes, %d cached tokens", m.ImagesEncoded-encoded, cached.CachedTokens)
	}
	e2, logits2 := newEngine()
	uncached := chat(e2, turn...)
	if uncached.CachedTokens != 0 || uncached.Text != cached.Text {
		t.Fatalf("uncached run: %q (%d cached), cached run %q", uncached.Text, uncached.CachedTokens, cached.Text)
	}
	if got, want := logits()[len(logits())-1], logits2()[0]; !slices.Equal(got, want) {
		t.Fatal("the cached turn's first logits differ from an uncached run's")
	}
}

// Qwen2-VL places an image's tokens on a 2-D grid: the text after an image
// starts at the image's start plus its grid's longer side, not plus its
// token count.
func TestVisionMRoPEPositions(t *testing.T) {
	model, mmproj := visionFiles(t, testmodel.TinyQwen2VL(), testmodel.TinyQwen2VLProjector())
	e := New(Options{Threads: 2, NumCtx: 512, Parallel: 1})
	defer e.Close()
	var r *textRunner
	e.onRunner = func(x *textRunner) { r = x }
	img := testPNG(t, 64, 48, 5) // 8×6 tokens, 8 positions
	res, err := e.Generate(context.Background(), GenerateRequest{Model: model, Projector: mmproj, Prompt: "Describe it.",
		Images: [][]byte{img}, GenerateOptions: greedy(1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := r.slots[0]
	cells, imageCells := len(s.cached), 0
	for _, k := range s.cached {
		if k < 0 {
			imageCells++
		}
	}
	if imageCells != 48 || cells != res.PromptTokens {
		t.Fatalf("%d cells (%d of the image) for a prompt of %d", cells, imageCells, res.PromptTokens)
	}
	if want := int32(cells - 48 + 8); s.nextPos() != want {
		t.Fatalf("next position %d after %d cells, want %d (the image spans 8 positions)", s.nextPos(), cells, want)
	}
}

// Images a model cannot take get clear errors, never a native abort.
func TestVisionErrors(t *testing.T) {
	model, mmproj := visionFiles(t, testmodel.TinyLlama(), testmodel.TinyLlavaProjector())
	wide := testmodel.TinyLlavaProjector()
	wide.TextEmbd, wide.Hidden = 128, 128
	_, wideProj := visionFiles(t, testmodel.TinyLlama(), wide)
	_, qwenProj := visionFiles(t, testmodel.TinyQwen2VL(), testmodel.TinyQwen2VLProjector())
	img := testPNG(t, 32, 32, 3)
	e := New(Options{Threads: 2, NumCtx: 256, Parallel: 1})
	defer e.Close()
	for _, c := range []struct {
		name      string
		projector string
		images    [][]byte
		content   string
		want      string
		is        error
	}{
		{"text-only model", "", [][]byte{img}, "hi", "no vision projector", ErrNoVision},
		{"projector of another width", wideProj, [][]byte{img}, "hi", "128", nil},
		{"projector of another family", qwenProj, [][]byte{img}, "hi", "M-RoPE", nil},
		{"not a projector", model, [][]byte{img}, "hi", "not a vision projector", nil},
		{"truncated image", mmproj, [][]byte{img[:len(img)/2]}, "hi", "image 1", ErrBadImage},
		{"not an image", mmproj, [][]byte{[]byte("hello")}, "hi", "image 1", ErrBadImage},
		{"markers without images", mmproj, nil, ImageMarker + " hi", "markers", ErrBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.Chat(context.Background(), ChatRequest{Model: model, Projector: c.projector,
				Messages: []Message{{Role: "user", Content: c.content, Images: c.images}}, GenerateOptions: greedy(2)}, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) || (c.is != nil && !errors.Is(err, c.is)) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
	// The engine still serves.
	if _, err := e.Chat(context.Background(), ChatRequest{Model: model, Projector: mmproj,
		Messages: []Message{{Role: "user", Content: "hi", Images: [][]byte{img}}}, GenerateOptions: greedy(2)}, nil); err != nil {
		t.Fatal(err)
	}
}
