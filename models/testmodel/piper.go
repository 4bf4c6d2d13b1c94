package testmodel

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/owlengine/owl/models"
)

// PiperConfig describes a generated Piper voice.
type PiperConfig struct {
	HParams    models.PiperHParams
	SampleRate int
	Voice      string // espeak-ng voice of its phonemes
	Seed       uint64
}

// PiperSmall is the smallest voice the tests run: Piper's medium layout
// (relative attention with window 4, the stochastic duration predictor,
// four coupling flows, a HiFi-GAN of three stages with ResBlock2) at a
// fraction of its widths, at 16 kHz.
func PiperSmall() PiperConfig {
	return PiperConfig{HParams: models.PiperHParams{Symbols: 160, Hidden: 32, Inter: 32, Filter: 64, Heads: 2, Layers: 2, Window: 4, FFNKernel: 3,
		DPLayers: 3, DPBins: 10, Flows: 4, WNLayers: 4, WNKernel: 5,
		UpsampleInitial: 64, UpsampleRates: []int{8, 8, 4}, UpsampleKernels: []int{16, 16, 8},
		ResblockKernels: []int{3, 5, 7}, ResblockDilation: [][]int{{1, 2}, {2, 6}, {3, 12}}, ResblockType: "2", Speakers: 1},
		SampleRate: 16000, Voice: "en-us", Seed: 41}
}

// PiperMulti is PiperSmall with three speakers (a speaker embedding of 16
// conditioning the duration predictor, every flow and the decoder).
func PiperMulti() PiperConfig {
	c := PiperSmall()
	c.HParams.Speakers, c.HParams.Gin, c.Seed = 3, 16, 47
	return c
}

// PiperMedium has the sizes of Piper's "medium" voices (en_US-lessac-medium:
// 192 channels, 256 symbols, 22,050 Hz), for benchmarks.
func PiperMedium() PiperConfig {
	c := PiperSmall()
	h := &c.HParams
	h.Symbols, h.Hidden, h.Inter, h.Filter, h.Layers, h.UpsampleInitial = 256, 192, 192, 768, 6, 256
	c.SampleRate, c.Seed = 22050, 43
	return c
}

// piperSymbols is the phoneme_id_map's order of symbols: Piper's pad, BOS,
// EOS, space and punctuation first (ids 0–13, as in its default map),
// letters, IPA, digits.
func piperSymbols() []string {
	out := []string{"_", "^", "$", " ", "!", "'", "(", ")", ",", "-", ".", ":", ";", "?"}
	for c := 'a'; c <= 'z'; c++ {
		if c != 'g' {
			out = append(out, string(c))
		}
	}
	for _, r := range "æçðøħŋœǀǁǂǃɐɑɒɓɔɕɖɗɘəɚɛɜɞɟɠɡɢɣɤɥɦɧɨɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾʀʁʂʃʄʈʉʊʋʌʍʎʏʐʑʒʔʕʘʙʛʜʝʟʡʢʲˈˌːˑ˞βθχᵻⱱ" {
		out = append(out, string(r))
	}
	for c := '0'; c <= '9'; c++ {
		out = append(out, string(c))
	}
	for _, r := range "\u0327\u0303\u032a\u032f\u0329ʰˤε↓#\"↑" {
		out = append(out, string(r))
	}
	return out
}

// PiperConfigJSON is the voice's .onnx.json, laid out as Piper's.
func PiperConfigJSON(c PiperConfig) ([]byte, error) {
	ids := map[string][]int{}
	for i, s := range piperSymbols() {
		if i >= c.HParams.Symbols {
			return nil, fmt.Errorf("%d symbols do not hold Piper's %d phonemes", c.HParams.Symbols, len(piperSymbols()))
		}
		ids[s] = []int{i}
	}
	var cfg models.PiperConfig
	cfg.Audio.SampleRate, cfg.Audio.Quality = c.SampleRate, "medium"
	cfg.Espeak.Voice = c.Voice
	cfg.Language.Code = "en_US"
	cfg.Inference.NoiseScale, cfg.Inference.LengthScale, cfg.Inference.NoiseW = 0.667, 1, 0.8
	cfg.PhonemeType, cfg.PhonemeMap, cfg.PhonemeIDMap = "espeak", map[string][]string{}, ids
	cfg.NumSymbols, cfg.NumSpeakers, cfg.SpeakerIDMap = c.HParams.Symbols, c.HParams.Speakers, map[string]int{}
	if c.HParams.Speakers > 1 {
		for i := range c.HParams.Speakers {
			cfg.SpeakerIDMap[fmt.Sprintf("speaker%d", i)] = i
		}
	}
	cfg.PiperVersion, cfg.Dataset = "1.0.0", "owl-test"
	return json.MarshalIndent(cfg, "", "  ")
}

// PiperWeights are the generated voice's weights by state_dict name, with
// their shapes.
func PiperWeights(c PiperConfig) (map[string][]float32, map[string][]int64) {
	shapes := models.PiperTensorShapes(c.HParams)
	w := map[string][]float32{}
	for name, dims := range shapes {
		n := 1
		for _, d := range dims {
			n *= int(d)
		}
		r := newRNG(seedFor(c.Seed, name))
		v := make([]float32, n)
		var gen func() float32
		switch {
		case strings.HasSuffix(name, ".gamma"):
			gen = func() float32 { return 1 + r.uniform(0.1) }
		case strings.HasSuffix(name, ".beta"), strings.HasSuffix(name, ".bias"), strings.HasPrefix(name, "dp.flows.0."):
			gen = func() float32 { return r.uniform(0.1) }
		case strings.Contains(name, "emb_rel"):
			gen = func() float32 { return r.uniform(0.3) }
		case name == "enc_p.emb.weight" || name == "emb_g.weight":
			gen = func() float32 { return r.uniform(0.3) }
		default: // weights: ±sqrt(3/fan-in), unit-variance outputs
			fanIn := 1
			for _, d := range dims[1:] {
				fanIn *= int(d)
			}
			if strings.HasPrefix(name, "dec.ups.") {
				fanIn = int(dims[0]) * int(dims[2]) / max(1, c.HParams.UpsampleRates[0])
			}
			a := float32(math.Sqrt(3 / float64(max(fanIn, 1))))
			gen = func() float32 { return r.uniform(a) }
		}
		for i := range v {
			v[i] = gen()
		}
		w[name] = v
	}
	return w, shapes
}

// PiperONNX is the generated voice as Piper's exporter leaves a voice: the
// graph inputs and output of its export (input, input_lengths, scales, and
// sid for several speakers; output [1, 1, 1, time]), the weights as
// initializers named as the export names them — the phoneme embedding
// under "sid" in a single-speaker voice, the flow's weight-normed
// convolutions as anonymous onnx::Conv_N constants, the duration
// predictor's first log-scale folded into /dp/flows.0/Exp_output_0 — and
// the nodes through which a reader finds them: the embedding's Gather,
// every convolution (named by its module path, with its kernel, stride,
// dilation and padding), the folded scale's Mul. The other nodes of a
// real export (the arithmetic between them) are not written: the file is
// a voice's weights and structure, not a graph to execute.
func PiperONNX(c PiperConfig) *models.ONNXModel {
	h := c.HParams
	w, shapes := PiperWeights(c)
	g := models.ONNXGraph{Name: "main_graph"}
	g.Inputs = []models.ONNXValueInfo{
		{Name: "input", ElemType: models.ONNXInt64, Shape: []models.ONNXDim{{Param: "batch_size"}, {Param: "phonemes"}}},
		{Name: "input_lengths", ElemType: models.ONNXInt64, Shape: []models.ONNXDim{{Param: "batch_size"}}},
		{Name: "scales", ElemType: models.ONNXFloat, Shape: []models.ONNXDim{{Value: 3}}},
	}
	if h.Speakers > 1 {
		g.Inputs = append(g.Inputs, models.ONNXValueInfo{Name: "sid", ElemType: models.ONNXInt64, Shape: []models.ONNXDim{{Value: 1}}})
	}
	g.Outputs = []models.ONNXValueInfo{{Name: "output", ElemType: models.ONNXFloat,
		Shape: []models.ONNXDim{{Param: "batch_size"}, {Value: 1}, {Value: 1}, {Param: "time"}}}}
	stored := map[string]string{} // state_dict name → initializer name
	anon := 100
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		switch {
		case name == "enc_p.emb.weight" && h.Speakers == 1:
			stored[name] = "sid"
		case strings.HasPrefix(name, "flow.") && strings.HasSuffix(name, ".weight") &&
			(strings.Contains(name, ".in_layers.") || strings.Contains(name, ".res_skip_layers.") || strings.Contains(name, ".cond_layer")):
			anon += 3
			stored[name] = "onnx::Conv_" + strconv.Itoa(anon)
		case name == "dp.flows.0.logs":
			stored[name] = "/dp/flows.0/Exp_output_0"
		default:
			stored[name] = name
		}
		v := w[name]
		if name == "dp.flows.0.logs" {
			v = slices.Clone(v)
			for i, x := range v {
				v[i] = float32(math.Exp(-float64(x)))
			}
		}
		g.Initializers = append(g.Initializers, FloatTensor(stored[name], shapes[name], v))
	}
	ints := func(v ...int64) models.ONNXAttr { return models.ONNXAttr{Type: models.ONNXAttrInts, Ints: v} }
	convNode := func(module string, k, stride, dilation, pad int, transpose bool) {
		op := "Conv"
		if transpose {
			op = "ConvTranspose"
		}
		inputs := []string{"x", stored[module+".weight"]}
		if _, ok := shapes[module+".bias"]; ok {
			inputs = append(inputs, stored[module+".bias"])
		}
		path := "/" + strings.Join(moduleParts(module), "/")
		g.Nodes = append(g.Nodes, models.ONNXNode{Name: path + "/" + op, OpType: op, Inputs: inputs, Outputs: []string{path + "/" + op + "_output_0"},
			Attrs: map[string]models.ONNXAttr{"kernel_shape": ints(int64(k)), "strides": ints(int64(stride)), "dilations": ints(int64(dilation)),
				"pads": ints(int64(pad), int64(pad)), "group": {Type: models.ONNXAttrInt, I: 1}}})
	}
	g.Nodes = append(g.Nodes, models.ONNXNode{Name: "/enc_p/emb/Gather", OpType: "Gather", Inputs: []string{stored["enc_p.emb.weight"], "input"},
		Outputs: []string{"/enc_p/emb/Gather_output_0"}})
	g.Nodes = append(g.Nodes, models.ONNXNode{Name: "/dp/flows.0/Mul", OpType: "Mul", Inputs: []string{"/dp/flows.0/Sub_output_0", stored["dp.flows.0.logs"]},
		Outputs: []string{"/dp/flows.0/Mul_output_0"}})
	for _, name := range names {
		module, ok := strings.CutSuffix(name, ".weight")
		dims := shapes[name]
		if !ok || len(dims) != 3 {
			continue
		}
		k := int(dims[2])
		stride, dilation, pad := 1, 1, (k-1)/2
		switch {
		case strings.HasPrefix(module, "dec.ups."):
			i, _ := strconv.Atoi(strings.TrimPrefix(module, "dec.ups."))
			stride = h.UpsampleRates[i]
			pad = (k - stride) / 2
			convNode(module, k, stride, 1, pad, true)
			continue
		case strings.HasPrefix(module, "dec.resblocks."):
			rest := strings.TrimPrefix(module, "dec.resblocks.")
			b, _ := strconv.Atoi(rest[:strings.IndexByte(rest, '.')])
			m, _ := strconv.Atoi(rest[strings.LastIndexByte(rest, '.')+1:])
			if !strings.Contains(rest, ".convs2.") {
				dilation = h.ResblockDilation[b%len(h.ResblockKernels)][m]
			}
			pad = (k*dilation - dilation) / 2
		case strings.Contains(module, ".convs_sep."):
			i, _ := strconv.Atoi(module[strings.LastIndexByte(module, '.')+1:])
			dilation = int(math.Pow(3, float64(i)))
			pad = dilation
		case strings.HasPrefix(module, "enc_p.encoder.ffn_layers."):
			pad = 0 // the FFN pads before its convolutions
		}
		convNode(module, k, stride, dilation, pad, false)
	}
	return &models.ONNXModel{IRVersion: 8, Producer: "pytorch", ProducerVersion: "1.13.1", Opsets: map[string]int64{"": 15}, Graph: g}
}

// moduleParts splits a module path the way torch's exporter scopes node
// names: "flow.flows.0.enc.in_layers.1" → flow, flows.0, enc, in_layers.1
// (a number stays with the name before it).
func moduleParts(module string) []string {
	var out []string
	for _, p := range strings.Split(module, ".") {
		if _, err := strconv.Atoi(p); err == nil && len(out) > 0 {
			out[len(out)-1] += "." + p
			continue
		}
		out = append(out, p)
	}
	return out
}

// WritePiperVoice writes the voice as dir/NAME.onnx and dir/NAME.onnx.json
// and returns the model's path.
func WritePiperVoice(dir, name string, c PiperConfig) (string, error) {
	js, err := PiperConfigJSON(c)
	if err != nil {
		return "", err
	}
	path := dir + "/" + name + ".onnx"
	if err := writeFileAtomic(path, func(w io.Writer) error {
		_, err := w.Write(EncodeONNX(PiperONNX(c)))
		return err
	}); err != nil {
		return "", err
	}
	if err := os.WriteFile(path+".json", js, 0o644); err != nil {
		return "", err
	}
	return path, nil
}
