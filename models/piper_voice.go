package models

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// PiperHParams are a Piper VITS voice's sizes, read from its tensors'
// shapes and its graph's convolution attributes (Piper's training presets
// x_low, low, medium and high are points in this space; a voice is read
// for what it is, not matched against a preset).
type PiperHParams struct {
	Symbols   int // phoneme ids (rows of the embedding)
	Hidden    int // text encoder width
	Inter     int // latent channels
	Filter    int // text encoder feed-forward width
	Heads     int
	Layers    int // text encoder blocks
	Window    int // relative attention window (4)
	FFNKernel int
	// Stochastic duration predictor: DDSConv layers per stack, spline bins.
	DPLayers, DPBins int
	// Flow: coupling layers and their WaveNet's layers and kernel.
	Flows, WNLayers, WNKernel int
	// Decoder (HiFi-GAN).
	UpsampleInitial  int
	UpsampleRates    []int
	UpsampleKernels  []int
	ResblockKernels  []int
	ResblockDilation [][]int
	ResblockType     string // "1" (two convolutions per dilation) or "2"
	Speakers         int    // 1 for single-speaker voices
	Gin              int    // speaker embedding width (0 for single-speaker)
}

// HopLength is the number of samples per latent frame (the product of the
// upsampling rates, 256 in every Piper preset).
func (h PiperHParams) HopLength() int {
	n := 1
	for _, r := range h.UpsampleRates {
		n *= r
	}
	return n
}

// PiperVoice is a Piper voice's weights, found in its ONNX graph under the
// names of Piper's PyTorch model (see FindPiperWeights), with its sizes.
type PiperVoice struct {
	HParams PiperHParams
	Weights map[string]*ONNXTensor // by state_dict name: "enc_p.emb.weight", …
}

// piperFrom maps a module path of the graph's node names
// ("/flow/flows.0/enc/in_layers.0/Conv") to the parameter name its weight
// had ("flow.flows.0.enc.in_layers.0.weight").
func piperFrom(nodeName, param string) string {
	p := strings.TrimPrefix(nodeName, "/")
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[:i]
	} else {
		return ""
	}
	return strings.ReplaceAll(p, "/", ".") + "." + param
}

// isGraphConstant reports whether an initializer's name is one the
// exporter made up (folded constants) rather than a parameter's.
func isGraphConstant(name string) bool {
	if strings.HasPrefix(name, "onnx::") || strings.HasPrefix(name, "/") {
		return true
	}
	_, err := strconv.Atoi(name)
	return err == nil
}

// FindPiperWeights finds a Piper VITS voice's weights in its graph, by the
// graph's structure where the export renamed them, as Piper's exporter
// (torch.onnx at opset 15, constant folding on) leaves them:
//
//   - parameters keep their state_dict names, except
//   - the phoneme embedding, which single-speaker voices store under the
//     name "sid" (the unused fourth input name): it is the data of the
//     Gather whose indices are the graph input "input";
//   - the flow's weight-normed convolutions, folded into anonymous
//     "onnx::Conv_N" constants: each is named after its Conv node's bias
//     (".bias" → ".weight"), or after the node's module path;
//   - the duration predictor's first affine flow, whose log-scale is
//     folded into exp(−logs) ("/dp/flows.0/Exp_output_0"): it is recovered
//     as dp.flows.0.logs.
//
// Then every tensor the sizes call for must be there with its shape.
func FindPiperWeights(g *ONNXGraph) (*PiperVoice, error) {
	inits := map[string]*ONNXTensor{}
	for i := range g.Initializers {
		inits[g.Initializers[i].Name] = &g.Initializers[i]
	}
	w := map[string]*ONNXTensor{}
	for name, t := range inits {
		if !isGraphConstant(name) && name != "sid" {
			w[name] = t
		}
	}
	hasInput := map[string]bool{}
	for _, in := range g.Inputs {
		hasInput[in.Name] = true
	}
	for _, n := range g.Nodes {
		switch {
		case n.OpType == "Gather" && len(n.Inputs) == 2 && n.Inputs[1] == "input":
			if t := inits[n.Inputs[0]]; t != nil && len(t.Dims) == 2 {
				w["enc_p.emb.weight"] = t
			}
		case (n.OpType == "Conv" || n.OpType == "ConvTranspose") && len(n.Inputs) >= 2:
			t := inits[n.Inputs[1]]
			if t == nil || !isGraphConstant(t.Name) {
				continue
			}
			name := ""
			if len(n.Inputs) >= 3 && strings.HasSuffix(n.Inputs[2], ".bias") && !isGraphConstant(n.Inputs[2]) {
				name = strings.TrimSuffix(n.Inputs[2], ".bias") + ".weight"
			} else {
				name = piperFrom(n.Name, "weight")
			}
			if name != "" && w[name] == nil {
				w[name] = t
			}
		case n.OpType == "Mul" && strings.HasPrefix(n.Name, "/dp/flows.0/") && w["dp.flows.0.logs"] == nil:
			for _, in := range n.Inputs {
				t := inits[in]
				if t == nil || in == "dp.flows.0.m" || t.DataType != ONNXFloat || t.Elements() != 2 {
					continue
				}
				v, _ := t.Floats()
				logs := make([]float32, len(v))
				ok := true
				for i, e := range v {
					if !(e > 0) || math.IsInf(float64(e), 0) {
						ok = false
						break
					}
					logs[i] = float32(-math.Log(float64(e)))
				}
				if ok {
					lt := floatONNX("dp.flows.0.logs", t.Dims, logs)
					w["dp.flows.0.logs"] = &lt
				}
			}
		}
	}
	hp, err := piperHParams(w, g)
	if err != nil {
		return nil, err
	}
	shapes := PiperTensorShapes(hp)
	var missing []string
	for name, dims := range shapes {
		t := w[name]
		if t == nil {
			missing = append(missing, name)
			continue
		}
		if t.DataType != ONNXFloat && t.DataType != ONNXFloat16 {
			return nil, fmt.Errorf("%w: tensor %s has element type %d, not floats", ErrNotPiper, name, t.DataType)
		}
		if !slices.Equal(t.Dims, dims) {
			return nil, fmt.Errorf("%w: tensor %s has shape %v, want %v for its sizes", ErrNotPiper, name, t.Dims, dims)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		more := ""
		if len(missing) > 4 {
			more = fmt.Sprintf(" and %d more", len(missing)-4)
			missing = missing[:4]
		}
		return nil, fmt.Errorf("%w: the graph lacks %s%s", ErrNotPiper, strings.Join(missing, ", "), more)
	}
	v := &PiperVoice{HParams: hp, Weights: map[string]*ONNXTensor{}}
	for name := range shapes {
		v.Weights[name] = w[name]
	}
	return v, nil
}

func floatONNX(name string, dims []int64, v []float32) ONNXTensor {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		u := math.Float32bits(f)
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	return ONNXTensor{Name: name, DataType: ONNXFloat, Dims: dims, Data: b}
}

// piperHParams reads the sizes from the weights' shapes and the graph's
// convolution attributes.
func piperHParams(w map[string]*ONNXTensor, g *ONNXGraph) (PiperHParams, error) {
	var h PiperHParams
	dim := func(name string, i int) (int, error) {
		t := w[name]
		if t == nil || i >= len(t.Dims) {
			return 0, fmt.Errorf("%w: no %s (is this a Piper VITS voice?)", ErrNotPiper, name)
		}
		return int(t.Dims[i]), nil
	}
	var err error
	get := func(dst *int, name string, i int) {
		if err == nil {
			*dst, err = dim(name, i)
		}
	}
	get(&h.Symbols, "enc_p.emb.weight", 0)
	get(&h.Hidden, "enc_p.emb.weight", 1)
	get(&h.Inter, "flow.flows.0.post.weight", 0)
	get(&h.Filter, "enc_p.encoder.ffn_layers.0.conv_1.weight", 0)
	get(&h.FFNKernel, "enc_p.encoder.ffn_layers.0.conv_1.weight", 2)
	var relRows, kch int
	get(&relRows, "enc_p.encoder.attn_layers.0.emb_rel_k", 1)
	get(&kch, "enc_p.encoder.attn_layers.0.emb_rel_k", 2)
	get(&h.WNKernel, "flow.flows.0.enc.in_layers.0.weight", 2)
	get(&h.UpsampleInitial, "dec.conv_pre.weight", 0)
	var projOut int
	get(&projOut, "dp.flows.3.proj.weight", 0)
	if err != nil {
		return h, err
	}
	h.Inter *= 2 // post maps to half the channels
	if kch <= 0 || h.Hidden%kch != 0 || relRows%2 != 1 {
		return h, fmt.Errorf("%w: relative attention embeddings of %d×%d for width %d", ErrNotPiper, relRows, kch, h.Hidden)
	}
	h.Heads, h.Window = h.Hidden/kch, (relRows-1)/2
	if (projOut+1)%3 != 0 {
		return h, fmt.Errorf("%w: duration flow projection of %d channels", ErrNotPiper, projOut)
	}
	h.DPBins = (projOut + 1) / 3
	for h.Layers = 0; w["enc_p.encoder.ffn_layers."+strconv.Itoa(h.Layers)+".conv_1.weight"] != nil; h.Layers++ {
	}
	for h.DPLayers = 0; w["dp.convs.convs_sep."+strconv.Itoa(h.DPLayers)+".weight"] != nil; h.DPLayers++ {
	}
	for h.Flows = 0; w["flow.flows."+strconv.Itoa(2*h.Flows)+".post.weight"] != nil; h.Flows++ {
	}
	for h.WNLayers = 0; w["flow.flows.0.enc.in_layers."+strconv.Itoa(h.WNLayers)+".weight"] != nil; h.WNLayers++ {
	}
	for i := 0; ; i++ {
		t := w["dec.ups."+strconv.Itoa(i)+".weight"]
		if t == nil {
			break
		}
		k := int(t.Dims[len(t.Dims)-1])
		h.UpsampleKernels = append(h.UpsampleKernels, k)
		h.UpsampleRates = append(h.UpsampleRates, convAttr(g, "/dec/ups."+strconv.Itoa(i)+"/", "strides", k/2))
	}
	// Resblocks: kernels from the first stage's blocks, dilations from
	// their Conv nodes (ResBlock1 has convs1/convs2, ResBlock2 convs).
	nUps := len(h.UpsampleRates)
	nBlocks := 0
	for w["dec.resblocks."+strconv.Itoa(nBlocks)+".convs.0.weight"] != nil || w["dec.resblocks."+strconv.Itoa(nBlocks)+".convs1.0.weight"] != nil {
		nBlocks++
	}
	if nUps == 0 || nBlocks == 0 || nBlocks%nUps != 0 {
		return h, fmt.Errorf("%w: a decoder of %d upsampling stages and %d residual blocks", ErrNotPiper, nUps, nBlocks)
	}
	h.ResblockType = "2"
	conv := "convs"
	if w["dec.resblocks.0.convs1.0.weight"] != nil {
		h.ResblockType, conv = "1", "convs1"
	}
	for j := range nBlocks / nUps {
		p := "dec.resblocks." + strconv.Itoa(j) + "." + conv + "."
		h.ResblockKernels = append(h.ResblockKernels, int(w[p+"0.weight"].Dims[2]))
		var dil []int
		for m := 0; w[p+strconv.Itoa(m)+".weight"] != nil; m++ {
			dil = append(dil, convAttr(g, "/dec/resblocks."+strconv.Itoa(j)+"/"+conv+"."+strconv.Itoa(m)+"/", "dilations", 1))
		}
		h.ResblockDilation = append(h.ResblockDilation, dil)
	}
	h.Speakers, h.Gin = 1, 0
	if t := w["emb_g.weight"]; t != nil && len(t.Dims) == 2 {
		h.Speakers, h.Gin = int(t.Dims[0]), int(t.Dims[1])
	}
	switch {
	case h.Hidden <= 0 || h.Hidden > 4096 || h.Symbols <= 0 || h.Symbols > 1<<16 || h.Layers == 0 || h.Flows == 0 || h.WNLayers == 0 || h.DPLayers == 0:
		return h, fmt.Errorf("%w: sizes %+v", ErrNotPiper, h)
	case h.UpsampleInitial>>nUps <= 0:
		return h, fmt.Errorf("%w: %d decoder channels cannot halve %d times", ErrNotPiper, h.UpsampleInitial, nUps)
	}
	return h, nil
}

// convAttr returns the first value of a Conv/ConvTranspose node's integer
// attribute under the module path prefix, or def.
func convAttr(g *ONNXGraph, prefix, attr string, def int) int {
	for _, n := range g.Nodes {
		if strings.HasPrefix(n.Name, prefix) && (n.OpType == "Conv" || n.OpType == "ConvTranspose") {
			if a, ok := n.Attrs[attr]; ok && len(a.Ints) > 0 && a.Ints[0] > 0 && a.Ints[0] < 1<<16 {
				return int(a.Ints[0])
			}
		}
	}
	return def
}

// PiperTensorShapes gives every weight a voice of sizes h has, by
// state_dict name, with its shape as PyTorch (and the ONNX file) has it.
func PiperTensorShapes(h PiperHParams) map[string][]int64 {
	s := map[string][]int64{}
	d := func(v ...int) []int64 {
		out := make([]int64, len(v))
		for i, x := range v {
			out[i] = int64(x)
		}
		return out
	}
	conv := func(prefix string, out, in, k int, bias bool) {
		s[prefix+".weight"] = d(out, in, k)
		if bias {
			s[prefix+".bias"] = d(out)
		}
	}
	norm := func(prefix string, c int) {
		s[prefix+".gamma"] = d(c)
		s[prefix+".beta"] = d(c)
	}
	H, kch := h.Hidden, h.Hidden/max(h.Heads, 1)
	s["enc_p.emb.weight"] = d(h.Symbols, H)
	for i := range h.Layers {
		p := "enc_p.encoder."
		n := strconv.Itoa(i)
		for _, c := range []string{"conv_q", "conv_k", "conv_v", "conv_o"} {
			conv(p+"attn_layers."+n+"."+c, H, H, 1, true)
		}
		s[p+"attn_layers."+n+".emb_rel_k"] = d(1, 2*h.Window+1, kch)
		s[p+"attn_layers."+n+".emb_rel_v"] = d(1, 2*h.Window+1, kch)
		norm(p+"norm_layers_1."+n, H)
		norm(p+"norm_layers_2."+n, H)
		conv(p+"ffn_layers."+n+".conv_1", h.Filter, H, h.FFNKernel, true)
		conv(p+"ffn_layers."+n+".conv_2", H, h.Filter, h.FFNKernel, true)
	}
	conv("enc_p.proj", 2*h.Inter, H, 1, true)
	// Duration predictor: its width is the encoder's.
	dds := func(prefix string) {
		for i := range h.DPLayers {
			n := strconv.Itoa(i)
			conv(prefix+".convs_sep."+n, H, 1, 3, true)
			conv(prefix+".convs_1x1."+n, H, H, 1, true)
			norm(prefix+".norms_1."+n, H)
			norm(prefix+".norms_2."+n, H)
		}
	}
	conv("dp.pre", H, H, 1, true)
	dds("dp.convs")
	conv("dp.proj", H, H, 1, true)
	s["dp.flows.0.m"] = d(2, 1)
	s["dp.flows.0.logs"] = d(2, 1)
	for _, f := range []int{3, 5, 7} { // dp.flows.1 is dropped at inference
		p := "dp.flows." + strconv.Itoa(f)
		conv(p+".pre", H, 1, 1, true)
		dds(p + ".convs")
		conv(p+".proj", 3*h.DPBins-1, H, 1, true)
	}
	if h.Gin > 0 {
		conv("dp.cond", H, h.Gin, 1, true)
		s["emb_g.weight"] = d(h.Speakers, h.Gin)
	}
	half := h.Inter / 2
	for f := range h.Flows {
		p := "flow.flows." + strconv.Itoa(2*f)
		conv(p+".pre", H, half, 1, true)
		for l := range h.WNLayers {
			n := strconv.Itoa(l)
			conv(p+".enc.in_layers."+n, 2*H, H, h.WNKernel, true)
			out := 2 * H
			if l == h.WNLayers-1 {
				out = H
			}
			conv(p+".enc.res_skip_layers."+n, out, H, 1, true)
		}
		if h.Gin > 0 {
			conv(p+".enc.cond_layer", 2*H*h.WNLayers, h.Gin, 1, true)
		}
		conv(p+".post", half, H, 1, true)
	}
	conv("dec.conv_pre", h.UpsampleInitial, h.Inter, 7, true)
	ch := h.UpsampleInitial
	for i, k := range h.UpsampleKernels {
		p := "dec.ups." + strconv.Itoa(i)
		s[p+".weight"] = d(ch, ch/2, k) // ConvTranspose1d: [in, out, k]
		s[p+".bias"] = d(ch / 2)
		ch /= 2
		for j, rk := range h.ResblockKernels {
			p := "dec.resblocks." + strconv.Itoa(i*len(h.ResblockKernels)+j) + "."
			for m := range h.ResblockDilation[j] {
				if h.ResblockType == "1" {
					conv(p+"convs1."+strconv.Itoa(m), ch, ch, rk, true)
					conv(p+"convs2."+strconv.Itoa(m), ch, ch, rk, true)
				} else {
					conv(p+"convs."+strconv.Itoa(m), ch, ch, rk, true)
				}
			}
		}
	}
	s["dec.conv_post.weight"] = d(1, ch, 7) // no bias
	if h.Gin > 0 {
		conv("dec.cond", h.UpsampleInitial, h.Gin, 1, true)
	}
	return s
}
