package llama

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
	"github.com/owlengine/owl/vision"
)

// family is a generated text model with its projector.
type family struct {
	name  string
	text  testmodel.LlamaConfig
	proj  testmodel.ProjectorConfig
	imgW  int // a test image size
	imgH  int
	mrope bool
}

var families = []family{
	{name: "llava", text: testmodel.TinyLlama(), proj: testmodel.TinyLlavaProjector(), imgW: 40, imgH: 30},
	{name: "qwen2vl", text: testmodel.TinyQwen2VL(), proj: testmodel.TinyQwen2VLProjector(), imgW: 64, imgH: 48, mrope: true},
}

// openFamily writes and opens f's text model and projector. The tests run
// native code on one thread: ggml's threads wait for each other by spinning,
// which costs a hundredfold on a machine busy with other work.
func openFamily(t testing.TB, f family) (*Model, *Projector) {
	t.Helper()
	textPath, projPath := writeFamily(t, f)
	return openPaths(t, textPath, projPath, 1)
}

func writeFamily(t testing.TB, f family) (textPath, projPath string) {
	t.Helper()
	dir := t.TempDir()
	textPath, projPath = filepath.Join(dir, "text.gguf"), filepath.Join(dir, "mmproj.gguf")
	if err := testmodel.WriteLlamaFile(textPath, f.text); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteProjectorFile(projPath, f.proj); err != nil {
		t.Fatal(err)
	}
	return textPath, projPath
}

func openPaths(t testing.TB, textPath, projPath string, threads int) (*Model, *Projector) {
	t.Helper()
	m, err := LoadModel(textPath, ModelParams{UseMmap: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	p, err := OpenProjector(m, projPath, checkedParams(t, m, projPath, threads))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return m, p
}

// checkedParams runs the check every caller runs before OpenProjector
// (models.CheckProjector) and returns the parameters it yields.
func checkedParams(t testing.TB, m *Model, projPath string, threads int) ProjectorParams {
	t.Helper()
	g, err := models.ReadGGUF(projPath)
	if err != nil {
		t.Fatal(err)
	}
	check, err := models.CheckProjector(g, m.InputEmbd())
	if err != nil {
		t.Fatal(err)
	}
	return ProjectorParams{Threads: threads, Type: check.Type, ShapesChecked: check.ShapesChecked}
}

// testImage draws a deterministic w × h picture; seed changes its content.
func testImage(w, h int, seed byte, id string) Bitmap {
	rgb := make([]byte, w*h*3)
	for y := range h {
		for x := range w {
			o := (y*w + x) * 3
			rgb[o] = byte(x*255/max(w-1, 1)) ^ seed
			rgb[o+1] = byte(y*255/max(h-1, 1)) + seed
			rgb[o+2] = byte((x+y)*7) ^ (seed * 3)
		}
	}
	return Bitmap{Width: w, Height: h, RGB: rgb, ID: id}
}

func newCtx(t testing.TB, m *Model) *Context {
	t.Helper()
	ctx, err := NewContext(m, ContextParams{NumCtx: 512, NumBatch: 64, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctx.Close() })
	return ctx
}

// evalChunks decodes every chunk in order with owl's own calls (text with
// Decode, images with Encode and DecodeImage) and returns the last token's
// logits, the next position and the embeddings of the images.
func evalChunks(t testing.TB, p *Projector, ctx *Context, c *Chunks, pos, seq int32) ([]float32, int32, []*ImageEmbedding) {
	t.Helper()
	var logits []float32
	var embs []*ImageEmbedding
	for i, ch := range c.List {
		switch ch.Kind {
		case ChunkText:
			for start := 0; start < len(ch.Tokens); start += ctx.NumBatch() {
				toks := ch.Tokens[start:min(start+ctx.NumBatch(), len(ch.Tokens))]
				ps, seqs, want := make([]int32, len(toks)), make([]int32, len(toks)), make([]bool, len(toks))
				for j := range toks {
					ps[j], seqs[j] = pos+int32(j), seq
				}
				want[len(want)-1] = true
				out, err := ctx.Decode(toks, ps, seqs, want)
				if err != nil {
					t.Fatalf("chunk %d: %v", i, err)
				}
				logits = slices.Clone(out)
				pos += int32(len(toks))
			}
		case ChunkImage:
			e, err := p.Encode(context.Background(), c, i)
			if err != nil {
				t.Fatalf("chunk %d: %v", i, err)
			}
			embs = append(embs, e)
			if pos, err = p.DecodeImage(ctx, e, pos, seq); err != nil {
				t.Fatalf("chunk %d: %v", i, err)
			}
			logits = nil
		}
	}
	return logits, pos, embs
}

func TestProjectorOpens(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			m, p := openFamily(t, f)
			if p.Type() != f.proj.Type || !p.ShapesChecked() || !p.SupportsVision() || p.UsesMRoPE() != f.mrope || p.NonCausal() {
				t.Fatalf("type %q checked %v vision %v mrope %v noncausal %v", p.Type(), p.ShapesChecked(), p.SupportsVision(), p.UsesMRoPE(), p.NonCausal())
			}
			if p.NumEmbd() != m.NumEmbd() || p.MediaMarker() != DefaultMediaMarker || p.Model() != m {
				t.Fatalf("n_embd %d (model %d), marker %q", p.NumEmbd(), m.NumEmbd(), p.MediaMarker())
			}
			p.Close()
			p.Close() // idempotent
		})
	}
}

// An image prompt becomes text, image and text chunks; each family's
// delimiters and position counts are as mtmd reports them.
func TestTokenizeImagePrompt(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			m, p := openFamily(t, f)
			img := testImage(f.imgW, f.imgH, 1, "hash-a")
			c, err := p.Tokenize("Look: "+p.MediaMarker()+" What is it?", []Bitmap{img}, true, true)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if len(c.List) != 3 || c.List[0].Kind != ChunkText || c.List[1].Kind != ChunkImage || c.List[2].Kind != ChunkText {
				t.Fatalf("chunks %+v", c.List)
			}
			if c.List[0].Tokens[0] != m.BOS() {
				t.Fatalf("first token %d, want BOS %d", c.List[0].Tokens[0], m.BOS())
			}
			im := c.List[1]
			if im.ID != "hash-a" || im.Image != 0 || im.Part != 0 || im.NX*im.NY != im.NumTokens {
				t.Fatalf("image chunk %+v", im)
			}
			switch f.name {
			case "llava":
				// 32-pixel squares in 8-pixel patches: 16 tokens, one position each.
				if im.NumTokens != 16 || im.NumPos != 16 {
					t.Fatalf("llava image chunk %+v", im)
				}
			case "qwen2vl":
				// 64×48 pixels in 8×8 merged patches: an 8×6 grid over max(8, 6) positions.
				if im.NX != 8 || im.NY != 6 || im.NumTokens != 48 || im.NumPos != 8 {
					t.Fatalf("qwen2vl image chunk %+v", im)
				}
				// mtmd wraps the image in the model's vision delimiters.
				start, _ := m.Tokenize(testmodel.TokenVisionStart, false, true)
				end, _ := m.Tokenize(testmodel.TokenVisionEnd, false, true)
				if last := c.List[0].Tokens[len(c.List[0].Tokens)-1]; len(start) != 1 || last != start[0] {
					t.Fatalf("text before the image ends with %d, want <|vision_start|> %v", last, start)
				}
				if len(end) != 1 || c.List[2].Tokens[0] != end[0] {
					t.Fatalf("text after the image starts with %d, want <|vision_end|> %v", c.List[2].Tokens[0], end)
				}
			}
			if c.NumTokens() != len(c.List[0].Tokens)+im.NumTokens+len(c.List[2].Tokens) {
				t.Fatalf("NumTokens %d", c.NumTokens())
			}
			c.Close()
			c.Close()
		})
	}
}

func finite(t *testing.T, v []float32) {
	t.Helper()
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("value %d is %v", i, x)
		}
	}
}

// Encoding gives finite embeddings of the chunk's size; the same image gives
// the same embeddings, another image others.
func TestEncodeImages(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			m, p := openFamily(t, f)
			marker := p.MediaMarker()
			a, b := testImage(f.imgW, f.imgH, 1, "a"), testImage(f.imgW, f.imgH, 99, "b")
			c, err := p.Tokenize("one "+marker+" two "+marker+" three "+marker, []Bitmap{a, b, a}, true, false)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var embs []*ImageEmbedding
			for i, ch := range c.List {
				if ch.Kind != ChunkImage {
					continue
				}
				e, err := p.Encode(context.Background(), c, i)
				if err != nil {
					t.Fatal(err)
				}
				if len(e.Data) != ch.NumTokens*m.NumEmbd() || e.NumEmbd != m.NumEmbd() || e.Bytes() != int64(4*len(e.Data)) {
					t.Fatalf("chunk %d: %d floats for %d tokens of width %d", i, len(e.Data), ch.NumTokens, m.NumEmbd())
				}
				finite(t, e.Data)
				embs = append(embs, e)
			}
			if len(embs) != 3 || p.Encodes() != 3 {
				t.Fatalf("%d embeddings, %d encodes", len(embs), p.Encodes())
			}
			if !slices.Equal(embs[0].Data, embs[2].Data) {
				t.Fatal("the same image encoded twice differs")
			}
			if slices.Equal(embs[0].Data, embs[1].Data) {
				t.Fatal("two different images encode the same")
			}
			if imgs := []int{c.List[1].Image, c.List[3].Image, c.List[5].Image}; !slices.Equal(imgs, []int{0, 1, 2}) {
				t.Fatalf("image indices %v", imgs)
			}
			if _, err := p.Encode(context.Background(), c, 0); err == nil {
				t.Fatal("a text chunk was encoded")
			}
			cancelled, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := p.Encode(cancelled, c, 1); !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled encode: %v", err)
			}
		})
	}
}

// owl's Tokenize → Encode → DecodeImage → Decode gives the logits mtmd's own
// helper gives for the same prompt, for both position schemes: the positions
// owl computes are mtmd's. With batches of 4 the image is split over several
// decodes. (mtmd's helper rounds the number of image batches with a
// power-of-two formula and drops an image's last tokens for other batch
// sizes, so it is compared at 64 and 4; owl at 5 must equal owl at 64.)
func TestDecodeMatchesMtmdHelper(t *testing.T) {
	for _, f := range families {
		var ref []float32
		for _, batch := range []int{64, 4, 5} {
			t.Run(fmt.Sprintf("%s/batch %d", f.name, batch), func(t *testing.T) {
				got := testDecodeMatchesMtmdHelper(t, f, batch, batch != 5)
				if ref == nil {
					ref = got
				}
				for i := range ref {
					if d := got[i] - ref[i]; d > 1e-4 || d < -1e-4 {
						t.Fatalf("logit %d: %v in batches of %d, %v in one batch", i, got[i], batch, ref[i])
					}
				}
			})
		}
	}
}

func testDecodeMatchesMtmdHelper(t *testing.T, f family, batch int, compare bool) []float32 {
	m, p := openFamily(t, f)
	newCtx := func() *Context {
		ctx, err := NewContext(m, ContextParams{NumCtx: 512, NumBatch: batch, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ctx.Close() })
		return ctx
	}
	img := testImage(f.imgW, f.imgH, 5, "x")
	prompt := "<|im_start|>user\nWhat is in " + p.MediaMarker() + " this picture?<|im_end|>\n<|im_start|>assistant\n"
	c, err := p.Tokenize(prompt, []Bitmap{img}, true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, next, _ := evalChunks(t, p, newCtx(), c, 0, 0)
	finite(t, got)
	if int(next) != c.NumPos() {
		t.Fatalf("next position %d, chunks %d", next, c.NumPos())
	}
	if !compare {
		return got
	}
	want, wantNext, err := p.evalReference(newCtx(), c, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if next != wantNext {
		t.Fatalf("next position %d, mtmd %d", next, wantNext)
	}
	for i := range want {
		if d := got[i] - want[i]; d > 1e-4 || d < -1e-4 {
			t.Fatalf("logit %d: owl %v, mtmd %v", i, got[i], want[i])
		}
	}
	return got
}

// For Qwen2-VL, the position after an image is pos + n_pos (max of the
// grid), not pos + n_tokens, and using it matters.
func TestMRoPEPositions(t *testing.T) {
	f := families[1]
	m, p := openFamily(t, f)
	img := testImage(f.imgW, f.imgH, 7, "q")
	c, err := p.Tokenize("Hi "+p.MediaMarker()+" there", []Bitmap{img}, true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch := c.List[1]
	if ch.NumPos != max(ch.NX, ch.NY) || ch.NumPos == ch.NumTokens {
		t.Fatalf("image chunk %+v: M-RoPE positions should be max(nx, ny) and differ from the token count", ch)
	}
	e, err := p.Encode(context.Background(), c, 1)
	if err != nil {
		t.Fatal(err)
	}
	run := func(after int32) ([]float32, int32) {
		ctx := newCtx(t, m)
		pre := c.List[0].Tokens
		ps, seqs, want := make([]int32, len(pre)), make([]int32, len(pre)), make([]bool, len(pre))
		for i := range ps {
			ps[i] = int32(i)
		}
		if _, err := ctx.Decode(pre, ps, seqs, want); err != nil {
			t.Fatal(err)
		}
		pos0 := int32(len(pre))
		next, err := p.DecodeImage(ctx, e, pos0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if next != pos0+int32(ch.NumPos) {
			t.Fatalf("next %d, want %d + n_pos %d", next, pos0, ch.NumPos)
		}
		// Every image token sits at the temporal position pos0.
		if got := ctx.SeqPosMax(0); got != pos0 {
			t.Fatalf("after the image the largest position is %d, want %d", got, pos0)
		}
		if after < 0 {
			after = next
		}
		out, err := ctx.Decode(c.List[2].Tokens[:1], []int32{after}, []int32{0}, []bool{true})
		if err != nil {
			t.Fatal(err)
		}
		return slices.Clone(out), next
	}
	right, next := run(-1)
	wrong, _ := run(next - int32(ch.NumPos) + int32(ch.NumTokens))
	if slices.Equal(right, wrong) {
		t.Fatal("the text after the image gives the same logits at pos+n_tokens as at pos+n_pos")
	}
	// A text token may not go back to the image's position.
	ctx := newCtx(t, m)
	if _, err := p.DecodeImage(ctx, e, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := ctx.Decode([]Token{1}, []int32{0}, []int32{0}, []bool{true}); err == nil {
		t.Fatal("a token at the image's temporal position was accepted")
	}
}

// Two different images give different first-token logits; the same image
// twice gives the same.
func TestImagesChangeLogits(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			m, p := openFamily(t, f)
			logits := func(img Bitmap) []float32 {
				c, err := p.Tokenize("Describe "+p.MediaMarker()+" briefly.", []Bitmap{img}, true, true)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				l, _, _ := evalChunks(t, p, newCtx(t, m), c, 0, 0)
				return l
			}
			a1 := logits(testImage(f.imgW, f.imgH, 1, "a"))
			a2 := logits(testImage(f.imgW, f.imgH, 1, "a"))
			b := logits(testImage(f.imgW, f.imgH, 200, "b"))
			if !slices.Equal(a1, a2) {
				t.Fatal("the same image gave different logits")
			}
			if slices.Equal(a1, b) {
				t.Fatal("different images gave the same logits")
			}
		})
	}
}

// Images of other sizes and shapes tokenize and encode: the projectors
// resize them.
func TestImageSizes(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			_, p := openFamily(t, f)
			for _, sz := range [][2]int{{1, 1}, {3, 200}, {200, 3}, {97, 61}, {256, 256}} {
				c, err := p.Tokenize(p.MediaMarker(), []Bitmap{testImage(sz[0], sz[1], 3, "s")}, false, false)
				if err != nil {
					t.Fatalf("%dx%d: %v", sz[0], sz[1], err)
				}
				e, err := p.Encode(context.Background(), c, slices.IndexFunc(c.List, func(ch Chunk) bool { return ch.Kind == ChunkImage }))
				c.Close()
				if err != nil {
					t.Fatalf("%dx%d: %v", sz[0], sz[1], err)
				}
				if e.NumTokens == 0 || len(e.Data) != e.NumTokens*e.NumEmbd {
					t.Fatalf("%dx%d: %+v", sz[0], sz[1], e)
				}
			}
		})
	}
}

func TestTokenizeErrors(t *testing.T) {
	_, p := openFamily(t, families[0])
	mk := p.MediaMarker()
	good := testImage(8, 8, 1, "g")
	for _, tc := range []struct {
		name   string
		text   string
		images []Bitmap
		want   error
	}{
		{"more images than markers", "no marker", []Bitmap{good}, ErrMarkers},
		{"more markers than images", mk + mk, []Bitmap{good}, ErrMarkers},
		{"zero size", mk, []Bitmap{{Width: 0, Height: 0, ID: "z"}}, ErrBadImage},
		{"short pixels", mk, []Bitmap{{Width: 4, Height: 4, RGB: make([]byte, 47)}}, ErrBadImage},
		{"too long a side", mk, []Bitmap{{Width: MaxImageSide + 1, Height: 1, RGB: make([]byte, 3*(MaxImageSide+1))}}, ErrBadImage},
		{"NUL in id", mk, []Bitmap{{Width: 1, Height: 1, RGB: make([]byte, 3), ID: "a\x00b"}}, ErrBadImage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := p.Tokenize(tc.text, tc.images, true, true)
			if !errors.Is(err, tc.want) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := p.Tokenize("a\x00b", nil, true, true); err == nil {
		t.Fatal("NUL in the prompt accepted")
	}
	// The legacy image marker counts as a media marker too.
	c, err := p.Tokenize("<__image__>", []Bitmap{good}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestDecodeImageErrors(t *testing.T) {
	m, p := openFamily(t, families[0])
	c, err := p.Tokenize(p.MediaMarker(), []Bitmap{testImage(8, 8, 1, "g")}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e, err := p.Encode(context.Background(), c, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := newCtx(t, m)
	bad := *e
	bad.Data = bad.Data[:len(bad.Data)-1]
	if _, err := p.DecodeImage(ctx, &bad, 0, 0); err == nil {
		t.Fatal("short embeddings accepted")
	}
	bad = *e
	bad.NumPos++
	if _, err := p.DecodeImage(ctx, &bad, 0, 0); err == nil {
		t.Fatal("inconsistent positions accepted")
	}
	if _, err := p.DecodeImage(ctx, e, -1, 0); err == nil {
		t.Fatal("negative position accepted")
	}
	// No room: the image that does not fit leaves nothing in the cache.
	small, err := NewContext(m, ContextParams{NumCtx: 256, NumBatch: 64, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	pos := int32(0)
	for {
		next, err := p.DecodeImage(small, e, pos, 0)
		if errors.Is(err, ErrKVFull) {
			break
		}
		if err != nil || next != pos+int32(e.NumPos) || pos > int32(small.NumCtx()) {
			t.Fatalf("image at %d: next %d, %v", pos, next, err)
		}
		pos = next
	}
	if got := small.SeqPosMax(0); got != pos-1 {
		t.Fatalf("after a failed image the cache ends at %d, want %d", got, pos-1)
	}
	// Aborted.
	ctx.Abort()
	if _, err := p.DecodeImage(ctx, e, 0, 0); !errors.Is(err, ErrAborted) {
		t.Fatalf("aborted: %v", err)
	}
	ctx.ClearAbort()
	ctx.Close()
	if _, err := p.DecodeImage(ctx, e, 0, 0); err == nil {
		t.Fatal("closed context accepted")
	}
	c.Close()
	if _, err := p.Encode(context.Background(), c, 0); err == nil {
		t.Fatal("closed chunks encoded")
	}
}

// A projector whose position scheme differs from its text model's (M-RoPE
// or not) is refused; so is a missing text model.
func TestProjectorPositionMismatch(t *testing.T) {
	llava, qwen := families[0], families[1]
	for _, tc := range []struct {
		name string
		text testmodel.LlamaConfig
		proj testmodel.ProjectorConfig
	}{
		{"qwen2vl projector on a llama", llava.text, qwen.proj},
		{"llava projector on a qwen2vl model", qwen.text, llava.proj},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			textPath := filepath.Join(dir, "text.gguf")
			if err := testmodel.WriteLlamaFile(textPath, tc.text); err != nil {
				t.Fatal(err)
			}
			m, err := LoadModel(textPath, ModelParams{UseMmap: true})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			projPath := filepath.Join(dir, "mmproj.gguf")
			if err := testmodel.WriteProjectorFile(projPath, tc.proj); err != nil {
				t.Fatal(err)
			}
			p, err := OpenProjector(m, projPath, checkedParams(t, m, projPath, 1))
			if err == nil {
				p.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, ErrProjector) || !strings.Contains(err.Error(), "M-RoPE") {
				t.Fatalf("got %v, want ErrProjector about M-RoPE", err)
			}
		})
	}
	if _, err := OpenProjector(nil, "x", ProjectorParams{}); !errors.Is(err, ErrProjector) {
		t.Fatalf("nil model: %v", err)
	}
}

// The same image twice in a conversation is encoded once when embeddings
// are cached by content hash, and the cached run gives the logits of a run
// that encodes every image: how llm uses vision.EmbeddingCache.
func TestCachedEmbeddingsEqualUncached(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			m, p := openFamily(t, f)
			a, b := testImage(f.imgW, f.imgH, 1, ""), testImage(f.imgW, f.imgH, 2, "")
			for _, img := range []*Bitmap{&a, &b} {
				img.ID = vision.HashRGB(img.Width, img.Height, img.RGB).String()
			}
			mk := p.MediaMarker()
			turns := []struct {
				text   string
				images []Bitmap
			}{
				{"<|im_start|>user\nWhat is " + mk + "?<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>\n", []Bitmap{a}},
				{"<|im_start|>user\nAnd " + mk + " next to " + mk + "?<|im_end|>\n<|im_start|>assistant\n", []Bitmap{b, a}},
			}
			cache := vision.NewEmbeddingCache[*ImageEmbedding](1 << 20)
			run := func(useCache bool) []float32 {
				ctx := newCtx(t, m)
				pos := int32(0)
				var logits []float32
				for turn, tr := range turns {
					c, err := p.Tokenize(tr.text, tr.images, turn == 0, true)
					if err != nil {
						t.Fatal(err)
					}
					for i, ch := range c.List {
						if ch.Kind == ChunkText {
							ps, seqs, want := make([]int32, len(ch.Tokens)), make([]int32, len(ch.Tokens)), make([]bool, len(ch.Tokens))
							for j := range ps {
								ps[j] = pos + int32(j)
							}
							want[len(want)-1] = true
							out, err := ctx.Decode(ch.Tokens, ps, seqs, want)
							if err != nil {
								t.Fatal(err)
							}
							logits, pos = slices.Clone(out), pos+int32(len(ch.Tokens))
							continue
						}
						h, err := vision.ParseHash(ch.ID)
						if err != nil {
							t.Fatal(err)
						}
						key := vision.CacheKey{Image: h, Projector: p.Type(), Part: ch.Part}
						var e *ImageEmbedding
						ok := false
						if useCache {
							e, ok = cache.Get(key)
						}
						if !ok {
							if e, err = p.Encode(context.Background(), c, i); err != nil {
								t.Fatal(err)
							}
							if useCache {
								cache.Put(key, e, e.Bytes())
							}
						}
						if pos, err = p.DecodeImage(ctx, e, pos, 0); err != nil {
							t.Fatal(err)
						}
					}
					c.Close()
				}
				return logits
			}
			before := p.Encodes()
			uncached := run(false)
			if n := p.Encodes() - before; n != 3 {
				t.Fatalf("uncached run encoded %d images, want 3", n)
			}
			before = p.Encodes()
			cached := run(true)
			if n := p.Encodes() - before; n != 2 {
				t.Fatalf("cached run encoded %d images, want 2 (a once, b once)", n)
			}
			if s := cache.Stats(); s.Hits != 1 || s.Misses != 2 || s.Entries != 2 {
				t.Fatalf("cache %+v", s)
			}
			if !slices.Equal(cached, uncached) {
				t.Fatal("cached embeddings gave other logits than encoding every image")
			}
		})
	}
}

// Gemma 3's projector asks for image tokens to attend to each other without
// the causal mask. The generated families do not, so the flag is forced on a
// LLaVA projector to check the mechanism: the image then changes what
// follows, must fit one micro-batch, and the mask is causal again after it.
func TestNonCausalImageDecode(t *testing.T) {
	m, p := openFamily(t, families[0])
	c, err := p.Tokenize("See "+p.MediaMarker()+" now", []Bitmap{testImage(40, 30, 9, "n")}, true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	causal, _, embs := evalChunks(t, p, newCtx(t, m), c, 0, 0)
	p.nonCausal = true
	defer func() { p.nonCausal = false }()
	ctx, err := NewContext(m, ContextParams{NumCtx: 512, NumBatch: 64, NumSeq: 2, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	nonCausal, _, _ := evalChunks(t, p, ctx, c, 0, 0)
	if slices.Equal(causal, nonCausal) {
		t.Fatal("attention without the causal mask over the image changed nothing")
	}
	// The text of sequence 1, decoded after the image, sees a causal mask:
	// it gives the logits a fresh context gives.
	text := c.List[0].Tokens
	run := func(ctx *Context, seq int32) []float32 {
		ps, seqs, want := make([]int32, len(text)), make([]int32, len(text)), make([]bool, len(text))
		for i := range ps {
			ps[i], seqs[i] = int32(i), seq
		}
		want[len(want)-1] = true
		out, err := ctx.Decode(text, ps, seqs, want)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Clone(out)
	}
	after, fresh := run(ctx, 1), run(newCtx(t, m), 0)
	for i := range fresh {
		if d := after[i] - fresh[i]; d > 1e-4 || d < -1e-4 {
			t.Fatalf("logit %d after a non-causal image: %v, fresh %v", i, after[i], fresh[i])
		}
	}
	// An image larger than a micro-batch cannot attend to itself.
	small, err := NewContext(m, ContextParams{NumCtx: 512, NumBatch: 8, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	if _, err := p.DecodeImage(small, embs[0], 0, 0); err == nil || !strings.Contains(err.Error(), "micro-batch") {
		t.Fatalf("image of %d tokens in micro-batches of 8: %v", embs[0].NumTokens, err)
	}
}

// A closed projector refuses work instead of touching freed memory.
func TestClosedProjector(t *testing.T) {
	m, p := openFamily(t, families[0])
	c, err := p.Tokenize(p.MediaMarker(), []Bitmap{testImage(8, 8, 1, "c")}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e, err := p.Encode(context.Background(), c, 0)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := p.Tokenize("x", nil, false, false); err == nil {
		t.Fatal("closed projector tokenized")
	}
	if _, err := p.Encode(context.Background(), c, 0); err == nil {
		t.Fatal("closed projector encoded")
	}
	if _, err := p.DecodeImage(newCtx(t, m), e, 0, 0); err == nil {
		t.Fatal("closed projector decoded")
	}
}

// A text-only model has no projector; one whose projector only hears cannot
// take images.
func TestImagesWithoutVision(t *testing.T) {
	_, p := openFamily(t, families[0])
	p.vision = false // as an audio-only projector reports itself
	if _, err := p.Tokenize(p.MediaMarker(), []Bitmap{testImage(4, 4, 0, "a")}, true, true); !errors.Is(err, ErrNoVision) {
		t.Fatalf("got %v, want ErrNoVision", err)
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, f := range families {
		textPath, projPath := writeFamily(b, f)
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/threads %d", f.name, threads), func(b *testing.B) {
				_, p := openPaths(b, textPath, projPath, threads)
				benchEncode(b, p, f.imgW, f.imgH)
			})
		}
	}
}

func benchEncode(b *testing.B, p *Projector, w, h int) {
	c, err := p.Tokenize(p.MediaMarker(), []Bitmap{testImage(w, h, 1, "b")}, false, false)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	i := slices.IndexFunc(c.List, func(ch Chunk) bool { return ch.Kind == ChunkImage })
	if _, err := p.Encode(context.Background(), c, i); err != nil { // sizes the buffers
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := p.Encode(context.Background(), c, i); err != nil {
			b.Fatal(err)
		}
	}
	// Wall time depends on what else the machine runs; CPU time less so.
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/image")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/image")
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEncodeRealistic encodes a 224-pixel image with a projector of
// CLIP ViT-B/16's shape (196 tokens) into a 2048-wide text model.
func BenchmarkEncodeRealistic(b *testing.B) {
	text := testmodel.TinyLlama()
	text.Embd, text.Heads, text.HeadsKV, text.Layers = 2048, 16, 8, 1
	f := family{name: "vit-b16", text: text, proj: testmodel.RealisticLlavaProjector(text.Embd), imgW: 640, imgH: 480}
	textPath, projPath := writeFamily(b, f)
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads %d", threads), func(b *testing.B) {
			_, p := openPaths(b, textPath, projPath, threads)
			benchEncode(b, p, f.imgW, f.imgH)
		})
	}
}

// BenchmarkDecodeImage decodes an encoded image into the KV cache: the
// crossing and position building owl adds around llama_decode.
func BenchmarkDecodeImage(b *testing.B) {
	for _, f := range families {
		b.Run(f.name, func(b *testing.B) {
			m, p := openFamily(b, f)
			c, err := p.Tokenize(p.MediaMarker(), []Bitmap{testImage(f.imgW, f.imgH, 1, "d")}, false, false)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			i := slices.IndexFunc(c.List, func(ch Chunk) bool { return ch.Kind == ChunkImage })
			e, err := p.Encode(context.Background(), c, i)
			if err != nil {
				b.Fatal(err)
			}
			ctx := newCtx(b, m)
			b.ReportAllocs()
			for b.Loop() {
				ctx.ClearKV()
				if _, err := p.DecodeImage(ctx, e, 0, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(e.NumTokens), "tokens/image")
		})
	}
}
