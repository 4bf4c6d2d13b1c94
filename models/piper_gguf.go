package models

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// PiperGGUF converts a Piper voice's weights (found by FindPiperWeights in
// the ONNX file at src) into a GGUF in cacheDir that the ggml backend
// loads, once: the name carries a key of the source's size, modification
// time and sizes, and an unchanged source reuses its conversion. Tensors
// keep their state_dict names, f32 (f16 weights are widened), dimensions
// reversed to ggml's innermost-first order.
func PiperGGUF(src string, v *PiperVoice, cacheDir string) (string, error) {
	st, err := os.Stat(src)
	if err != nil {
		return "", err
	}
	key := piperKey(st.Size(), st.ModTime(), v)
	base := strings.TrimSuffix(filepath.Base(src), filepath.Ext(src))
	dst := filepath.Join(cacheDir, fmt.Sprintf("%s-%s.gguf", base, key[:16]))
	return cachedGGUF(src, dst, key, 0, func(w io.Writer) error {
		specs, names, err := piperSpecs(v)
		if err != nil {
			return err
		}
		kvs := []GGUFKV{
			{Key: "general.architecture", Value: "piper"},
			{Key: "general.name", Value: base},
			{Key: "piper.block_count", Value: uint32(piperBlocks(names))},
			{Key: keySource, Value: key},
		}
		return WriteGGUF(w, kvs, specs)
	})
}

// piperSpecs are the tensors of a voice's GGUF: its weights, the phases of
// its transposed convolutions and its flows' reversed weights; names are
// the weights' names.
func piperSpecs(v *PiperVoice) ([]TensorSpec, []string, error) {
	names := make([]string, 0, len(v.Weights))
	for n := range v.Weights {
		names = append(names, n)
	}
	sort.Strings(names)
	var specs []TensorSpec
	for _, name := range names {
		t := v.Weights[name]
		dims := make([]uint64, len(t.Dims))
		for i, d := range t.Dims {
			dims[len(dims)-1-i] = uint64(d)
		}
		if len(dims) == 0 {
			dims = []uint64{1}
		}
		specs = append(specs, TensorSpec{Name: name, Type: TypeF32, Dims: dims, Write: func(w io.Writer) error {
			if t.DataType == ONNXFloat {
				_, err := w.Write(t.Data)
				return err
			}
			f, err := t.Floats()
			if err != nil {
				return err
			}
			_, err = w.Write(Float32Bytes(f))
			return err
		}})
	}
	h := v.HParams
	// Each transposed convolution of the decoder also as its phases: the
	// output samples t·s+r (r < s) of a stride-s transposed convolution
	// with a kernel of K = M·s taps are a plain convolution of M taps with
	// the kernel's taps r, r+s, … reversed, and the s phases are one
	// convolution of s·Cout channels. Stored torch-style as [s·Cout][Cin][M].
	for i, stride := range h.UpsampleRates {
		name := fmt.Sprintf("dec.ups.%d", i)
		t := v.Weights[name+".weight"]
		cin, cout, k := int(t.Dims[0]), int(t.Dims[1]), int(t.Dims[2])
		if k%stride != 0 {
			return nil, nil, fmt.Errorf("%w: %s has %d taps, not a multiple of its stride %d", ErrNotPiper, name, k, stride)
		}
		m := k / stride
		w, err := t.Floats()
		if err != nil {
			return nil, nil, err
		}
		ph := make([]float32, stride*cout*cin*m)
		for r := range stride {
			for o := range cout {
				for c := range cin {
					for j := range m {
						ph[((r*cout+o)*cin+c)*m+j] = w[(c*cout+o)*k+r+(m-1-j)*stride]
					}
				}
			}
		}
		specs = append(specs, TensorSpec{Name: name + ".phases", Type: TypeF32, Dims: []uint64{uint64(m), uint64(cin), uint64(stride * cout)},
			Write: func(w io.Writer) error { _, err := w.Write(Float32Bytes(ph)); return err }})
	}
	// The flows' channel flips, folded into weights: a coupling layer run
	// after an odd number of flips sees its halves swapped and reversed, so
	// it is given its input convolution with the input channels reversed
	// and its output convolution with the output channels reversed.
	if h.Flows%2 != 0 {
		return nil, nil, fmt.Errorf("%w: %d coupling flows (Piper has an even number)", ErrNotPiper, h.Flows)
	}
	for f := range h.Flows {
		p := fmt.Sprintf("flow.flows.%d.", 2*f)
		pre, err1 := v.Weights[p+"pre.weight"].Floats()
		post, err2 := v.Weights[p+"post.weight"].Floats()
		postB, err3 := v.Weights[p+"post.bias"].Floats()
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, nil, err
		}
		half, hid := h.Inter/2, h.Hidden
		preR, postR, postBR := make([]float32, len(pre)), make([]float32, len(post)), make([]float32, len(postB))
		for o := range hid {
			for i := range half {
				preR[o*half+i] = pre[o*half+half-1-i]
			}
		}
		for o := range half {
			copy(postR[o*hid:(o+1)*hid], post[(half-1-o)*hid:(half-o)*hid])
			postBR[o] = postB[half-1-o]
		}
		for _, r := range []struct {
			name string
			dims []uint64
			data []float32
		}{{p + "pre.weight.rev", []uint64{1, uint64(half), uint64(hid)}, preR}, {p + "post.weight.rev", []uint64{1, uint64(hid), uint64(half)}, postR},
			{p + "post.bias.rev", []uint64{uint64(half)}, postBR}} {
			specs = append(specs, TensorSpec{Name: r.name, Type: TypeF32, Dims: r.dims,
				Write: func(w io.Writer) error { _, err := w.Write(Float32Bytes(r.data)); return err }})
		}
	}
	return specs, names, nil
}

// piperBlocks is the block count the ggml backend must be told: it files
// each tensor under the first number in its name ("dec.resblocks.8…" in
// block 8), so the count passes the largest.
func piperBlocks(names []string) int {
	n := 1
	for _, name := range names {
		if f := strings.FieldsFunc(name, func(r rune) bool { return r < '0' || r > '9' }); len(f) > 0 {
			if i, err := strconv.Atoi(f[0]); err == nil && i < 1<<16 {
				n = max(n, i+1)
			}
		}
	}
	return n
}

// piperKey hashes what identifies a conversion: the source's size and
// modification time, and the weights' names and shapes.
func piperKey(size int64, mtime time.Time, v *PiperVoice) string {
	h := sha256.New()
	fmt.Fprintf(h, "piper\x00%d\x00%d\x00", size, mtime.UnixNano())
	names := make([]string, 0, len(v.Weights))
	for n := range v.Weights {
		names = append(names, n)
	}
	sort.Strings(names)
	var b [8]byte
	for _, n := range names {
		io.WriteString(h, n)
		for _, d := range v.Weights[n].Dims {
			binary.LittleEndian.PutUint64(b[:], uint64(d))
			h.Write(b[:])
		}
		if n == "dp.flows.0.logs" { // derived, so its values are part of the key
			f, _ := v.Weights[n].Floats()
			for _, x := range f {
				binary.LittleEndian.PutUint32(b[:4], math.Float32bits(x))
				h.Write(b[:4])
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
