package speech

import (
	"context"
	"fmt"
	"sync"

	"github.com/owlengine/owl/bindings/ggml"
	"github.com/owlengine/owl/models"
)

// Silero is the Silero voice activity detector (v5/v6) running on ggml,
// loaded from whisper.cpp's ggml Silero files. It gives the probability of
// speech in each 512-sample chunk (32 ms at 16 kHz), carrying its LSTM state
// from chunk to chunk. A Silero model serves one stream at a time.
type Silero struct {
	file               *models.SileroFile
	backend            *ggml.Backend
	stft               ggml.Tensor
	encW               []ggml.Tensor
	encB               []ggml.Tensor
	wih, whh, bih, bhh ggml.Tensor
	finalW, finalB     ggml.Tensor

	mu    sync.Mutex // guards the state below
	store *ggml.Store
	h, c  ggml.Tensor // LSTM state
	fresh bool        // the state is zero
}

// sileroStrides are the strides of the four encoder convolutions.
var sileroStrides = []int{1, 2, 2, 1}

const (
	sileroPad   = 64  // reflection padding on each side of a chunk
	sileroHop   = 128 // STFT hop
	sileroBatch = 32  // chunks per graph (one second)
)

// LoadSilero loads a ggml Silero VAD model (ggml-silero-v5.1.2.bin, …).
func LoadSilero(ctx context.Context, path string, o LoadOptions) (*Silero, error) {
	f, err := models.ReadSilero(path)
	if err != nil {
		return nil, err
	}
	if len(f.Encoder) != len(sileroStrides) || f.Window != 512 {
		return nil, fmt.Errorf("%s: %w: %d encoder layers and %d-sample chunks (want 4 and 512)", path, models.ErrCorrupt, len(f.Encoder), f.Window)
	}
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir()
	}
	gguf, err := models.SileroGGUF(path, f, o.CacheDir)
	if err != nil {
		return nil, err
	}
	threads := o.Threads
	if threads <= 0 {
		threads = 1 // a small network: one thread wastes least on synchronization
	}
	b, err := ggml.Load(ctx, gguf, ggml.Options{Threads: threads})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &Silero{file: f, backend: b, fresh: true}
	var errs []error
	get := func(name string) ggml.Tensor {
		t, err := b.Weight(name)
		if err != nil {
			errs = append(errs, err)
		}
		return t
	}
	s.stft = get(models.SileroSTFT)
	for i := range f.Encoder {
		s.encW = append(s.encW, get(models.SileroEncoderWeight(i)))
		s.encB = append(s.encB, get(models.SileroEncoderBias(i)))
	}
	s.wih, s.whh, s.bih, s.bhh = get(models.SileroLSTMWIH), get(models.SileroLSTMWHH), get(models.SileroLSTMBIH), get(models.SileroLSTMBHH)
	s.finalW, s.finalB = get(models.SileroFinalW), get(models.SileroFinalB)
	if len(errs) > 0 {
		b.Close()
		return nil, fmt.Errorf("%s: %v", path, errs[0])
	}
	s.store = b.NewStore()
	if s.h, err = s.store.Zeros(ggml.F32, f.LSTMHidden); err == nil {
		s.c, err = s.store.Zeros(ggml.F32, f.LSTMHidden)
	}
	if err == nil {
		// The graph of a whole batch, the largest the model runs, must fit.
		g := b.NewGraph()
		s.build(g, make([]float32, sileroBatch*(f.Window+2*sileroPad)), sileroBatch)
		if err = g.Err(); err != nil {
			err = fmt.Errorf("%s: %w", path, err)
		}
		g.Close()
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close frees the model.
func (s *Silero) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.store != nil {
		s.store.Close()
		s.store = nil
	}
	s.backend.Close()
	return nil
}

// ChunkSamples is the number of samples each probability covers.
func (s *Silero) ChunkSamples() int { return s.file.Window }

// Describe names the model: "silero-16k v6.2.0".
func (s *Silero) Describe() string { return s.file.Type + " v" + s.file.Version }

// Reset forgets the stream so far (the LSTM state).
func (s *Silero) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fresh = true
}

// Probabilities returns the speech probability of each whole chunk of
// samples (a partial last chunk is padded with silence), continuing the
// stream: call Reset between unrelated streams.
func (s *Silero) Probabilities(samples []float32) ([]float32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.file.Window
	chunks := (len(samples) + n - 1) / n
	out := make([]float32, 0, chunks)
	for c0 := 0; c0 < chunks; c0 += sileroBatch {
		b := min(sileroBatch, chunks-c0)
		frames := make([]float32, 0, b*(n+2*sileroPad))
		for c := c0; c < c0+b; c++ {
			chunk := make([]float32, n)
			copy(chunk, samples[c*n:min(len(samples), (c+1)*n)])
			frames = append(frames, reflectPad(chunk, sileroPad)...)
		}
		p, err := s.evaluate(frames, b)
		if err != nil {
			return out, err
		}
		out = append(out, p...)
	}
	return out, nil
}

// reflectPad mirrors p samples at each end of x (without repeating the edge).
func reflectPad(x []float32, p int) []float32 {
	out := make([]float32, len(x)+2*p)
	copy(out[p:], x)
	for i := range p {
		out[p-1-i] = x[i+1]
		out[p+len(x)+i] = x[len(x)-2-i]
	}
	return out
}

// evaluate runs b padded chunks (frames, each Window+2·pad samples) through
// the network and returns their speech probabilities.
func (s *Silero) evaluate(frames []float32, b int) ([]float32, error) {
	g := s.backend.NewGraph()
	defer g.Close()
	probs := s.build(g, frames, b)
	if err := g.Compute(probs); err != nil {
		return nil, err
	}
	s.fresh = false
	return probs.Floats(), nil
}

// build adds the network over b padded chunks to g and returns the
// probabilities; it also copies the LSTM state out to s.h and s.c.
func (s *Silero) build(g *ggml.Graph, frames []float32, b int) ggml.Tensor {
	f := s.file
	width := f.Window + 2*sileroPad
	bins := f.Encoder[0].In
	// STFT: a strided convolution with the basis; magnitudes of the bins.
	x := g.Input(frames, width, 1, 1, b)
	cols := x.IM2Col(g, s.stft.Reshape(g, 256, 1, 1, 2*bins), sileroHop, 1, 0, 0, 1, 1) // [256, T, 1, b]
	t := cols.Dim(1)
	spec := s.stft.Reshape(g, 256, 2*bins).Mulmat(g, cols.Reshape(g, 256, t*b)) // [2·bins, T·b]
	re := spec.View(g, 0, bins, spec.Stride(1), t*b)
	im := spec.View(g, bins*4, bins, spec.Stride(1), t*b)
	mag := re.Mul(g, re).Add(g, im.Mul(g, im)).Sqrt(g) // [bins, T·b]
	// Encoder: kernel-3 convolutions with ReLU over the STFT frames.
	cur, ch := mag, bins
	for i, conv := range f.Encoder {
		in := cur.Reshape(g, ch, t, b).Permute(g, 1, 0, 2, 3).Contiguous(g).Reshape(g, t, 1, ch, b)
		k := conv.Kernel
		c := in.IM2Col(g, s.encW[i].Reshape(g, k, 1, ch, conv.Out), sileroStrides[i], 1, k/2, 0, 1, 1) // [k·ch, T', 1, b]
		t = c.Dim(1)
		cur = s.encW[i].Reshape(g, k*ch, conv.Out).Mulmat(g, c.Reshape(g, k*ch, t*b)).Add(g, s.encB[i]).ReLUInPlace(g) // [out, T'·b]
		ch = conv.Out
	}
	// The first frame of each chunk feeds the LSTM.
	feat := cur.Reshape(g, ch, t, b).View(g, 0, ch, cur.Stride(1)*t, b) // [ch, b]
	gatesIn := s.wih.Mulmat(g, feat.Contiguous(g)).Add(g, s.bih)        // [4h, b]
	hid := f.LSTMHidden
	h, c := s.h, s.c
	if s.fresh {
		zero := make([]float32, hid)
		h, c = g.Input(zero, hid), g.Input(zero, hid)
	}
	var outs ggml.Tensor
	for step := range b {
		gates := gatesIn.View(g, step*gatesIn.Stride(1), 4*hid).Add(g, s.whh.Mulmat(g, h)).Add(g, s.bhh)
		gate := func(k int) ggml.Tensor { return gates.View(g, k*hid*4, hid) }
		i, fg, gg, o := gate(0).Sigmoid(g), gate(1).Sigmoid(g), gate(2).Tanh(g), gate(3).Sigmoid(g)
		c = fg.Mul(g, c).Add(g, i.Mul(g, gg))
		h = o.Mul(g, c.Tanh(g))
		if step == 0 {
			outs = h.Reshape(g, hid, 1)
		} else {
			outs = outs.Concat(g, h.Reshape(g, hid, 1), 1)
		}
	}
	g.Forward(h.CopyTo(g, s.h), c.CopyTo(g, s.c))
	return s.finalW.Reshape(g, hid, 1).Mulmat(g, outs.ReLUInPlace(g)).Add(g, s.finalB).Sigmoid(g) // [1, b]
}
