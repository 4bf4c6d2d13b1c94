package llm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/owlengine/owl/bindings/llama"
	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/vision"
)

// ErrNoVision is returned for images given to a model without a projector
// that encodes them.
var ErrNoVision = errors.New("the model cannot see images")

// ImageMarker stands for an image in the text given to Prepare and
// PlaceImages.
const ImageMarker = llama.DefaultMediaMarker

// Projector is a multimodal projector ("mmproj" GGUF) opened for a Model:
// it turns images into embeddings the text model reads like tokens.
type Projector struct {
	p     *llama.Projector
	model *Model
	path  string
}

// OpenProjector checks the projector file at path and opens it for m.
// Errors name the file and say what is wrong (not a projector, made for a
// text model of another width, ...).
func (m *Model) OpenProjector(path string, threads int) (*Projector, error) {
	g, err := models.ReadGGUF(path) // llama.cpp's own reader aborts on some malformed files
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file", path)
		}
		return nil, err
	}
	if arch := g.Architecture(); arch != "clip" {
		return nil, fmt.Errorf("%s: not a vision projector (its architecture is %q; projectors are \"clip\" files, usually named mmproj-*.gguf)", path, arch)
	}
	check, err := models.CheckProjector(g, m.m.InputEmbd())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	p, err := llama.OpenProjector(m.m, path, llama.ProjectorParams{Threads: threads, Type: check.Type, ShapesChecked: check.ShapesChecked})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !p.SupportsVision() {
		p.Close()
		return nil, fmt.Errorf("%s: %w: the projector encodes no images", path, ErrNoVision)
	}
	return &Projector{p: p, model: m, path: path}, nil
}

// Close frees the projector. It is idempotent.
func (p *Projector) Close() error { return p.p.Close() }

// Marker is the text that stands for an image in a prompt given to Prepare.
func (p *Projector) Marker() string { return p.p.MediaMarker() }

// Encodes is how many image chunks the projector has encoded (cache hits
// encode nothing).
func (p *Projector) Encodes() int64 { return p.p.Encodes() }

// ImageCache keeps image embeddings by content hash, bounded in bytes.
type ImageCache = vision.EmbeddingCache[*llama.ImageEmbedding]

// NewImageCache returns a cache of at most maxBytes of embeddings.
func NewImageCache(maxBytes int64) *ImageCache {
	return vision.NewEmbeddingCache[*llama.ImageEmbedding](maxBytes)
}

// ImageChunk is one image (or one tile of it) of a prompt, encoded.
type ImageChunk struct {
	Key vision.CacheKey
	emb *llama.ImageEmbedding
}

// Cells is the number of KV cells the chunk fills.
func (c *ImageChunk) Cells() int { return c.emb.NumTokens }

// Positions is how far the chunk advances the position (Cells, except for
// models placing image tokens in 2-D).
func (c *ImageChunk) Positions() int { return c.emb.NumPos }

// PromptPart is a stretch of a prompt: text tokens, or an image chunk.
type PromptPart struct {
	Tokens []Token
	Image  *ImageChunk
}

// Prepare tokenizes text, in which each occurrence of Marker stands for the
// next of images, and returns the prompt as parts. Images already in cache
// (by content hash) are not encoded again; those encoded are added to it.
// cache may be nil.
func (p *Projector) Prepare(ctx context.Context, text string, images []*vision.Image, cache *ImageCache, addSpecial, parseSpecial bool) ([]PromptPart, error) {
	bitmaps := make([]llama.Bitmap, len(images))
	for i, im := range images {
		if max(im.Width, im.Height) > llama.MaxImageSide {
			im = im.Fit(llama.MaxImageSide)
		}
		bitmaps[i] = llama.Bitmap{Width: im.Width, Height: im.Height, RGB: im.RGB, ID: im.Hash.String()}
	}
	chunks, err := p.p.Tokenize(text, bitmaps, addSpecial, parseSpecial)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.path, err)
	}
	defer chunks.Close()
	var parts []PromptPart
	for i, ch := range chunks.List {
		switch ch.Kind {
		case llama.ChunkText:
			if len(ch.Tokens) > 0 {
				parts = append(parts, PromptPart{Tokens: ch.Tokens})
			}
		case llama.ChunkImage:
			key := vision.CacheKey{Image: images[ch.Image].Hash, Projector: p.path, Part: ch.Part}
			var emb *llama.ImageEmbedding
			ok := false
			if cache != nil {
				emb, ok = cache.Get(key)
			}
			if !ok {
				if emb, err = p.p.Encode(ctx, chunks, i); err != nil {
					return nil, fmt.Errorf("%s: %w", p.path, err)
				}
				if cache != nil {
					cache.Put(key, emb, emb.Bytes())
				}
			}
			parts = append(parts, PromptPart{Image: &ImageChunk{Key: key, emb: emb}})
		default:
			return nil, fmt.Errorf("%s: %w: a %s chunk in the prompt", p.path, ErrNoVision, ch.Kind)
		}
	}
	return parts, nil
}

// DecodeImage evaluates an image chunk's embeddings into sequence seq from
// position pos and returns the position after it. No logits are produced.
// On error the image's cells are removed again.
func (c *Context) DecodeImage(p *Projector, im *ImageChunk, pos, seq int32) (int32, error) {
	if int(seq) >= c.nSeq || seq < 0 {
		return pos, fmt.Errorf("decode image: sequence %d outside 0…%d", seq, c.nSeq-1)
	}
	next, err := p.p.DecodeImage(c.c, im.emb, pos, seq)
	if err != nil && !errors.Is(err, ErrKVFull) && !errors.Is(err, ErrAborted) {
		return pos, fmt.Errorf("%s: %w", p.path, err)
	}
	return next, err
}

// PlaceImages makes content hold one marker per image: content that holds
// none gets them at its start, one per line; content that holds exactly one
// per image keeps them where they are.
func PlaceImages(content string, images int, marker string) (string, error) {
	n := strings.Count(content, marker)
	switch {
	case images == 0 && n == 0, n == images:
		return content, nil
	case n == 0:
		return strings.Repeat(marker+"\n", images) + content, nil
	}
	return "", fmt.Errorf("%d image markers (%s) in the text for %d images", n, marker, images)
}
