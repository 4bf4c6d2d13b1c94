package models

import "fmt"

// GGMLType is a ggml tensor element type as stored in GGUF and whisper.cpp
// files (enum ggml_type).
type GGMLType uint32

// The ggml types owl knows the layout of.
const (
	TypeF32     GGMLType = 0
	TypeF16     GGMLType = 1
	TypeQ4_0    GGMLType = 2
	TypeQ4_1    GGMLType = 3
	TypeQ5_0    GGMLType = 6
	TypeQ5_1    GGMLType = 7
	TypeQ8_0    GGMLType = 8
	TypeQ8_1    GGMLType = 9
	TypeQ2_K    GGMLType = 10
	TypeQ3_K    GGMLType = 11
	TypeQ4_K    GGMLType = 12
	TypeQ5_K    GGMLType = 13
	TypeQ6_K    GGMLType = 14
	TypeQ8_K    GGMLType = 15
	TypeIQ2_XXS GGMLType = 16
	TypeIQ2_XS  GGMLType = 17
	TypeIQ3_XXS GGMLType = 18
	TypeIQ1_S   GGMLType = 19
	TypeIQ4_NL  GGMLType = 20
	TypeIQ3_S   GGMLType = 21
	TypeIQ2_S   GGMLType = 22
	TypeIQ4_XS  GGMLType = 23
	TypeI8      GGMLType = 24
	TypeI16     GGMLType = 25
	TypeI32     GGMLType = 26
	TypeI64     GGMLType = 27
	TypeF64     GGMLType = 28
	TypeIQ1_M   GGMLType = 29
	TypeBF16    GGMLType = 30
	TypeTQ1_0   GGMLType = 34
	TypeTQ2_0   GGMLType = 35
	TypeMXFP4   GGMLType = 39
)

type typeLayout struct {
	name      string
	blockSize uint64 // elements per block
	typeSize  uint64 // bytes per block
}

var typeLayouts = map[GGMLType]typeLayout{
	TypeF32:     {"f32", 1, 4},
	TypeF16:     {"f16", 1, 2},
	TypeQ4_0:    {"q4_0", 32, 18},
	TypeQ4_1:    {"q4_1", 32, 20},
	TypeQ5_0:    {"q5_0", 32, 22},
	TypeQ5_1:    {"q5_1", 32, 24},
	TypeQ8_0:    {"q8_0", 32, 34},
	TypeQ8_1:    {"q8_1", 32, 36},
	TypeQ2_K:    {"q2_K", 256, 84},
	TypeQ3_K:    {"q3_K", 256, 110},
	TypeQ4_K:    {"q4_K", 256, 144},
	TypeQ5_K:    {"q5_K", 256, 176},
	TypeQ6_K:    {"q6_K", 256, 210},
	TypeQ8_K:    {"q8_K", 256, 292},
	TypeIQ2_XXS: {"iq2_xxs", 256, 66},
	TypeIQ2_XS:  {"iq2_xs", 256, 74},
	TypeIQ3_XXS: {"iq3_xxs", 256, 98},
	TypeIQ1_S:   {"iq1_s", 256, 50},
	TypeIQ4_NL:  {"iq4_nl", 32, 18},
	TypeIQ3_S:   {"iq3_s", 256, 110},
	TypeIQ2_S:   {"iq2_s", 256, 82},
	TypeIQ4_XS:  {"iq4_xs", 256, 136},
	TypeI8:      {"i8", 1, 1},
	TypeI16:     {"i16", 1, 2},
	TypeI32:     {"i32", 1, 4},
	TypeI64:     {"i64", 1, 8},
	TypeF64:     {"f64", 1, 8},
	TypeIQ1_M:   {"iq1_m", 256, 56},
	TypeBF16:    {"bf16", 1, 2},
	TypeTQ1_0:   {"tq1_0", 256, 54},
	TypeTQ2_0:   {"tq2_0", 256, 66},
	TypeMXFP4:   {"mxfp4", 32, 17},
}

// Known reports whether owl knows the layout of t.
func (t GGMLType) Known() bool {
	_, ok := typeLayouts[t]
	return ok
}

// String is the type's ggml name ("f16", "q8_0", ...).
func (t GGMLType) String() string {
	if l, ok := typeLayouts[t]; ok {
		return l.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// BlockSize is the number of elements one block of t holds.
func (t GGMLType) BlockSize() uint64 { return typeLayouts[t].blockSize }

// TypeSize is the number of bytes one block of t takes.
func (t GGMLType) TypeSize() uint64 { return typeLayouts[t].typeSize }

// KnownTypes lists every type whose layout owl knows.
func KnownTypes() []GGMLType {
	out := make([]GGMLType, 0, len(typeLayouts))
	for t := range typeLayouts {
		out = append(out, t)
	}
	return out
}

// RowBytes is the size of a row of n elements of t, or an error when n is
// not a whole number of blocks.
func (t GGMLType) RowBytes(n uint64) (uint64, error) {
	l, ok := typeLayouts[t]
	if !ok {
		return 0, fmt.Errorf("unknown ggml type %d", uint32(t))
	}
	if n%l.blockSize != 0 {
		return 0, fmt.Errorf("row of %d elements is not a multiple of the %s block size %d", n, l.name, l.blockSize)
	}
	return n / l.blockSize * l.typeSize, nil
}

// TensorBytes is the size of a tensor of t with dimensions dims (innermost
// first), checked against overflow.
func TensorBytes(t GGMLType, dims []uint64) (uint64, error) {
	if len(dims) == 0 {
		return t.RowBytes(1)
	}
	row, err := t.RowBytes(dims[0])
	if err != nil {
		return 0, err
	}
	total := row
	for _, d := range dims[1:] {
		if d != 0 && total > (1<<62)/d {
			return 0, fmt.Errorf("tensor of dimensions %v is too large", dims)
		}
		total *= d
	}
	return total, nil
}
