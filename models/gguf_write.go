package models

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// TensorSpec describes a tensor to write: its layout and a function that
// writes exactly its bytes (TensorBytes(Type, Dims) of them).
type TensorSpec struct {
	Name  string
	Type  GGMLType
	Dims  []uint64 // innermost first
	Write func(w io.Writer) error
}

// WriteGGUF writes a GGUF version 3 file with the metadata kvs (in order)
// and tensors, each aligned to 32 bytes (or general.alignment when kvs sets
// it). Array values are slices of the element type; ArrayType may be left
// zero for them and is inferred.
func WriteGGUF(w io.Writer, kvs []GGUFKV, tensors []TensorSpec) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := &countWriter{w: bw}
	align := uint64(ggufDefaultAlignment)
	le := binary.LittleEndian
	put := func(v any) { _ = binary.Write(cw, le, v) }
	putStr := func(s string) {
		put(uint64(len(s)))
		_, _ = io.WriteString(cw, s)
	}
	put(uint32(ggufMagic))
	put(uint32(3))
	put(uint64(len(tensors)))
	put(uint64(len(kvs)))
	for _, kv := range kvs {
		putStr(kv.Key)
		if err := writeValue(cw, kv, putStr); err != nil {
			return fmt.Errorf("metadata %q: %w", kv.Key, err)
		}
		if kv.Key == "general.alignment" {
			if a, ok := kv.Value.(uint32); ok {
				align = uint64(a)
			}
		}
	}
	offset := uint64(0)
	sizes := make([]uint64, len(tensors))
	for i, t := range tensors {
		n, err := TensorBytes(t.Type, t.Dims)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		sizes[i] = n
		putStr(t.Name)
		put(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			put(d)
		}
		put(uint32(t.Type))
		put(offset)
		offset = alignUp(offset+n, align)
	}
	if err := pad(cw, align); err != nil {
		return err
	}
	for i, t := range tensors {
		start := cw.n
		if err := t.Write(cw); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if got := uint64(cw.n - start); got != sizes[i] {
			return fmt.Errorf("tensor %q: wrote %d bytes, want %d", t.Name, got, sizes[i])
		}
		if err := pad(cw, align); err != nil {
			return err
		}
	}
	if cw.err != nil {
		return cw.err
	}
	return bw.Flush()
}

func pad(cw *countWriter, align uint64) error {
	n := alignUp(uint64(cw.n), align) - uint64(cw.n)
	_, err := cw.Write(make([]byte, n))
	return err
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

func valueType(v any) (GGUFValueType, bool) {
	switch v.(type) {
	case uint8:
		return GGUFUint8, true
	case int8:
		return GGUFInt8, true
	case uint16:
		return GGUFUint16, true
	case int16:
		return GGUFInt16, true
	case uint32:
		return GGUFUint32, true
	case int32:
		return GGUFInt32, true
	case float32:
		return GGUFFloat32, true
	case bool:
		return GGUFBool, true
	case string:
		return GGUFString, true
	case uint64:
		return GGUFUint64, true
	case int64:
		return GGUFInt64, true
	case float64:
		return GGUFFloat64, true
	}
	return 0, false
}

func writeValue(cw *countWriter, kv GGUFKV, putStr func(string)) error {
	le := binary.LittleEndian
	if t, ok := valueType(kv.Value); ok {
		_ = binary.Write(cw, le, uint32(t))
		if t == GGUFString {
			putStr(kv.Value.(string))
		} else {
			_ = binary.Write(cw, le, kv.Value)
		}
		return nil
	}
	_ = binary.Write(cw, le, uint32(GGUFArray))
	switch v := kv.Value.(type) {
	case []string:
		_ = binary.Write(cw, le, uint32(GGUFString))
		_ = binary.Write(cw, le, uint64(len(v)))
		for _, s := range v {
			putStr(s)
		}
		return nil
	case []bool:
		_ = binary.Write(cw, le, uint32(GGUFBool))
		_ = binary.Write(cw, le, uint64(len(v)))
		return binary.Write(cw, le, v)
	}
	var et GGUFValueType
	var n int
	switch v := kv.Value.(type) {
	case []uint8:
		et, n = GGUFUint8, len(v)
	case []int8:
		et, n = GGUFInt8, len(v)
	case []uint16:
		et, n = GGUFUint16, len(v)
	case []int16:
		et, n = GGUFInt16, len(v)
	case []uint32:
		et, n = GGUFUint32, len(v)
	case []int32:
		et, n = GGUFInt32, len(v)
	case []float32:
		et, n = GGUFFloat32, len(v)
	case []uint64:
		et, n = GGUFUint64, len(v)
	case []int64:
		et, n = GGUFInt64, len(v)
	case []float64:
		et, n = GGUFFloat64, len(v)
	default:
		return fmt.Errorf("unsupported value type %T", kv.Value)
	}
	_ = binary.Write(cw, le, uint32(et))
	_ = binary.Write(cw, le, uint64(n))
	return binary.Write(cw, le, kv.Value)
}

// Float32Bytes returns the little-endian bytes of v.
func Float32Bytes(v []float32) []byte {
	out := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(f))
	}
	return out
}
