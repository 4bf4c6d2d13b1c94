package speech

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/owlengine/owl/bindings/ggml"
	"github.com/owlengine/owl/compute"
	"github.com/owlengine/owl/models"
)

// LoadOptions say how to load a Whisper model.
type LoadOptions struct {
	Threads   int    // CPU threads; 0 means all CPUs
	FlashAttn bool   // fused attention kernels
	CacheDir  string // where the converted weights are kept; "" means DefaultCacheDir()
	// Gate, when set, is shared with the other models computing on the
	// same cores: each graph evaluation takes the model's threads from it.
	Gate *compute.Gate
	// Device is the GPU the model's weights and graphs go to, by name
	// ("Vulkan0"); "" computes on the CPU.
	Device string
}

// DefaultCacheDir is $OWL_CACHE_DIR, or owl's folder in the user cache.
func DefaultCacheDir() string { return models.DefaultCacheDir() }

// Model is a loaded Whisper model: its weights on a ggml backend and its
// vocabulary and mel filters. Many transcriptions may run on one Model at
// once; their graph evaluations take turns and their decoder steps are
// evaluated together (see the package documentation).
type Model struct {
	path    string
	file    *models.WhisperFile
	hp      models.WhisperHParams
	vocab   *Vocab
	backend *ggml.Backend
	w       weights
	kvType  ggml.Type // element type of the KV caches
	vTrans  bool      // values are cached transposed (no flash attention)

	turn *compute.Gate // one graph evaluation at a time on the backend, most urgent first
	gate *compute.Gate // shares the cores with other models (nil: none)

	stepMu  sync.Mutex  // guards pending
	pending []*stepCall // decoder steps waiting for the backend
	// stepParts is the most transcriptions whose decoder steps one graph
	// holds (set at load, from the graph's capacity).
	stepParts int

	// stepGraphs counts the graphs that evaluated decoder steps and
	// stepCalls the steps they evaluated (more calls than graphs: steps of
	// concurrent transcriptions were batched).
	stepGraphs, stepCalls atomic.Int64
}

type attnWeights struct {
	lnW, lnB, qW, qB, kW, vW, vB, oW, oB ggml.Tensor
}

type mlpWeights struct {
	lnW, lnB, w0, b0, w2, b2 ggml.Tensor
}

type encoderLayer struct {
	attn attnWeights
	mlp  mlpWeights
}

type decoderLayer struct {
	attn, cross attnWeights
	mlp         mlpWeights
}

type weights struct {
	encPos, conv1W, conv1B, conv2W, conv2B, lnPostW, lnPostB ggml.Tensor
	enc                                                      []encoderLayer
	decPos, tokEmb, lnW, lnB                                 ggml.Tensor
	dec                                                      []decoderLayer
}

// Load reads the whisper.cpp model file at path (ggml-*.bin), checks it,
// converts its tensors to GGUF once (cached) and loads them.
func Load(ctx context.Context, path string, o LoadOptions) (*Model, error) {
	f, err := models.ReadWhisper(path)
	if err != nil {
		return nil, err
	}
	if f.VocabOnly {
		return nil, fmt.Errorf("%s: %w: the file has a model's header, mel filters and vocabulary (like whisper.cpp's for-tests files) and cannot transcribe", path, models.ErrNoWeights)
	}
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir()
	}
	gguf, err := models.WhisperGGUF(path, f, o.CacheDir)
	if err != nil {
		return nil, err
	}
	b, err := ggml.Load(ctx, gguf, ggml.Options{Threads: o.Threads, FlashAttn: o.FlashAttn, Device: o.Device})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m := &Model{path: path, file: f, hp: f.HParams, vocab: newVocab(f), backend: b, kvType: ggml.F16, vTrans: !b.FlashAttention(), gate: o.Gate,
		turn: compute.NewGate(1)}
	if f.HParams.WeightType() == models.TypeF32 {
		m.kvType = ggml.F32 // keep an f32 model exact end to end
	}
	if err := m.bindWeights(); err != nil {
		b.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := m.reserve(); err != nil {
		b.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func (m *Model) bindWeights() error {
	var errs []error
	get := func(name string) ggml.Tensor {
		t, err := m.backend.Weight(name)
		if err != nil {
			errs = append(errs, err)
		}
		return t
	}
	attn := func(p string) attnWeights {
		return attnWeights{lnW: get(p + "_ln.weight"), lnB: get(p + "_ln.bias"),
			qW: get(p + ".query.weight"), qB: get(p + ".query.bias"), kW: get(p + ".key.weight"),
			vW: get(p + ".value.weight"), vB: get(p + ".value.bias"), oW: get(p + ".out.weight"), oB: get(p + ".out.bias")}
	}
	mlp := func(p string) mlpWeights {
		return mlpWeights{lnW: get(p + "mlp_ln.weight"), lnB: get(p + "mlp_ln.bias"),
			w0: get(p + "mlp.0.weight"), b0: get(p + "mlp.0.bias"), w2: get(p + "mlp.2.weight"), b2: get(p + "mlp.2.bias")}
	}
	w := &m.w
	w.encPos = get("encoder.positional_embedding")
	w.conv1W, w.conv1B = get("encoder.conv1.weight"), get("encoder.conv1.bias")
	w.conv2W, w.conv2B = get("encoder.conv2.weight"), get("encoder.conv2.bias")
	w.lnPostW, w.lnPostB = get("encoder.ln_post.weight"), get("encoder.ln_post.bias")
	for i := range m.hp.NAudioLayer {
		p := fmt.Sprintf("encoder.blocks.%d.", i)
		w.enc = append(w.enc, encoderLayer{attn: attn(p + "attn"), mlp: mlp(p)})
	}
	w.decPos, w.tokEmb = get("decoder.positional_embedding"), get("decoder.token_embedding.weight")
	w.lnW, w.lnB = get("decoder.ln.weight"), get("decoder.ln.bias")
	for i := range m.hp.NTextLayer {
		p := fmt.Sprintf("decoder.blocks.%d.", i)
		w.dec = append(w.dec, decoderLayer{attn: attn(p + "attn"), cross: attn(p + "cross_attn"), mlp: mlp(p)})
	}
	return errors.Join(errs...)
}

// Close frees the model's weights. It is idempotent.
func (m *Model) Close() error {
	m.turn.Acquire(0, 1)
	defer m.turn.Release(1)
	m.backend.Close()
	return nil
}

// Path is the model file.
func (m *Model) Path() string { return m.path }

// HParams are the model's hyper-parameters.
func (m *Model) HParams() models.WhisperHParams { return m.hp }

// Vocab is the model's vocabulary.
func (m *Model) Vocab() *Vocab { return m.vocab }

// Threads is the number of CPU threads the model computes with.
func (m *Model) Threads() int { return m.backend.Threads() }

// Describe is a one-line summary such as "whisper tiny.en (f16)".
func (m *Model) Describe() string {
	name := m.hp.SizeName()
	if !m.hp.Multilingual() {
		name += ".en"
	}
	return fmt.Sprintf("whisper %s (%s)", name, m.hp.WeightType())
}
