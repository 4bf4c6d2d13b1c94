package llama

/*
#include <stdlib.h>
#include "owl_mtmd.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Errors of the multimodal API; test them with errors.Is.
var (
	// ErrProjector is returned (wrapped, with the reason) when a multimodal
	// projector file cannot be used with a text model.
	ErrProjector = errors.New("unusable multimodal projector")
	// ErrNoVision is returned when images are given to a projector without a
	// vision encoder.
	ErrNoVision = errors.New("the projector has no vision encoder")
	// ErrMarkers is returned when a prompt's media markers and its images do
	// not pair up.
	ErrMarkers = errors.New("media markers and images do not match")
	// ErrBadImage is returned for a bitmap the projector cannot take.
	ErrBadImage = errors.New("bad image")
)

var errClosed = errors.New("the projector is closed")

// MaxImageSide is the longest image side Tokenize accepts. Some projectors
// pad an image to a square of its longer side before resizing, so a long
// thin image would otherwise cost side² × 3 bytes; callers scale larger
// images down first.
const MaxImageSide = 8192

// ProjectorParams says how to open a multimodal projector.
type ProjectorParams struct {
	Threads     int    // CPU threads for encoding images; 1 if 0
	MediaMarker string // the text that stands for an image in prompts; "" means DefaultMediaMarker
	// Type and ShapesChecked are what the caller's check of the file
	// (models.CheckProjector) found: the projector type and whether every
	// tensor's shape was checked.
	Type          string
	ShapesChecked bool
}

// DefaultMediaMarker is the marker mtmd looks for when none is set.
const DefaultMediaMarker = "<__media__>"

// Projector is an open multimodal projector ("mmproj") paired with its text
// model: it turns images into embeddings in the text model's space. Tokenize
// may be called from many goroutines; Encode calls are serialized (mtmd
// keeps one output buffer per projector). Close must not race with them.
type Projector struct {
	c             *C.mtmd_context
	model         *Model
	typ           string
	marker        string
	mrope         bool
	nonCausal     bool
	vision        bool
	shapesChecked bool
	nEmbd         int
	once          sync.Once

	mu      sync.Mutex // serializes Encode: mtmd's output buffer is shared
	encodes atomic.Int64
}

// OpenProjector opens the projector file at path for the text model m. A
// projector whose position scheme (M-RoPE or not) differs from m's is
// refused.
//
// The file must have been checked first, in Go, for m's input width
// (models.CheckProjector: metadata types, the sizes mtmd divides by, and for
// the types it knows every tensor's shape): mtmd asserts on much of what a
// file may hold, and llama.cpp's GGUF reader, which it uses, aborts the
// process on some malformed files.
func OpenProjector(m *Model, path string, p ProjectorParams) (*Projector, error) {
	Init()
	if m == nil || m.c == nil {
		return nil, fmt.Errorf("%w: no text model", ErrProjector)
	}
	marker := p.MediaMarker
	if marker == "" {
		marker = DefaultMediaMarker
	}
	if strings.IndexByte(marker, 0) >= 0 || strings.IndexByte(path, 0) >= 0 {
		return nil, fmt.Errorf("%w: NUL byte in the path or media marker", ErrProjector)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	cmarker := C.CString(marker)
	defer C.free(unsafe.Pointer(cmarker))
	errBuf := make([]byte, 512)

	loadMu.Lock()
	var c *C.mtmd_context
	lines := captureErrors(func() {
		c = C.owl_mtmd_open(cpath, m.c, C.int32_t(max(p.Threads, 1)), C.bool(m.gpu), cmarker, (*C.char)(unsafe.Pointer(&errBuf[0])), C.int32_t(len(errBuf)))
	})
	loadMu.Unlock()
	if c == nil {
		reason := cstr(errBuf)
		if len(lines) > 0 && reason == "mtmd could not load the projector" {
			reason = mtmdReason(lines)
		}
		return nil, fmt.Errorf("%w: %s", ErrProjector, reason)
	}
	pr := &Projector{
		c:             c,
		model:         m,
		typ:           p.Type,
		marker:        marker,
		mrope:         bool(C.mtmd_decode_use_mrope(c)),
		nonCausal:     bool(C.mtmd_decode_use_non_causal(c)),
		vision:        bool(C.mtmd_support_vision(c)),
		shapesChecked: p.ShapesChecked,
		nEmbd:         int(C.llama_model_n_embd_inp(m.c)),
	}
	rope := C.llama_model_rope_type(m.c)
	if modelMRoPE := rope == C.LLAMA_ROPE_TYPE_MROPE || rope == C.LLAMA_ROPE_TYPE_IMROPE; modelMRoPE != pr.mrope {
		pr.Close()
		if modelMRoPE {
			return nil, fmt.Errorf("%w: the text model places tokens with M-RoPE but the %q projector does not", ErrProjector, pr.typ)
		}
		return nil, fmt.Errorf("%w: the %q projector needs a text model with M-RoPE positions", ErrProjector, pr.typ)
	}
	return pr, nil
}

// mtmdReason picks the most telling of mtmd's error lines.
func mtmdReason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if _, after, ok := strings.Cut(lines[i], "error: "); ok {
			return strings.TrimSpace(after)
		}
	}
	return strings.Join(lines, "; ")
}

// cstr returns the NUL-terminated string at the start of b.
func cstr(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

// Close frees the projector. It is safe to call more than once.
func (p *Projector) Close() error {
	p.once.Do(func() {
		C.mtmd_free(p.c)
		p.c = nil
	})
	return nil
}

// Model is the text model the projector was opened for.
func (p *Projector) Model() *Model { return p.model }

// Type is the projector type (clip.projector_type: "mlp", "qwen2vl_merger", ...).
func (p *Projector) Type() string { return p.typ }

// MediaMarker is the text that stands for an image in prompts given to Tokenize.
func (p *Projector) MediaMarker() string { return p.marker }

// UsesMRoPE reports whether image tokens are placed with M-RoPE: an image
// of NX × NY tokens then advances the position by max(NX, NY).
func (p *Projector) UsesMRoPE() bool { return p.mrope }

// NonCausal reports whether image tokens attend to each other without the
// causal mask (Gemma 3); DecodeImage then needs the whole image in one
// micro-batch.
func (p *Projector) NonCausal() bool { return p.nonCausal }

// SupportsVision reports whether the projector encodes images.
func (p *Projector) SupportsVision() bool { return p.vision }

// ShapesChecked reports whether the projector's tensor shapes were checked
// before mtmd read them (true for "mlp" and "qwen2vl_merger").
func (p *Projector) ShapesChecked() bool { return p.shapesChecked }

// NumEmbd is the width of the embeddings the projector makes, the text
// model's input embedding width.
func (p *Projector) NumEmbd() int { return p.nEmbd }

// Encodes is the number of image chunks this projector has encoded.
func (p *Projector) Encodes() int64 { return p.encodes.Load() }

// Bitmap is an image given to Tokenize: RGB pixels, 3 bytes each, rows top
// to bottom, and an ID (such as the content hash) that the image's chunks
// carry for cache tracking.
type Bitmap struct {
	Width, Height int
	RGB           []byte
	ID            string
}

// ChunkKind says what a Chunk holds.
type ChunkKind int

// Chunk kinds.
const (
	ChunkText  ChunkKind = C.MTMD_INPUT_CHUNK_TYPE_TEXT
	ChunkImage ChunkKind = C.MTMD_INPUT_CHUNK_TYPE_IMAGE
	ChunkAudio ChunkKind = C.MTMD_INPUT_CHUNK_TYPE_AUDIO
)

// String names the kind.
func (k ChunkKind) String() string {
	switch k {
	case ChunkText:
		return "text"
	case ChunkImage:
		return "image"
	case ChunkAudio:
		return "audio"
	}
	return fmt.Sprintf("chunk kind %d", int(k))
}

// Chunk is one piece of a tokenized multimodal prompt: text tokens, or one
// image (or one tile of it) to encode and decode as embeddings.
type Chunk struct {
	Kind ChunkKind
	// Tokens are a text chunk's tokens.
	Tokens []Token
	// NumTokens is how many KV cells the chunk fills.
	NumTokens int
	// NumPos is how far the chunk advances the position: NumTokens, except
	// for M-RoPE images, where it is max(NX, NY).
	NumPos int
	// NX × NY is an image chunk's token grid (NX = NumTokens, NY = 1 when
	// the model does not place image tokens in 2-D).
	NX, NY int
	// Image is the index of the Bitmap the chunk came from, -1 for text.
	Image int
	// ID is that Bitmap's ID.
	ID string
	// Part counts the chunks of the same Bitmap before this one: projectors
	// that cut an image into tiles make one chunk per tile.
	Part int
}

// Chunks is a tokenized multimodal prompt. It owns native memory: Close it.
type Chunks struct {
	c    *C.mtmd_input_chunks
	proj *Projector
	// List holds the chunks in prompt order.
	List []Chunk
	once sync.Once
}

// Close frees the chunks. It is safe to call more than once.
func (c *Chunks) Close() error {
	c.once.Do(func() {
		C.mtmd_input_chunks_free(c.c)
		c.c = nil
	})
	return nil
}

// NumTokens is the number of KV cells all chunks fill.
func (c *Chunks) NumTokens() int {
	n := 0
	for _, ch := range c.List {
		n += ch.NumTokens
	}
	return n
}

// NumPos is the number of positions all chunks advance.
func (c *Chunks) NumPos() int {
	n := 0
	for _, ch := range c.List {
		n += ch.NumPos
	}
	return n
}

// Tokenize splits text at the media marker and tokenizes it with images,
// the i-th image standing where the i-th marker is. The model's image
// delimiters (such as Qwen2-VL's <|vision_start|>) are added around each
// image, and each image is resized and normalized as the projector needs, in
// one native call. addSpecial adds BOS where the model wants it;
// parseSpecial lets special-token text become special tokens.
func (p *Projector) Tokenize(text string, images []Bitmap, addSpecial, parseSpecial bool) (*Chunks, error) {
	if p.c == nil {
		return nil, errClosed
	}
	if strings.IndexByte(text, 0) >= 0 {
		return nil, errors.New("prompt contains a NUL byte")
	}
	if len(images) > 0 && !p.vision {
		return nil, fmt.Errorf("%w (projector type %q)", ErrNoVision, p.typ)
	}
	// mtmd also takes its old image marker for the media marker.
	if n := strings.Count(text, p.marker) + strings.Count(text, "<__image__>"); n != len(images) {
		return nil, fmt.Errorf("%w: %d markers %q and %d images", ErrMarkers, n, p.marker, len(images))
	}
	n := len(images)
	nx := make([]uint32, n+1)
	ny := make([]uint32, n+1)
	ptrs := make([]*C.uchar, n+1)
	var ids []byte
	var pin runtime.Pinner
	defer pin.Unpin()
	for i, im := range images {
		switch {
		case im.Width <= 0 || im.Height <= 0:
			return nil, fmt.Errorf("%w %d: %d×%d pixels", ErrBadImage, i, im.Width, im.Height)
		case im.Width > MaxImageSide || im.Height > MaxImageSide:
			return nil, fmt.Errorf("%w %d: %d×%d pixels; scale it to at most %d on each side", ErrBadImage, i, im.Width, im.Height, MaxImageSide)
		case len(im.RGB) != im.Width*im.Height*3:
			return nil, fmt.Errorf("%w %d: %d×%d pixels need %d RGB bytes, got %d", ErrBadImage, i, im.Width, im.Height, im.Width*im.Height*3, len(im.RGB))
		case strings.IndexByte(im.ID, 0) >= 0:
			return nil, fmt.Errorf("%w %d: NUL byte in the ID", ErrBadImage, i)
		}
		nx[i], ny[i] = uint32(im.Width), uint32(im.Height)
		pin.Pin(&im.RGB[0])
		ptrs[i] = (*C.uchar)(unsafe.Pointer(&im.RGB[0]))
		ids = append(ids, im.ID...)
		ids = append(ids, 0)
	}
	ids = append(ids, 0)
	ctext := append([]byte(text), 0)

	var out *C.mtmd_input_chunks
	var nChunks, nText C.int32_t
	status := C.owl_mtmd_tokenize(p.c, (*C.char)(unsafe.Pointer(&ctext[0])), C.bool(addSpecial), C.bool(parseSpecial),
		C.int32_t(n), (*C.uint32_t)(unsafe.Pointer(&nx[0])), (*C.uint32_t)(unsafe.Pointer(&ny[0])),
		(**C.uchar)(unsafe.Pointer(&ptrs[0])), (*C.char)(unsafe.Pointer(&ids[0])), &out, &nChunks, &nText)
	switch status {
	case 0:
	case 1:
		return nil, fmt.Errorf("%w: %d images", ErrMarkers, n)
	case 2:
		return nil, fmt.Errorf("%w: the projector could not preprocess an image", ErrBadImage)
	case -2:
		return nil, errors.New("mtmd_tokenize failed in native code (out of memory?)")
	default:
		return nil, fmt.Errorf("mtmd_tokenize failed with status %d", int(status))
	}
	chunks := &Chunks{c: out, proj: p}
	k := int(nChunks)
	types, nTok, nPos, cx, cy, img := make([]int32, k+1), make([]int32, k+1), make([]int32, k+1), make([]int32, k+1), make([]int32, k+1), make([]int32, k+1)
	text32 := make([]Token, int(nText)+1)
	C.owl_mtmd_chunks_dump(out, i32(types), i32(nTok), i32(nPos), i32(cx), i32(cy), i32(img), i32(text32))
	parts := map[int]int{}
	used := 0
	for i := range k {
		ch := Chunk{Kind: ChunkKind(types[i]), NumTokens: int(nTok[i]), NumPos: int(nPos[i]), NX: int(cx[i]), NY: int(cy[i]), Image: int(img[i])}
		if ch.Kind == ChunkText {
			ch.Tokens = text32[used : used+ch.NumTokens : used+ch.NumTokens]
			used += ch.NumTokens
		}
		if ch.Image >= 0 && ch.Image < n {
			ch.ID = images[ch.Image].ID
			ch.Part = parts[ch.Image]
			parts[ch.Image]++
		}
		chunks.List = append(chunks.List, ch)
	}
	return chunks, nil
}

func i32(s []int32) *C.int32_t { return (*C.int32_t)(unsafe.Pointer(&s[0])) }

// ImageEmbedding is what the projector made of one image chunk: NumTokens
// embeddings of NumEmbd floats, with the chunk's token grid and position
// count, so that it can be decoded again later (from a cache) without the
// chunk.
type ImageEmbedding struct {
	Data      []float32 // NumTokens × NumEmbd
	NumTokens int
	NumEmbd   int
	NX, NY    int
	NumPos    int
}

// Bytes is the memory the embedding's data takes.
func (e *ImageEmbedding) Bytes() int64 { return int64(len(e.Data)) * 4 }

// Encode runs the vision encoder and projector over image chunk i of c and
// returns a copy of its embeddings. ctx is checked before the native encode
// starts; the encode itself cannot be interrupted.
func (p *Projector) Encode(ctx context.Context, c *Chunks, i int) (*ImageEmbedding, error) {
	if p.c == nil {
		return nil, errClosed
	}
	if c.proj != p || c.c == nil {
		return nil, errors.New("encode: the chunks are closed or belong to another projector")
	}
	if i < 0 || i >= len(c.List) || c.List[i].Kind != ChunkImage {
		return nil, fmt.Errorf("encode: chunk %d of %d is not an image", i, len(c.List))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := c.List[i]
	e := &ImageEmbedding{Data: make([]float32, ch.NumTokens*p.nEmbd), NumTokens: ch.NumTokens, NumEmbd: p.nEmbd, NX: ch.NX, NY: ch.NY, NumPos: ch.NumPos}
	p.mu.Lock()
	status := C.owl_mtmd_encode(p.c, c.c, C.int32_t(i), (*C.float)(unsafe.Pointer(&e.Data[0])), C.int64_t(len(e.Data)))
	p.mu.Unlock()
	if status != 0 {
		return nil, fmt.Errorf("encode image chunk %d: mtmd status %d", i, int(status))
	}
	p.encodes.Add(1)
	return e, nil
}

// DecodeImage decodes an image's embeddings into sequence seq of ctx from
// position pos, in batches of ctx.NumBatch(), and returns the position that
// follows the image: pos + e.NumPos. M-RoPE models get each token's row and
// column as positions; non-causal projectors (NonCausal) have the causal mask
// lifted while the image is decoded. No logits are produced: decode the text
// after the image for them. On error (ErrKVFull, ErrAborted) the cells the
// image took are removed again.
func (p *Projector) DecodeImage(ctx *Context, e *ImageEmbedding, pos, seq int32) (int32, error) {
	switch {
	case p.c == nil:
		return pos, errClosed
	case ctx == nil || ctx.c == nil:
		return pos, errors.New("decode image: the context is closed")
	case e.NumEmbd != p.nEmbd || e.NumEmbd != int(C.llama_model_n_embd_inp(ctx.model.c)):
		return pos, fmt.Errorf("decode image: embeddings of width %d for a model of width %d", e.NumEmbd, int(C.llama_model_n_embd_inp(ctx.model.c)))
	case e.NumTokens <= 0 || len(e.Data) != e.NumTokens*e.NumEmbd || e.NX*e.NY != e.NumTokens:
		return pos, fmt.Errorf("decode image: %d floats for %d tokens of %d (grid %d×%d)", len(e.Data), e.NumTokens, e.NumEmbd, e.NX, e.NY)
	case p.mrope && e.NumPos != max(e.NX, e.NY), !p.mrope && e.NumPos != e.NumTokens:
		return pos, fmt.Errorf("decode image: %d positions do not fit a %d×%d grid (M-RoPE %v)", e.NumPos, e.NX, e.NY, p.mrope)
	case pos < 0 || int64(pos)+int64(e.NumPos) > math.MaxInt32:
		return pos, fmt.Errorf("decode image: position %d", pos)
	case p.nonCausal && e.NumTokens > int(C.llama_n_ubatch(ctx.c)):
		return pos, fmt.Errorf("decode image: %d image tokens attend to each other and must fit one micro-batch of %d", e.NumTokens, int(C.llama_n_ubatch(ctx.c)))
	}
	status := C.owl_decode_embd(ctx.c, (*C.float)(unsafe.Pointer(&e.Data[0])), C.int32_t(e.NumTokens), C.int32_t(e.NumEmbd),
		C.int32_t(e.NX), C.int32_t(e.NY), C.bool(p.mrope), C.bool(p.nonCausal), C.int32_t(pos), C.int32_t(seq), C.int32_t(ctx.nBatch))
	switch {
	case status == 0:
		return pos + int32(e.NumPos), nil
	case status == 1:
		return pos, fmt.Errorf("%w: no room for an image of %d tokens in %d cells", ErrKVFull, e.NumTokens, ctx.nCtx)
	case status == 2:
		return pos, ErrAborted
	default:
		return pos, fmt.Errorf("decode image: llama_decode failed with status %d", int(status))
	}
}

// evalReference evaluates the chunks with mtmd's own helper from position
// pos into seq and returns the last token's logits and the next position.
// Tests compare Tokenize, Encode and DecodeImage with it.
func (p *Projector) evalReference(ctx *Context, c *Chunks, pos, seq int32) ([]float32, int32, error) {
	logits := make([]float32, ctx.model.nVocab)
	var next C.int32_t
	status := C.owl_mtmd_eval_reference(p.c, ctx.c, c.c, C.int32_t(pos), C.int32_t(seq), C.int32_t(ctx.nBatch),
		(*C.float)(unsafe.Pointer(&logits[0])), C.int32_t(len(logits)), &next)
	if status != 0 {
		return nil, 0, fmt.Errorf("mtmd_helper_eval_chunks failed with status %d", int(status))
	}
	return logits, int32(next), nil
}
