package tts

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/owlengine/owl/bindings/ggml"
	"github.com/owlengine/owl/models"
)

// Piper satisfies Synthesizer.
var _ Synthesizer = (*Piper)(nil)

// Piper is a Piper VITS voice on ggml: the voice's file read and checked
// (models.FindPiperWeights), its weights converted once to a GGUF in the
// cache, the network built from Piper's model code.
type Piper struct {
	path    string
	cfg     *models.PiperConfig
	h       models.PiperHParams
	backend *ggml.Backend
	w       map[string]ggml.Tensor
	// gw are the weights the Go side reads; relK and relV the relative
	// attention embeddings by layer prefix.
	gw         map[string][]float32
	relK, relV map[string][]float32
}

// PiperOptions set how a voice runs.
type PiperOptions struct {
	Threads  int    // CPU threads (0: all)
	CacheDir string // where converted voices are kept
	Config   string // the voice's configuration ("": the model's path + ".json")
	Device   string // the GPU its graphs compute on ("": the CPU)
}

// LoadPiper opens the Piper voice at path (NAME.onnx, with NAME.onnx.json
// beside it).
func LoadPiper(ctx context.Context, path string, o PiperOptions) (*Piper, error) {
	cfgPath := o.Config
	if cfgPath == "" {
		cfgPath = path + ".json"
	}
	js, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("%s: a Piper voice needs its configuration (NAME.onnx.json beside it): %w", path, err)
	}
	cfg, err := models.ParsePiperConfig(js)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := models.ParseONNX(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	v, err := models.FindPiperWeights(&m.Graph)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if cfg.NumSymbols > v.HParams.Symbols {
		return nil, fmt.Errorf("%s: %w: the configuration has %d symbols, the model %d", path, models.ErrNotPiper, cfg.NumSymbols, v.HParams.Symbols)
	}
	if o.CacheDir == "" {
		o.CacheDir = models.DefaultCacheDir()
	}
	gguf, err := models.PiperGGUF(path, v, o.CacheDir)
	if err != nil {
		return nil, err
	}
	be, err := ggml.Load(ctx, gguf, ggml.Options{Threads: o.Threads, Device: o.Device})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	gw, err := goWeights(v)
	if err != nil {
		be.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	p := &Piper{path: path, cfg: cfg, h: v.HParams, backend: be, w: map[string]ggml.Tensor{}, gw: gw,
		relK: map[string][]float32{}, relV: map[string][]float32{}}
	for l := range v.HParams.Layers {
		pre := "enc_p.encoder.attn_layers." + strconv.Itoa(l)
		k, err1 := v.Weights[pre+".emb_rel_k"].Floats()
		vv, err2 := v.Weights[pre+".emb_rel_v"].Floats()
		if err1 != nil || err2 != nil {
			be.Close()
			return nil, fmt.Errorf("%s: relative embeddings: %v %v", path, err1, err2)
		}
		p.relK[pre], p.relV[pre] = k, vv
	}
	names := []string{}
	for n := range models.PiperTensorShapes(v.HParams) {
		names = append(names, n)
	}
	for i := range v.HParams.UpsampleRates {
		names = append(names, "dec.ups."+strconv.Itoa(i)+".phases")
	}
	for f := range v.HParams.Flows {
		p := "flow.flows." + strconv.Itoa(2*f) + "."
		names = append(names, p+"pre.weight.rev", p+"post.weight.rev", p+"post.bias.rev")
	}
	for _, n := range names {
		t, err := be.Weight(n)
		if err != nil {
			be.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		p.w[n] = t
	}
	return p, nil
}

// Close frees the voice.
func (p *Piper) Close() error {
	p.backend.Close()
	return nil
}

// Speakers names a multi-speaker voice's speakers by id (its
// configuration's speaker_id_map; nil for one speaker).
func (p *Piper) Speakers() []string {
	if p.h.Speakers <= 1 {
		return nil
	}
	return p.cfg.Speakers()
}

// SampleRate is the voice's rate.
func (p *Piper) SampleRate() int { return p.cfg.Audio.SampleRate }

// Describe names the voice.
func (p *Piper) Describe() string {
	name := strings.TrimSuffix(p.path[strings.LastIndexByte(p.path, '/')+1:], ".onnx")
	return fmt.Sprintf("piper %s (%d Hz, %d channels)", name, p.cfg.Audio.SampleRate, p.h.Hidden)
}

// The network. Activations are [T, C] (time fastest, ggml's first
// dimension), as a convolution's im2col takes them.

// conv is torch's Conv1d (stride 1) over x [T, Cin] with w [K, Cin, Cout]
// (ggml's order of torch's [Cout][Cin][K]) and bias b (or none): [T', Cout].
func conv(g *ggml.Graph, x, w, b ggml.Tensor, dilation, pad int) ggml.Tensor {
	k, cin, cout := w.Dim(0), w.Dim(1), w.Dim(2)
	t := x.Dim(0)
	cols := x.Reshape(g, t, 1, cin, 1).IM2Col(g, w.Reshape(g, k, 1, cin, cout), 1, 1, pad, 0, dilation, 1) // [K·Cin, T', 1, 1]
	tp := cols.Dim(1)
	y := cols.Reshape(g, k*cin, tp).Mulmat(g, w.Reshape(g, k*cin, cout)) // [T', Cout]
	if b.Valid() {
		y = y.Add(g, b.Reshape(g, 1, cout))
	}
	return y
}

// leakyReLU is max(x, 0) + slope·min(x, 0).
func leakyReLU(g *ggml.Graph, x ggml.Tensor, slope float64) ggml.Tensor {
	return x.Scale(g, slope).Add(g, x.ReLU(g).Scale(g, 1-slope))
}

func (p *Piper) conv(g *ggml.Graph, x ggml.Tensor, module string, dilation, pad int) ggml.Tensor {
	return conv(g, x, p.w[module+".weight"], p.w[module+".bias"], dilation, pad)
}

// upsample is the decoder's transposed convolution i through its phases
// (see models.PiperGGUF): x [T, Cin] → [T·s, Cout].
func (p *Piper) upsample(g *ggml.Graph, x ggml.Tensor, i int) ggml.Tensor {
	s, k := p.h.UpsampleRates[i], p.h.UpsampleKernels[i]
	m := k / s
	name := "dec.ups." + strconv.Itoa(i)
	ph := p.w[name+".phases"] // [M, Cin, s·Cout]
	cout := ph.Dim(2) / s
	t := x.Dim(0)
	z := conv(g, x, ph, ggml.Tensor{}, 1, m-1) // [T+M−1, s·Cout], phase r's channels r·Cout…
	tp := z.Dim(0)
	y := z.Reshape(g, tp, cout, s).Permute(g, 1, 2, 0, 3).Contiguous(g).Reshape(g, s*tp, cout) // sample q·s+r
	pad := (k - s) / 2
	y = y.View(g, pad*4, t*s, y.Stride(1), cout).Contiguous(g)
	return y.Add(g, p.w[name+".bias"].Reshape(g, 1, cout))
}

// wn is a coupling layer's WaveNet over x [T, H]; spk is the speaker's
// embedding [1, Gin] of a multi-speaker voice (else invalid).
func (p *Piper) wn(g *ggml.Graph, x ggml.Tensor, pre string, spk ggml.Tensor) ggml.Tensor {
	h := p.h
	H, t := h.Hidden, x.Dim(0)
	var out, gc ggml.Tensor
	if spk.Valid() {
		gc = p.conv(g, spk, pre+".cond_layer", 1, 0) // [1, 2H·layers]
	}
	for i := range h.WNLayers {
		n := strconv.Itoa(i)
		a := p.conv(g, x, pre+".in_layers."+n, 1, (h.WNKernel-1)/2) // [T, 2H]
		if gc.Valid() {
			a = a.Add(g, gc.View(g, 2*H*i*gc.Stride(1), 1, gc.Stride(1), 2*H).Contiguous(g))
		}
		acts := a.View(g, 0, t, a.Stride(1), H).Tanh(g).Mul(g, a.View(g, H*a.Stride(1), t, a.Stride(1), H).Contiguous(g).Sigmoid(g))
		rs := p.conv(g, acts, pre+".res_skip_layers."+n, 1, 0)
		skip := rs
		if i < h.WNLayers-1 {
			x = x.Add(g, rs.View(g, 0, t, rs.Stride(1), H))
			skip = rs.View(g, H*rs.Stride(1), t, rs.Stride(1), H)
		}
		if i == 0 {
			out = skip.Contiguous(g)
		} else {
			out = out.Add(g, skip)
		}
	}
	return out
}

// flowReverse runs the coupling flows backwards over z [T, Inter]. The
// flips between them are folded into the weights (see models.PiperGGUF):
// a layer after an odd number of flips takes the stored second half as its
// first, with reversed weights.
func (p *Piper) flowReverse(g *ggml.Graph, z, spk ggml.Tensor) ggml.Tensor {
	h := p.h
	half, t := h.Inter/2, z.Dim(0)
	for f := h.Flows - 1; f >= 0; f-- {
		pre := "flow.flows." + strconv.Itoa(2*f)
		rev := (h.Flows-f)%2 == 1
		lo := z.View(g, 0, t, z.Stride(1), half).Contiguous(g)
		hi := z.View(g, half*z.Stride(1), t, z.Stride(1), half).Contiguous(g)
		x0, x1 := lo, hi
		preW, postW, postB := p.w[pre+".pre.weight"], p.w[pre+".post.weight"], p.w[pre+".post.bias"]
		if rev {
			x0, x1 = hi, lo
			preW, postW, postB = p.w[pre+".pre.weight.rev"], p.w[pre+".post.weight.rev"], p.w[pre+".post.bias.rev"]
		}
		hh := conv(g, x0, preW, p.w[pre+".pre.bias"], 1, 0)
		m := conv(g, p.wn(g, hh, pre+".enc", spk), postW, postB, 1, 0)
		x1 = x1.Add(g, m.Scale(g, -1))
		if rev {
			z = x1.Concat(g, x0, 1)
		} else {
			z = x0.Concat(g, x1, 1)
		}
	}
	return z
}

// decode is the HiFi-GAN generator: z [T, Inter] → samples [T·hop].
func (p *Piper) decode(g *ggml.Graph, z, spk ggml.Tensor) ggml.Tensor {
	h := p.h
	x := p.conv(g, z, "dec.conv_pre", 1, 3)
	if spk.Valid() {
		x = x.Add(g, p.conv(g, spk, "dec.cond", 1, 0))
	}
	nk := len(h.ResblockKernels)
	for i := range h.UpsampleRates {
		x = p.upsample(g, leakyReLU(g, x, 0.1), i)
		var sum ggml.Tensor
		for j, rk := range h.ResblockKernels {
			pre := "dec.resblocks." + strconv.Itoa(i*nk+j) + "."
			y := x
			for m, d := range h.ResblockDilation[j] {
				n := strconv.Itoa(m)
				if h.ResblockType == "1" {
					t := p.conv(g, leakyReLU(g, y, 0.1), pre+"convs1."+n, d, (rk*d-d)/2)
					t = p.conv(g, leakyReLU(g, t, 0.1), pre+"convs2."+n, 1, (rk-1)/2)
					y = t.Add(g, y)
				} else {
					y = p.conv(g, leakyReLU(g, y, 0.1), pre+"convs."+n, d, (rk*d-d)/2).Add(g, y)
				}
			}
			if j == 0 {
				sum = y
			} else {
				sum = sum.Add(g, y)
			}
		}
		x = sum.Scale(g, 1/float64(nk))
	}
	x = leakyReLU(g, x, 0.01)
	return conv(g, x, p.w["dec.conv_post.weight"], ggml.Tensor{}, 1, 3).Tanh(g)
}

// flowDecode runs the flows backwards, then the decoder, over z
// (channel-major: [Inter][frames]) and returns the samples; with noFlow
// only the decoder.
func (p *Piper) flowDecode(z []float32, frames int, noFlow bool, speaker []float32) ([]float32, error) {
	var out []float32
	err := p.run(func(g *ggml.Graph) []ggml.Tensor {
		x := g.Input(z, frames, p.h.Inter)
		var spk ggml.Tensor
		if speaker != nil {
			spk = g.Input(speaker, 1, len(speaker))
		}
		if !noFlow {
			x = p.flowReverse(g, x, spk)
		}
		return []ggml.Tensor{p.decode(g, x, spk)}
	}, func(v [][]float32) { out = v[0] })
	return out, err
}

// infer speaks one sentence of phoneme ids: durations from durNoise ([2][T],
// already times noise_w), the prior sampled with prior(frames)
// ([Inter][frames], already times noise_scale).
func (p *Piper) infer(ids []int64, durNoise []float32, prior func(frames int) []float32, lengthScale float64, speaker []float32) ([]float32, []int, error) {
	return p.inferContext(context.Background(), ids, durNoise, prior, lengthScale, speaker)
}

// inferContext is infer, stopping between its stages when ctx ends.
func (p *Piper) inferContext(ctx context.Context, ids []int64, durNoise []float32, prior func(frames int) []float32, lengthScale float64, speaker []float32) ([]float32, []int, error) {
	e, err := p.encode(ids)
	if err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	frames := p.durations(e, durNoise, lengthScale, speaker)
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	total := 0
	for _, f := range frames {
		total += f
	}
	total = max(total, 1)
	if total > maxPiperFrames {
		return nil, nil, errorf("a sentence of %d frames (%.0f s) is too long", total, float64(total*p.h.HopLength())/float64(p.SampleRate()))
	}
	eps := prior(total)
	inter := p.h.Inter
	z := make([]float32, inter*total)
	t := 0
	for ph, f := range frames {
		for range f {
			for c := range inter {
				z[c*total+t] = e.m[c*e.T+ph] + eps[c*total+t]*float32(math.Exp(float64(e.logs[c*e.T+ph])))
			}
			t++
		}
	}
	audio, err := p.flowDecodeChunked(ctx, z, total, speaker, decodeChunk, decodeContext)
	return audio, frames, err
}

// A long sentence's latent frames go through the flows and the decoder in
// windows of decodeChunk frames (3 s at 22 kHz), each with decodeContext
// frames of its neighbours' on either side — the flows' and the decoder's
// receptive field (measured: 44 frames give the whole decoding's samples
// exactly, 24 within 4e-6, 8 miss by 0.13) — so that the graphs stay
// bounded and a synthesis cut off stops within a window. The context costs
// a third more work on the sentences long enough to be cut.
const (
	decodeChunk   = 256
	decodeContext = 44
)

// flowDecodeChunked is flowDecode of z ([Inter][frames]) in windows.
func (p *Piper) flowDecodeChunked(ctx context.Context, z []float32, frames int, speaker []float32, chunk, context int) ([]float32, error) {
	if frames <= chunk+context {
		return p.flowDecode(z, frames, false, speaker)
	}
	hop, inter := p.h.HopLength(), p.h.Inter
	out := make([]float32, 0, frames*hop)
	for s := 0; s < frames; s += chunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e := min(s+chunk, frames)
		lo, hi := max(0, s-context), min(frames, e+context)
		n := hi - lo
		win := make([]float32, inter*n)
		for c := range inter {
			copy(win[c*n:(c+1)*n], z[c*frames+lo:c*frames+hi])
		}
		audio, err := p.flowDecode(win, n, false, speaker)
		if err != nil {
			return nil, err
		}
		out = append(out, audio[(s-lo)*hop:(e-lo)*hop]...)
	}
	return out, nil
}

// maxPiperFrames bounds one sentence's audio (about 3 minutes at 22 kHz).
const maxPiperFrames = 16384

// Synthesize speaks text sentence by sentence with the voice: each
// sentence phonemized as Piper does, through the network with fresh noise,
// peak-normalized as Piper's runtime does (to full scale, gains capped at
// 100), and followed by Piper's 0.2 s of silence.
func (p *Piper) Synthesize(ctx context.Context, text string, o Options, emit func(Audio) error) error {
	if err := o.Check(); err != nil {
		return err
	}
	spk, err := p.speaker(o.Speaker)
	if err != nil {
		return err
	}
	inf := p.cfg.Inference
	lengthScale, noiseScale, noiseW := inf.LengthScale, inf.NoiseScale, inf.NoiseW
	if o.NoiseScale != nil {
		noiseScale = *o.NoiseScale
	}
	if o.NoiseW != nil {
		noiseW = *o.NoiseW
	}
	if lengthScale == 0 {
		lengthScale = 1
	}
	if o.Speed > 0 {
		lengthScale /= o.Speed
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x6f776c))
	normal := func(n int, scale float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * scale)
		}
		return v
	}
	silence := make([]float32, p.SampleRate()/5)
	for i, s := range Sentences(text) {
		if err := ctx.Err(); err != nil {
			return err
		}
		var sentences []Phonemes
		if p.cfg.PhonemeType == "text" {
			sentences = PhonemizeText(s, ConfigPhonemeMap(p.cfg))
		} else {
			var err error
			if sentences, err = PhonemizeEspeak(p.cfg.Espeak.Voice, s, ConfigPhonemeMap(p.cfg)); err != nil {
				return err
			}
		}
		var samples []float32
		for _, ph := range sentences {
			ids, missing := PhonemeIDs(p.cfg, ph)
			if len(missing) > 0 {
				var list []string
				for r := range missing {
					list = append(list, strconv.QuoteRune(r))
				}
				slices.Sort(list)
				if len(ids) <= 3 { // none of the sentence's phonemes
					return fmt.Errorf("%w: the voice has none of the phonemes of %q (%s)", ErrBadOption, s, strings.Join(list, " "))
				}
				slog.Warn("tts: phonemes the voice lacks are skipped", "voice", p.Describe(), "phonemes", strings.Join(list, " "))
			}
			if len(ids) <= 3 { // nothing but the sentence marks
				continue
			}
			audio, _, err := p.inferContext(ctx, ids, normal(2*len(ids), noiseW), func(n int) []float32 { return normal(p.h.Inter*n, noiseScale) }, lengthScale, spk)
			if err != nil {
				return err
			}
			peak := float32(0)
			for _, v := range audio {
				peak = max(peak, v, -v)
			}
			gain := 1 / max(peak, 0.01)
			for j := range audio {
				audio[j] = max(-1, min(1, audio[j]*gain))
			}
			samples = append(append(samples, audio...), silence...)
		}
		if len(samples) == 0 {
			continue
		}
		if err := emit(Audio{Samples: samples, Sentence: s, Index: i}); err != nil {
			return err
		}
	}
	return nil
}
