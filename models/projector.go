package models

import (
	"errors"
	"fmt"
	"slices"
)

// ErrProjector is wrapped by the errors of CheckProjector: a file that is
// not a multimodal projector, or not one a text model can use.
var ErrProjector = errors.New("unusable projector")

// ProjectorCheck is what CheckProjector learned about a projector.
type ProjectorCheck struct {
	// Type is clip.projector_type: "mlp" (LLaVA's MLP over a CLIP ViT),
	// "qwen2vl_merger", "gemma3", ...
	Type string
	// ShapesChecked says every tensor's shape was checked (the mlp and
	// qwen2vl_merger types); projectors of the other types get the
	// metadata checks only, and llama.cpp's mtmd checks the rest.
	ShapesChecked bool
}

// Projector types llama.cpp's mtmd knows (clip.projector_type).
var knownProjectors = []string{
	"mlp", "mlp_norm", "ldp", "ldpv2", "resampler", "adapter", "qwen2vl_merger", "qwen2.5vl_merger", "qwen3vl_merger",
	"gemma3", "idefics3", "pixtral", "ultravox", "internvl", "llama4", "qwen2a", "glma", "qwen2.5o", "voxtral", "lfm2",
	"kimivl", "lightonocr", "cogvlm", "janus_pro", "glm4v",
}

// Audio projectors mtmd can set up; for any other it aborts.
var audioProjectors = []string{"ultravox", "qwen2a", "qwen2.5o", "voxtral"}

// CheckProjector checks g, a multimodal projector ("mmproj" GGUF, as
// llama.cpp's mtmd reads it), for a text model whose input embeddings are
// textEmbd wide, before any native code reads it: mtmd asserts on, divides
// by, or indexes with much of what it finds there. It checks the type of
// every metadata key mtmd reads, the sizes it divides by or allocates
// from, and, for LLaVA ("mlp") and Qwen2-VL ("qwen2vl_merger")
// projectors, every tensor's shape and the projection width against
// textEmbd. Errors wrap ErrProjector and say what is wrong.
func CheckProjector(g *GGUF, textEmbd int) (ProjectorCheck, error) {
	c := projectorChecker{g: g, tensors: map[string]*TensorInfo{}}
	for i := range g.Tensors {
		c.tensors[g.Tensors[i].Name] = &g.Tensors[i]
	}
	var out ProjectorCheck
	if arch, ok := g.Get("general.architecture"); ok {
		if s, _ := arch.Value.(string); arch.Type != GGUFString || s != "clip" {
			if arch.Type != GGUFString {
				s = "?"
			}
			return out, fmt.Errorf("%w: the file is a %q model, not a multimodal projector (general.architecture \"clip\")", ErrProjector, s)
		}
	}
	if err := c.keys(); err != nil {
		return out, err
	}
	out.Type = c.str("clip.projector_type")
	if out.Type == "" {
		out.Type = c.str("clip.vision.projector_type")
	}
	if out.Type == "" && c.flag("clip.has_vision_encoder") {
		out.Type = "mlp" // mtmd's default
	}
	if out.Type != "" && !slices.Contains(knownProjectors, out.Type) {
		return out, fmt.Errorf("%w: projector type %q is not one llama.cpp knows", ErrProjector, out.Type)
	}
	if !c.flag("clip.has_vision_encoder") {
		return out, nil
	}
	var err error
	switch out.Type {
	case "mlp":
		err = c.mlp(int64(textEmbd))
	case "qwen2vl_merger":
		err = c.qwen2vl(int64(textEmbd))
	default:
		return out, nil
	}
	out.ShapesChecked = err == nil
	return out, err
}

// projectorChecker reads a projector's metadata and tensors, each typed
// read after its type is checked.
type projectorChecker struct {
	g       *GGUF
	tensors map[string]*TensorInfo
}

func failf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProjector}, args...)...)
}

// typeName is gguf's name of a metadata type.
func typeName(t GGUFValueType) string {
	names := map[GGUFValueType]string{GGUFUint8: "u8", GGUFInt8: "i8", GGUFUint16: "u16", GGUFInt16: "i16", GGUFUint32: "u32",
		GGUFInt32: "i32", GGUFFloat32: "f32", GGUFBool: "bool", GGUFString: "str", GGUFArray: "arr", GGUFUint64: "u64",
		GGUFInt64: "i64", GGUFFloat64: "f64"}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type %d", t)
}

// typed checks the type of key when it is present; a required key must be.
func (c *projectorChecker) typed(key string, want GGUFValueType, required bool) error {
	kv, ok := c.g.Get(key)
	switch {
	case !ok && required:
		return failf("missing metadata %s", key)
	case ok && kv.Type != want:
		return failf("metadata %s is %s, want %s", key, typeName(kv.Type), typeName(want))
	}
	return nil
}

// array checks an array's element type and length (at least minN, even
// when even).
func (c *projectorChecker) array(key string, elem GGUFValueType, minN int, even, required bool) error {
	kv, ok := c.g.Get(key)
	switch {
	case !ok && required:
		return failf("missing metadata %s", key)
	case !ok:
		return nil
	case kv.Type != GGUFArray:
		return failf("metadata %s is not an array", key)
	case kv.ArrayType != elem:
		return failf("metadata %s holds %s, want %s", key, typeName(kv.ArrayType), typeName(elem))
	}
	n, _ := c.g.ArrayLen(key)
	if n < minN || even && n%2 != 0 {
		return failf("metadata %s has %d values", key, n)
	}
	return nil
}

// u32 reads a key whose type was checked; def when absent.
func (c *projectorChecker) u32(key string, def int64) int64 {
	if kv, ok := c.g.Get(key); ok {
		if v, ok := kv.Value.(uint32); ok {
			return int64(v)
		}
	}
	return def
}

func (c *projectorChecker) flag(key string) bool {
	kv, ok := c.g.Get(key)
	v, _ := kv.Value.(bool)
	return ok && v
}

func (c *projectorChecker) str(key string) string {
	s, _ := c.g.String(key)
	return s
}

func (c *projectorChecker) ints(key string) []int32 {
	kv, _ := c.g.Get(key)
	v, _ := kv.Value.([]int32)
	return v
}

// checks runs checks in order and returns the first error.
func checks(errs ...func() error) error {
	for _, f := range errs {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// keys checks the type of every key mtmd reads, and the sizes it divides
// by and allocates from.
func (c *projectorChecker) keys() error {
	for _, k := range []struct {
		key string
		typ GGUFValueType
	}{
		{"general.name", GGUFString}, {"general.description", GGUFString}, {"clip.has_vision_encoder", GGUFBool},
		{"clip.has_audio_encoder", GGUFBool}, {"clip.projector_type", GGUFString}, {"clip.vision.projector_type", GGUFString},
		{"clip.audio.projector_type", GGUFString}, {"clip.use_gelu", GGUFBool}, {"clip.use_silu", GGUFBool},
		{"clip.vision.mm_patch_merge_type", GGUFString}, {"clip.vision.image_crop_resolution", GGUFUint32},
		{"clip.minicpmv_version", GGUFInt32}, {"clip.minicpmv_query_num", GGUFUint32},
		{"clip.vision.projector.scale_factor", GGUFUint32}, {"clip.vision.preproc_image_size", GGUFUint32},
		{"clip.vision.spatial_merge_size", GGUFUint32}, {"clip.vision.n_wa_pattern", GGUFUint32},
		{"clip.audio.num_mel_bins", GGUFUint32}, {"clip.audio.projector.stack_factor", GGUFUint32},
	} {
		if err := c.typed(k.key, k.typ, false); err != nil {
			return err
		}
	}
	if err := checks(
		func() error { return c.array("clip.vision.image_grid_pinpoints", GGUFInt32, 0, true, false) },
		func() error { return c.array("clip.vision.feature_layer", GGUFInt32, 0, false, false) },
	); err != nil {
		return err
	}
	vision, audio := c.flag("clip.has_vision_encoder"), c.flag("clip.has_audio_encoder")
	if !vision && !audio {
		return failf("the file has neither a vision nor an audio encoder (clip.has_vision_encoder is not true); is it a multimodal projector?")
	}
	for _, enc := range []struct {
		name string
		on   bool
	}{{"vision", vision}, {"audio", audio}} {
		if !enc.on {
			continue
		}
		p := "clip." + enc.name + "."
		for _, k := range []struct {
			key string
			typ GGUFValueType
		}{{"embedding_length", GGUFUint32}, {"attention.head_count", GGUFUint32}, {"feed_forward_length", GGUFUint32},
			{"block_count", GGUFUint32}, {"projection_dim", GGUFUint32}, {"attention.layer_norm_epsilon", GGUFFloat32}} {
			if err := c.typed(p+k.key, k.typ, true); err != nil {
				return err
			}
		}
		embd, heads, layers := c.u32(p+"embedding_length", 0), c.u32(p+"attention.head_count", 0), c.u32(p+"block_count", 0)
		if heads <= 0 || embd <= 0 || embd%heads != 0 {
			return failf("%s width %d is not a positive multiple of %d heads", enc.name, embd, heads)
		}
		if layers > 1024 || layers > int64(len(c.g.Tensors)) {
			return failf("%s encoder claims %d layers but the file has %d tensors", enc.name, layers, len(c.g.Tensors))
		}
	}
	if vision {
		if err := checks(
			func() error { return c.typed("clip.vision.image_size", GGUFUint32, true) },
			func() error { return c.typed("clip.vision.patch_size", GGUFUint32, true) },
			func() error { return c.array("clip.vision.image_mean", GGUFFloat32, 3, false, true) },
			func() error { return c.array("clip.vision.image_std", GGUFFloat32, 3, false, true) },
		); err != nil {
			return err
		}
		size, patch := c.u32("clip.vision.image_size", 0), c.u32("clip.vision.patch_size", 0)
		if patch <= 0 || size <= 0 || size > 8192 || patch > size {
			return failf("image size %d with patch size %d", size, patch)
		}
		// LLaVA-1.6's resolutions: images are cut into tiles of image_size.
		for _, v := range c.ints("clip.vision.image_grid_pinpoints") {
			if v <= 0 || v > 8192 || int64(v)%size != 0 {
				return failf("grid resolution %d is not a multiple of the image size %d up to 8192", v, size)
			}
		}
		if kv, ok := c.g.Get("clip.minicpmv_version"); ok {
			if v := kv.Value.(int32); v < 2 || v > 6 {
				return failf("MiniCPM-V version %d is not one llama.cpp knows (2 to 6)", v)
			}
		}
	}
	if audio {
		if err := c.typed("clip.audio.num_mel_bins", GGUFUint32, true); err != nil {
			return err
		}
		at := c.str("clip.projector_type")
		if at == "" {
			at = c.str("clip.audio.projector_type")
		}
		if !slices.Contains(audioProjectors, at) {
			return failf("audio projector type %q is not supported", at)
		}
	}
	return nil
}

// shape checks tensor name against ne (missing trailing dimensions are 1);
// an absent tensor passes unless required; f32 demands an F32 tensor.
func (c *projectorChecker) shape(name string, ne []int64, required, f32 bool) error {
	t := c.tensors[name]
	if t == nil {
		if required {
			return failf("missing tensor %s", name)
		}
		return nil
	}
	var have, want [4]int64
	for d := range 4 {
		have[d], want[d] = 1, 1
		if d < len(t.Dims) {
			have[d] = int64(t.Dims[d])
		}
		if d < len(ne) {
			want[d] = ne[d]
		}
	}
	if have != want {
		return failf("tensor %s is [%d, %d, %d, %d], want [%d, %d, %d, %d]", name, have[0], have[1], have[2], have[3], want[0], want[1], want[2], want[3])
	}
	if f32 && t.Type != TypeF32 {
		return failf("tensor %s is %s, want f32", name, t.Type)
	}
	return nil
}

// tensorWant is a shape check: the tensor's name, dimensions, whether it
// must be present and whether it must be f32.
type tensorWant struct {
	name          string
	ne            []int64
	required, f32 bool
}

// shapes checks each of ws in turn (see shape).
func (c *projectorChecker) shapes(ws []tensorWant) error {
	for _, w := range ws {
		if err := c.shape(w.name, w.ne, w.required, w.f32); err != nil {
			return err
		}
	}
	return nil
}

// norms are the optional f32 weight and bias of [e] of each norm named.
func norms(e int64, names ...string) []tensorWant {
	var ws []tensorWant
	for _, n := range names {
		ws = append(ws, tensorWant{n + ".weight", []int64{e}, false, true}, tensorWant{n + ".bias", []int64{e}, false, true})
	}
	return ws
}

// dim is dimension d of tensor name (0 when absent).
func (c *projectorChecker) dim(name string, d int) int64 {
	if t := c.tensors[name]; t != nil && d < len(t.Dims) {
		return int64(t.Dims[d])
	}
	return 0
}

// ffn checks a block's feed-forward weights the way mtmd reads them:
// files that name up and down the other way round are swapped first.
func (c *projectorChecker) ffn(p string, e, f int64) error {
	up, down := p+"ffn_up.", p+"ffn_down."
	if c.tensors[up+"weight"] != nil && c.tensors[down+"weight"] != nil && c.dim(down+"weight", 0) == e {
		up, down = down, up
	}
	return c.shapes([]tensorWant{
		{up + "weight", []int64{e, f}, true, false},
		{up + "bias", []int64{f}, false, true},
		{down + "weight", []int64{f, e}, true, false},
		{down + "bias", []int64{e}, false, true},
		{p + "ffn_gate.weight", []int64{e, f}, false, false},
		{p + "ffn_gate.bias", []int64{f}, false, true},
	})
}

// block checks transformer block l of width e and feed-forward width f;
// qkvBias says whether the graph adds the q, k and v biases
// unconditionally.
func (c *projectorChecker) block(l, e, f int64, qkvBias bool) error {
	p := fmt.Sprintf("v.blk.%d.", l)
	if err := c.shapes(norms(e, p+"ln1", p+"ln2")); err != nil {
		return err
	}
	for _, m := range []string{"attn_q", "attn_k", "attn_v", "attn_out"} {
		if err := c.shapes([]tensorWant{
			{p + m + ".weight", []int64{e, e}, true, false},
			{p + m + ".bias", []int64{e}, qkvBias && m != "attn_out", true},
		}); err != nil {
			return err
		}
	}
	for _, n := range []string{"attn_qkv.weight", "attn_q_norm.weight", "attn_k_norm.weight", "ls1.weight"} {
		if c.tensors[p+n] != nil {
			return failf("block %s has tensors this projector type does not use", p)
		}
	}
	return c.ffn(p, e, f)
}

// output checks the width the projector writes against the text model's.
func output(out, textEmbd int64) error {
	if out != textEmbd {
		return failf("the projector's output width %d does not match the text model's embedding width %d; the mmproj belongs to another model", out, textEmbd)
	}
	return nil
}

// mlp checks a LLaVA projector: CLIP ViT + MLP (or Yi's mlp_norm).
func (c *projectorChecker) mlp(textEmbd int64) error {
	e, f := c.u32("clip.vision.embedding_length", 0), c.u32("clip.vision.feed_forward_length", 0)
	layers := c.u32("clip.vision.block_count", 0)
	size, patch := c.u32("clip.vision.image_size", 0), c.u32("clip.vision.patch_size", 0)
	if size%patch != 0 {
		return failf("image size %d is not a multiple of the patch size %d", size, patch)
	}
	// The graph runs the blocks up to the second-to-last, or up to the
	// deepest feature layer when feature layers are listed, and then
	// concatenates the listed layers' outputs: the projector's input is as
	// wide as the model times their number. Every block is checked.
	features := map[int32]bool{}
	for _, v := range c.ints("clip.vision.feature_layer") {
		if v < 0 || int64(v) > layers {
			return failf("feature layer %d is outside the %d blocks", v, layers)
		}
		features[v] = true
	}
	side := size / patch
	patches := side * side
	cls := c.tensors["v.class_embd"] != nil
	if err := c.shapes(append([]tensorWant{
		{"v.patch_embd.weight", []int64{patch, patch, 3, e}, true, false},
		{"v.patch_embd.bias", []int64{e}, false, true},
		{"v.class_embd", []int64{e}, false, true},
	}, norms(e, "v.pre_ln", "v.post_ln")...)); err != nil {
		return err
	}
	positions := patches
	if cls {
		positions++
	}
	if t := c.tensors["v.position_embd.weight"]; t == nil || c.dim(t.Name, 0) != e || c.dim(t.Name, 1) < positions || len(t.Dims) > 2 && t.Dims[2] != 1 {
		return failf("tensor v.position_embd.weight must be [%d, %d] for %d×%d patches", e, positions, side, side)
	}
	if c.tensors["v.patch_embd.weight.1"] != nil {
		return failf("tensor v.patch_embd.weight.1 is not used by an mlp projector")
	}
	for l := range layers {
		if err := c.block(l, e, f, false); err != nil {
			return err
		}
	}
	in := e
	if len(features) > 0 {
		in = e * int64(len(features))
	}
	if c.tensors["mm.0.weight"] == nil {
		return failf("missing tensor mm.0.weight")
	}
	hidden := c.dim("mm.0.weight", 1)
	if err := c.shapes([]tensorWant{
		{"mm.0.weight", []int64{in, hidden}, true, false},
		{"mm.0.bias", []int64{hidden}, true, true},
	}); err != nil {
		return err
	}
	// LLaVA: mm.0, GELU, mm.2. Yi-VL: mm.0, norm mm.1, mm.3, norm mm.4.
	last := "mm.2"
	if c.tensors["mm.3.weight"] != nil {
		last = "mm.3"
	}
	if c.tensors[last+".weight"] == nil {
		return failf("missing tensor %s.weight (the projection into the text model)", last)
	}
	out := c.dim(last+".weight", 1)
	want := []tensorWant{
		{last + ".weight", []int64{hidden, out}, true, false},
		{last + ".bias", []int64{out}, true, true},
	}
	if last == "mm.3" {
		want = append(want,
			tensorWant{"mm.1.weight", []int64{hidden}, true, true},
			tensorWant{"mm.1.bias", []int64{hidden}, true, true},
			tensorWant{"mm.4.weight", []int64{out}, true, true},
			tensorWant{"mm.4.bias", []int64{out}, true, true})
	}
	if err := c.shapes(want); err != nil {
		return err
	}
	return output(out, textEmbd)
}

// qwen2vl checks a Qwen2-VL projector: ViT with 2-D rotary positions and
// a 2×2 patch merger.
func (c *projectorChecker) qwen2vl(textEmbd int64) error {
	e, f := c.u32("clip.vision.embedding_length", 0), c.u32("clip.vision.feed_forward_length", 0)
	heads, layers := c.u32("clip.vision.attention.head_count", 0), c.u32("clip.vision.block_count", 0)
	patch := c.u32("clip.vision.patch_size", 0)
	switch {
	case (e/heads)%4 != 0:
		return failf("head width %d is not a multiple of 4, as 2-D rotary positions need", e/heads)
	case c.u32("clip.vision.spatial_merge_size", 2) != 2:
		return failf("qwen2vl_merger projectors merge 2×2 patches (clip.vision.spatial_merge_size 2)")
	case c.u32("clip.vision.n_wa_pattern", 0) != 0:
		return failf("window attention (clip.vision.n_wa_pattern) is not used by qwen2vl_merger projectors")
	case c.tensors["v.patch_embd.bias"] != nil || c.tensors["v.class_embd"] != nil:
		return failf("a qwen2vl_merger projector has no patch bias or class embedding")
	}
	if err := c.shapes(append([]tensorWant{
		{"v.patch_embd.weight", []int64{patch, patch, 3, e}, true, false},
		{"v.patch_embd.weight.1", []int64{patch, patch, 3, e}, true, false},
	}, norms(e, "v.pre_ln", "v.post_ln")...)); err != nil {
		return err
	}
	for l := range layers {
		if err := c.block(l, e, f, true); err != nil {
			return err
		}
	}
	if c.tensors["mm.0.weight"] == nil || c.tensors["mm.2.bias"] == nil {
		return failf("missing tensor mm.0.weight or mm.2.bias")
	}
	hidden, out := c.dim("mm.0.weight", 1), c.dim("mm.2.bias", 0)
	if err := c.shapes([]tensorWant{
		{"mm.0.weight", []int64{4 * e, hidden}, true, false},
		{"mm.0.bias", []int64{hidden}, true, true},
		{"mm.2.weight", []int64{hidden, out}, true, false},
		{"mm.2.bias", []int64{out}, true, true},
	}); err != nil {
		return err
	}
	return output(out, textEmbd)
}
