package models_test

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

type projectorEdit = func([]models.GGUFKV, []models.TensorSpec) ([]models.GGUFKV, []models.TensorSpec)

// projectorGGUF writes the projector c, edited, and parses it back.
func projectorGGUF(t testing.TB, c testmodel.ProjectorConfig, edit projectorEdit) *models.GGUF {
	t.Helper()
	kvs, ts, err := testmodel.ProjectorGGUF(c)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		kvs, ts = edit(kvs, ts)
	}
	var b bytes.Buffer
	if err := models.WriteGGUF(&b, kvs, ts); err != nil {
		t.Fatal(err)
	}
	g, err := models.ParseGGUF(bytes.NewReader(b.Bytes()), int64(b.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func setKV(key string, v any) projectorEdit {
	return func(kvs []models.GGUFKV, ts []models.TensorSpec) ([]models.GGUFKV, []models.TensorSpec) {
		for i := range kvs {
			if kvs[i].Key == key {
				if v == nil {
					return slices.Delete(kvs, i, i+1), ts
				}
				kvs[i].Value = v
				return kvs, ts
			}
		}
		if v == nil {
			return kvs, ts
		}
		return append(kvs, models.GGUFKV{Key: key, Value: v}), ts
	}
}

func dropTensor(name string) projectorEdit {
	return func(kvs []models.GGUFKV, ts []models.TensorSpec) ([]models.GGUFKV, []models.TensorSpec) {
		return kvs, slices.DeleteFunc(ts, func(s models.TensorSpec) bool { return s.Name == name })
	}
}

// The generated projectors of both families pass, with every shape checked.
func TestCheckProjectorAccepts(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  testmodel.ProjectorConfig
		typ  string
	}{{"llava", testmodel.TinyLlavaProjector(), "mlp"}, {"qwen2vl", testmodel.TinyQwen2VLProjector(), "qwen2vl_merger"}} {
		got, err := models.CheckProjector(projectorGGUF(t, c.cfg, nil), c.cfg.TextEmbd)
		if err != nil || got.Type != c.typ || !got.ShapesChecked {
			t.Errorf("%s: %+v, %v", c.name, got, err)
		}
	}
	// A type the checker does not know the tensors of passes on its
	// metadata, for mtmd to check the rest.
	got, err := models.CheckProjector(projectorGGUF(t, testmodel.TinyLlavaProjector(), setKV("clip.projector_type", "gemma3")), 64)
	if err != nil || got.Type != "gemma3" || got.ShapesChecked {
		t.Errorf("gemma3: %+v, %v", got, err)
	}
}

// A wrong or malformed projector is an error saying what is wrong, found
// in Go before any native code reads the file.
func TestCheckProjectorRefuses(t *testing.T) {
	llava, qwen := testmodel.TinyLlavaProjector(), testmodel.TinyQwen2VLProjector()
	narrow := llava
	narrow.TextEmbd = 48
	for _, tc := range []struct {
		name string
		proj testmodel.ProjectorConfig
		edit projectorEdit
		want string
	}{
		{"projection width differs", narrow, nil, "output width 48 does not match the text model's embedding width 64"},
		{"not a projector", llava, setKV("general.architecture", "llama"), "not a multimodal projector"},
		{"no vision encoder", llava, setKV("clip.has_vision_encoder", false), "neither a vision nor an audio encoder"},
		{"image size as float", llava, setKV("clip.vision.image_size", float32(32)), "clip.vision.image_size is f32, want u32"},
		{"missing image_mean", llava, setKV("clip.vision.image_mean", nil), "missing metadata clip.vision.image_mean"},
		{"short image_std", llava, setKV("clip.vision.image_std", []float32{0.5}), "clip.vision.image_std has 1 values"},
		{"zero heads", llava, setKV("clip.vision.attention.head_count", uint32(0)), "heads"},
		{"zero patch", llava, setKV("clip.vision.patch_size", uint32(0)), "patch size 0"},
		{"huge layer count", llava, setKV("clip.vision.block_count", uint32(1<<30)), "layers"},
		{"unknown projector type", llava, setKV("clip.projector_type", "owlnet"), `"owlnet" is not one llama.cpp knows`},
		{"unsupported audio projector", llava, setKV("clip.has_audio_encoder", true), "clip.audio."},
		{"no projection", llava, dropTensor("mm.2.weight"), "mm.2.weight"},
		{"no position embedding", llava, dropTensor("v.position_embd.weight"), "v.position_embd.weight"},
		{"no query weights", llava, dropTensor("v.blk.0.attn_q.weight"), "v.blk.0.attn_q.weight"},
		{"no second patch kernel", qwen, dropTensor("v.patch_embd.weight.1"), "v.patch_embd.weight.1"},
		{"no query bias", qwen, dropTensor("v.blk.1.attn_q.bias"), "v.blk.1.attn_q.bias"},
		{"window attention", qwen, setKV("clip.vision.n_wa_pattern", uint32(2)), "window attention"},
		{"merge size 3", qwen, setKV("clip.vision.spatial_merge_size", uint32(3)), "2×2"},
		{"feature layer out of range", llava, setKV("clip.vision.feature_layer", []int32{7}), "feature layer 7"},
		{"odd pinpoints", llava, setKV("clip.vision.image_grid_pinpoints", []int32{336, 672, 336}), "image_grid_pinpoints has 3 values"},
		{"zero pinpoint", llava, setKV("clip.vision.image_grid_pinpoints", []int32{32, 0}), "grid resolution 0"},
		{"unknown minicpmv version", llava, setKV("clip.minicpmv_version", int32(9)), "MiniCPM-V version 9"},
		{"wrong tensor shape", llava, func(kvs []models.GGUFKV, ts []models.TensorSpec) ([]models.GGUFKV, []models.TensorSpec) {
			for i := range ts {
				if ts[i].Name == "v.blk.1.attn_k.weight" {
					ts[i].Dims = []uint64{32, 16}
					n := 32 * 16 * 2
					ts[i].Write = func(w io.Writer) error { _, err := w.Write(make([]byte, n)); return err }
				}
			}
			return kvs, ts
		}, "tensor v.blk.1.attn_k.weight is [32, 16, 1, 1], want [32, 32, 1, 1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := models.CheckProjector(projectorGGUF(t, tc.proj, tc.edit), 64)
			if !errors.Is(err, models.ErrProjector) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrProjector mentioning %q", err, tc.want)
			}
		})
	}
}

// Any file owl's GGUF parser accepts is checked without a panic; the seeds
// in testdata/fuzz include files that once made llama.cpp's GGUF reader
// abort.
func FuzzCheckProjector(f *testing.F) {
	for _, c := range []testmodel.ProjectorConfig{testmodel.TinyLlavaProjector(), testmodel.TinyQwen2VLProjector()} {
		c.Layers = 1
		var buf bytes.Buffer
		if err := testmodel.WriteProjector(&buf, c); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		g, err := models.ParseGGUF(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if _, err := models.CheckProjector(g, 64); err != nil && !errors.Is(err, models.ErrProjector) {
			t.Fatalf("error %v does not wrap ErrProjector", err)
		}
	})
}
