package testmodel

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"

	"github.com/owlengine/owl/models"
)

// The legacy ggml block types whisper.cpp's quantize writes (q4_0, q4_1,
// q5_0, q5_1, q8_0): blocks of 32 values, each an f16 scale d (and for
// the _1 types an f16 minimum m) and the values' codes. The encoders
// follow ggml's reference quantizers, the decoders its dequantizers, so a
// row sent through a type and back holds exactly what a tensor of that
// type holds.
const quantBlock = 32

// quantizable reports whether appendQuantized knows t.
func quantizable(t models.GGMLType) bool {
	switch t {
	case models.TypeQ4_0, models.TypeQ4_1, models.TypeQ5_0, models.TypeQ5_1, models.TypeQ8_0:
		return true
	}
	return false
}

// appendQuantized appends row, a whole number of blocks, encoded as t.
func appendQuantized(dst []byte, t models.GGMLType, row []float32) ([]byte, error) {
	if len(row)%quantBlock != 0 {
		return nil, fmt.Errorf("%s row of %d values is not a multiple of %d", t, len(row), quantBlock)
	}
	for b := 0; b < len(row); b += quantBlock {
		x := row[b : b+quantBlock]
		switch t {
		case models.TypeQ8_0:
			dst = appendQ8_0Block(dst, x)
		case models.TypeQ4_0:
			dst = appendSymmetric(dst, x, 4)
		case models.TypeQ5_0:
			dst = appendSymmetric(dst, x, 5)
		case models.TypeQ4_1:
			dst = appendAffine(dst, x, 4)
		case models.TypeQ5_1:
			dst = appendAffine(dst, x, 5)
		default:
			return nil, fmt.Errorf("cannot encode %s", t)
		}
	}
	return dst, nil
}

// code is ggml's conversion of a scaled value to a code: truncated toward
// zero as C's (int8_t) cast does, then capped at top.
func code(v float32, top int) int {
	return max(0, min(top, int(math.Trunc(float64(v)))))
}

// appendSymmetric encodes a q4_0 or q5_0 block: d = m/−2^(bits−1) for the
// value m of largest magnitude, codes round(x/d)+2^(bits−1). The low
// nibbles hold values 0–15 (low) and 16–31 (high) of the block; q5_0's
// fifth bits go into a 32-bit mask, value j's at bit j.
func appendSymmetric(dst []byte, x []float32, bits int) []byte {
	var amax, mx float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > amax {
			amax, mx = a, v
		}
	}
	half := float32(int(1) << (bits - 1))
	d := mx / -half
	id := float32(0)
	if d != 0 {
		id = 1 / d
	}
	dst = binary.LittleEndian.AppendUint16(dst, float16.Fromfloat32(d).Bits())
	top := 1<<bits - 1
	var qs [quantBlock / 2]byte
	var qh uint32
	for j := range quantBlock / 2 {
		c0, c1 := code(x[j]*id+half+0.5, top), code(x[j+quantBlock/2]*id+half+0.5, top)
		qs[j] = byte(c0&0xf | (c1&0xf)<<4)
		qh |= uint32(c0>>4&1)<<j | uint32(c1>>4&1)<<(j+quantBlock/2)
	}
	if bits == 5 {
		dst = binary.LittleEndian.AppendUint32(dst, qh)
	}
	return append(dst, qs[:]...)
}

// appendAffine encodes a q4_1 or q5_1 block: m the minimum,
// d = (max−m)/(2^bits−1), codes round((x−m)/d).
func appendAffine(dst []byte, x []float32, bits int) []byte {
	lo, hi := x[0], x[0]
	for _, v := range x {
		lo, hi = min(lo, v), max(hi, v)
	}
	top := 1<<bits - 1
	d := (hi - lo) / float32(top)
	id := float32(0)
	if d != 0 {
		id = 1 / d
	}
	dst = binary.LittleEndian.AppendUint16(dst, float16.Fromfloat32(d).Bits())
	dst = binary.LittleEndian.AppendUint16(dst, float16.Fromfloat32(lo).Bits())
	var qs [quantBlock / 2]byte
	var qh uint32
	for j := range quantBlock / 2 {
		c0, c1 := code((x[j]-lo)*id+0.5, top), code((x[j+quantBlock/2]-lo)*id+0.5, top)
		qs[j] = byte(c0&0xf | (c1&0xf)<<4)
		qh |= uint32(c0>>4&1)<<j | uint32(c1>>4&1)<<(j+quantBlock/2)
	}
	if bits == 5 {
		dst = binary.LittleEndian.AppendUint32(dst, qh)
	}
	return append(dst, qs[:]...)
}

// dequantize decodes blocks of type t into dst (a whole number of blocks).
func dequantize(dst []float32, t models.GGMLType, src []byte) {
	f16 := func(b []byte) float32 { return float16.Frombits(binary.LittleEndian.Uint16(b)).Float32() }
	size := int(t.TypeSize())
	for b := 0; b*quantBlock < len(dst); b++ {
		blk, out := src[b*size:(b+1)*size], dst[b*quantBlock:(b+1)*quantBlock]
		switch t {
		case models.TypeQ8_0:
			d := f16(blk)
			for j := range out {
				out[j] = float32(int8(blk[2+j])) * d
			}
			continue
		}
		d, m, qs := f16(blk), float32(0), blk[2:]
		var qh uint32
		offset := float32(0)
		switch t {
		case models.TypeQ4_0:
			offset = 8
		case models.TypeQ5_0:
			qh, qs, offset = binary.LittleEndian.Uint32(blk[2:]), blk[6:], 16
		case models.TypeQ4_1:
			m, qs = f16(blk[2:]), blk[4:]
		case models.TypeQ5_1:
			m, qh, qs = f16(blk[2:]), binary.LittleEndian.Uint32(blk[4:]), blk[8:]
		}
		for j := range quantBlock / 2 {
			c0 := uint32(qs[j]&0xf) | (qh>>j&1)<<4
			c1 := uint32(qs[j]>>4) | (qh>>(j+quantBlock/2)&1)<<4
			out[j] = (float32(c0)-offset)*d + m
			out[j+quantBlock/2] = (float32(c1)-offset)*d + m
		}
	}
}

// roundTrip returns row as a tensor of type t holds it.
func roundTrip(t models.GGMLType, row []float32) ([]float32, error) {
	enc, err := appendQuantized(nil, t, row)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(row))
	dequantize(out, t, enc)
	return out, nil
}
