package testmodel

import (
	"fmt"
	"io"
	"math"

	"github.com/owlengine/owl/models"
)

// Projector types generated here, as clip.projector_type names them.
const (
	// ProjectorMLP is LLaVA 1.5's: a CLIP ViT whose second-to-last layer's
	// patch features go through a two-layer MLP (mm.0, GELU, mm.2). Images are
	// padded to a square and resized to ImageSize; every patch is one token
	// at its own position.
	ProjectorMLP = "mlp"
	// ProjectorQwen2VL is Qwen2-VL's: a ViT with 2-D rotary positions over
	// images kept near their own size, whose 2×2 neighbouring patches are
	// merged into one token. The text model places those tokens with M-RoPE,
	// so an image of nx × ny tokens advances the position by max(nx, ny), not
	// by nx·ny.
	ProjectorQwen2VL = "qwen2vl_merger"
)

// ProjectorConfig describes a generated multimodal projector ("mmproj")
// GGUF as llama.cpp's mtmd reads it: general.architecture "clip", a vision
// encoder and a projection into the text model's embedding space.
type ProjectorConfig struct {
	Name      string
	Type      string // ProjectorMLP or ProjectorQwen2VL
	ImageSize int    // side of the square images (mlp); nominal for qwen2vl
	PatchSize int
	Embd      int // vision width
	Heads     int
	FF        int // vision feed-forward width
	Layers    int
	Hidden    int // width of the projector's hidden layer (mm.0's output)
	TextEmbd  int // width of the output: the text model's n_embd
	Weights   models.GGMLType
	Seed      uint64
}

// TinyLlavaProjector pairs with TinyLlama: 32-pixel images in 8-pixel
// patches (16 image tokens), vision width 32, two layers, output width 64.
func TinyLlavaProjector() ProjectorConfig {
	return ProjectorConfig{Name: "owl-test-tiny-mmproj", Type: ProjectorMLP, ImageSize: 32, PatchSize: 8, Embd: 32, Heads: 4, FF: 64,
		Layers: 2, Hidden: 64, TextEmbd: TinyLlama().Embd, Weights: models.TypeF16, Seed: 21}
}

// RealisticLlavaProjector has the shape of CLIP ViT-B/16 at 224 pixels
// (width 768, 12 heads, 12 layers, 196 image tokens) with an MLP into
// textEmbd, for benchmarks.
func RealisticLlavaProjector(textEmbd int) ProjectorConfig {
	return ProjectorConfig{Name: "owl-test-vit-b16-mmproj", Type: ProjectorMLP, ImageSize: 224, PatchSize: 16, Embd: 768, Heads: 12, FF: 3072,
		Layers: 12, Hidden: textEmbd, TextEmbd: textEmbd, Weights: models.TypeF16, Seed: 22}
}

// TinyQwen2VLProjector pairs with TinyQwen2VL: 4-pixel patches merged 2×2,
// so one token covers 8×8 pixels; a 64×48 image gives 8×6 = 48 tokens
// spanning 8 positions.
func TinyQwen2VLProjector() ProjectorConfig {
	return ProjectorConfig{Name: "owl-test-tiny-qwen2vl-mmproj", Type: ProjectorQwen2VL, ImageSize: 64, PatchSize: 4, Embd: 32, Heads: 2, FF: 64,
		Layers: 2, Hidden: 128, TextEmbd: TinyQwen2VL().Embd, Weights: models.TypeF16, Seed: 23}
}

// Qwen2-VL's image delimiters, which mtmd puts around every image.
const (
	TokenVisionStart = "<|vision_start|>"
	TokenVisionEnd   = "<|vision_end|>"
)

// TinyQwen2VL is a qwen2vl-architecture text model shaped like TinyLlama:
// M-RoPE over head dimension 16 (sections 2, 3, 3 of its 8 rotary pairs),
// biased query, key and value projections, and Qwen2-VL's image delimiters
// as control tokens.
func TinyQwen2VL() LlamaConfig {
	c := TinyLlama()
	c.Name = "owl-test-tiny-qwen2vl"
	c.Arch = "qwen2vl"
	c.RopeBase = 1000000
	c.QKVBias = true
	c.RopeSections = [4]int32{2, 3, 3, 0}
	c.ExtraSpecial = []string{TokenVisionStart, TokenVisionEnd}
	c.Seed = 3
	return c
}

func (c ProjectorConfig) validate() error {
	switch {
	case c.Embd <= 0 || c.Heads <= 0 || c.FF <= 0 || c.Layers <= 0 || c.Hidden <= 0 || c.TextEmbd <= 0 || c.PatchSize <= 0 || c.ImageSize <= 0:
		return fmt.Errorf("projector config %+v: sizes must be positive", c)
	case c.Embd%c.Heads != 0:
		return fmt.Errorf("projector: width %d is not a multiple of %d heads", c.Embd, c.Heads)
	case c.FF == c.Embd:
		// mtmd takes a down projection as wide as the model for a legacy
		// file with up and down swapped.
		return fmt.Errorf("projector: feed-forward width must differ from the width %d", c.Embd)
	}
	switch c.Type {
	case ProjectorMLP:
		if c.ImageSize%c.PatchSize != 0 {
			return fmt.Errorf("projector: image size %d is not a multiple of the patch size %d", c.ImageSize, c.PatchSize)
		}
	case ProjectorQwen2VL:
		if (c.Embd/c.Heads)%4 != 0 {
			return fmt.Errorf("projector: qwen2vl needs a head width divisible by 4, got %d", c.Embd/c.Heads)
		}
	default:
		return fmt.Errorf("projector type %q is not generated (want %s or %s)", c.Type, ProjectorMLP, ProjectorQwen2VL)
	}
	switch c.Weights {
	case models.TypeF32, models.TypeF16:
	default:
		return fmt.Errorf("projector weights of type %s are not generated (f32, f16)", c.Weights)
	}
	return nil
}

// ProjectorGGUF returns the metadata and tensors of the projector c, for
// WriteGGUF; tests alter them to make broken files.
func ProjectorGGUF(c ProjectorConfig) ([]models.GGUFKV, []models.TensorSpec, error) {
	if err := c.validate(); err != nil {
		return nil, nil, err
	}
	kvs := []models.GGUFKV{
		{Key: "general.architecture", Value: "clip"},
		{Key: "general.name", Value: c.Name},
		{Key: "general.file_type", Value: fileType(c.Weights)},
		{Key: "clip.has_vision_encoder", Value: true},
		{Key: "clip.projector_type", Value: c.Type},
		{Key: "clip.vision.image_size", Value: uint32(c.ImageSize)},
		{Key: "clip.vision.patch_size", Value: uint32(c.PatchSize)},
		{Key: "clip.vision.embedding_length", Value: uint32(c.Embd)},
		{Key: "clip.vision.feed_forward_length", Value: uint32(c.FF)},
		{Key: "clip.vision.block_count", Value: uint32(c.Layers)},
		{Key: "clip.vision.attention.head_count", Value: uint32(c.Heads)},
		{Key: "clip.vision.attention.layer_norm_epsilon", Value: float32(1e-6)},
		{Key: "clip.vision.projection_dim", Value: uint32(c.TextEmbd)},
		// CLIP's normalization; Qwen2-VL uses the same values.
		{Key: "clip.vision.image_mean", Value: []float32{0.48145466, 0.4578275, 0.40821073}},
		{Key: "clip.vision.image_std", Value: []float32{0.26862954, 0.26130258, 0.27577711}},
	}
	if c.Type == ProjectorMLP {
		kvs = append(kvs, models.GGUFKV{Key: "clip.use_gelu", Value: false}) // CLIP's quick GELU
	} else {
		kvs = append(kvs, models.GGUFKV{Key: "clip.vision.spatial_merge_size", Value: uint32(2)})
	}

	var tensors []models.TensorSpec
	add := func(name string, t models.GGMLType, scale float32, offset float32, dims ...int) {
		d := make([]uint64, len(dims))
		n := 1
		for i, v := range dims {
			d[i] = uint64(v)
			n *= v
		}
		tensors = append(tensors, models.TensorSpec{Name: name, Type: t, Dims: d, Write: func(w io.Writer) error {
			r := newRNG(seedFor(c.Seed, name))
			return encodeRows(w, t, n, dims[0], func() float32 { return offset + r.uniform(scale) })
		}})
	}
	// matrix adds an [in, out] weight scaled to keep activations near unit size.
	matrix := func(name string, in, out int) {
		add(name, c.Weights, float32(1/math.Sqrt(float64(in))), 0, in, out)
	}
	vector := func(name string, n int) { add(name, models.TypeF32, 0.1, 0, n) }
	normW := func(name string, n int) { add(name, models.TypeF32, 0.1, 1, n) }
	conv := func(name string) {
		// A conv2d kernel [kw, kh, channels in, channels out]; f16 as mtmd's
		// converters write it, the fan-in is a patch's pixels.
		in := c.PatchSize * c.PatchSize * 3
		add(name, models.TypeF16, float32(1/math.Sqrt(float64(in))), 0, c.PatchSize, c.PatchSize, 3, c.Embd)
	}

	e := c.Embd
	conv("v.patch_embd.weight")
	if c.Type == ProjectorMLP {
		nPos := (c.ImageSize/c.PatchSize)*(c.ImageSize/c.PatchSize) + 1
		add("v.class_embd", models.TypeF32, 1, 0, e)
		add("v.position_embd.weight", models.TypeF16, 0.5, 0, e, nPos)
		normW("v.pre_ln.weight", e)
		vector("v.pre_ln.bias", e)
	} else {
		conv("v.patch_embd.weight.1") // the second temporal frame's kernel
	}
	for l := range c.Layers {
		p := fmt.Sprintf("v.blk.%d.", l)
		normW(p+"ln1.weight", e)
		vector(p+"ln1.bias", e)
		for _, m := range []string{"attn_q", "attn_k", "attn_v", "attn_out"} {
			matrix(p+m+".weight", e, e)
			vector(p+m+".bias", e)
		}
		normW(p+"ln2.weight", e)
		vector(p+"ln2.bias", e)
		matrix(p+"ffn_up.weight", e, c.FF)
		vector(p+"ffn_up.bias", c.FF)
		matrix(p+"ffn_down.weight", c.FF, e)
		vector(p+"ffn_down.bias", e)
	}
	in := e
	if c.Type == ProjectorQwen2VL {
		// The merger's layer norm, then an MLP over 2×2 merged patches.
		normW("v.post_ln.weight", e)
		vector("v.post_ln.bias", e)
		in = 4 * e
	}
	matrix("mm.0.weight", in, c.Hidden)
	vector("mm.0.bias", c.Hidden)
	matrix("mm.2.weight", c.Hidden, c.TextEmbd)
	vector("mm.2.bias", c.TextEmbd)
	return kvs, tensors, nil
}

// WriteProjector writes the GGUF of the projector c to w.
func WriteProjector(w io.Writer, c ProjectorConfig) error {
	kvs, tensors, err := ProjectorGGUF(c)
	if err != nil {
		return err
	}
	return models.WriteGGUF(w, kvs, tensors)
}

// WriteProjectorFile writes the projector to path atomically.
func WriteProjectorFile(path string, c ProjectorConfig) error {
	return writeFileAtomic(path, func(w io.Writer) error { return WriteProjector(w, c) })
}
