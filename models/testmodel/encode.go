package testmodel

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/x448/float16"

	"github.com/owlengine/owl/models"
)

// encodeRows writes n values drawn from gen as type t, row by row (rows of
// rowLen elements), through a fixed buffer so tensors of any size stream.
func encodeRows(w io.Writer, t models.GGMLType, n, rowLen int, gen func() float32) error {
	if n%rowLen != 0 {
		return fmt.Errorf("%d values are not whole rows of %d", n, rowLen)
	}
	row := make([]float32, rowLen)
	var out []byte
	for done := 0; done < n; done += rowLen {
		for i := range row {
			row[i] = gen()
		}
		var err error
		out, err = appendEncoded(out[:0], t, row)
		if err != nil {
			return err
		}
		if _, err := w.Write(out); err != nil {
			return err
		}
	}
	return nil
}

// appendEncoded appends row encoded as t.
func appendEncoded(dst []byte, t models.GGMLType, row []float32) ([]byte, error) {
	switch t {
	case models.TypeF32:
		for _, v := range row {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
		}
	case models.TypeF16:
		for _, v := range row {
			dst = binary.LittleEndian.AppendUint16(dst, float16.Fromfloat32(v).Bits())
		}
	default:
		if quantizable(t) {
			return appendQuantized(dst, t, row)
		}
		return nil, fmt.Errorf("cannot encode %s", t)
	}
	return dst, nil
}

// appendQ8_0Block quantizes 32 values as ggml's q8_0 does: an f16 scale
// d = max|x|/127 followed by 32 int8 values round(x/d).
func appendQ8_0Block(dst []byte, x []float32) []byte {
	amax := float32(0)
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	d := amax / 127
	id := float32(0)
	if d != 0 {
		id = 1 / d
	}
	dst = binary.LittleEndian.AppendUint16(dst, float16.Fromfloat32(d).Bits())
	for _, v := range x {
		dst = append(dst, byte(int8(math.Round(float64(v*id)))))
	}
	return dst
}
