package models

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrNotONNX is returned for data that is not an ONNX model.
var ErrNotONNX = errors.New("not an ONNX model file")

// ONNXModel is an ONNX model file (the ModelProto of onnx.proto) as far as
// owl reads it: the graph's nodes, its initializers (their data left in
// place in the file's bytes), inputs and outputs, the opsets and metadata.
type ONNXModel struct {
	IRVersion       int64
	Producer        string // "pytorch"
	ProducerVersion string
	Opsets          map[string]int64 // domain ("" is ONNX's own) → version
	Metadata        map[string]string
	Graph           ONNXGraph
}

// ONNXGraph is a computation graph.
type ONNXGraph struct {
	Name         string
	Nodes        []ONNXNode // in the file's (topological) order
	Initializers []ONNXTensor
	Inputs       []ONNXValueInfo
	Outputs      []ONNXValueInfo
}

// ONNXNode is one operation.
type ONNXNode struct {
	Name, OpType, Domain string
	Inputs, Outputs      []string // value names; "" marks an omitted optional input
	Attrs                map[string]ONNXAttr
}

// ONNXAttr is a node attribute; Type says which field is set.
type ONNXAttr struct {
	Type    int32 // onnx AttributeProto.AttributeType: 1 float, 2 int, 3 string, 4 tensor, 5 graph, 6 floats, 7 ints, 8 strings
	F       float32
	I       int64
	S       []byte
	T       *ONNXTensor
	G       *ONNXGraph
	Floats  []float32
	Ints    []int64
	Strings [][]byte
}

// ONNX attribute types.
const (
	ONNXAttrFloat   = 1
	ONNXAttrInt     = 2
	ONNXAttrString  = 3
	ONNXAttrTensor  = 4
	ONNXAttrGraph   = 5
	ONNXAttrFloats  = 6
	ONNXAttrInts    = 7
	ONNXAttrStrings = 8
)

// ONNXTensor is a constant tensor: an initializer or a Constant node's
// value. Data holds its elements little-endian, as raw_data stores them
// (typed fields are converted).
type ONNXTensor struct {
	Name     string
	DataType int32 // onnx TensorProto.DataType: 1 float, 6 int32, 7 int64, 10 float16, 11 double, 9 bool, 2 uint8, 3 int8
	Dims     []int64
	Data     []byte
}

// ONNX element types.
const (
	ONNXFloat   = 1
	ONNXUint8   = 2
	ONNXInt8    = 3
	ONNXInt32   = 6
	ONNXInt64   = 7
	ONNXBool    = 9
	ONNXFloat16 = 10
	ONNXDouble  = 11
)

// onnxElemSize is the byte size of the element types owl reads.
var onnxElemSize = map[int32]int{ONNXFloat: 4, ONNXUint8: 1, ONNXInt8: 1, ONNXInt32: 4, ONNXInt64: 8, ONNXBool: 1, ONNXFloat16: 2, ONNXDouble: 8}

// Elements is the number of elements the dimensions give.
func (t *ONNXTensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// Floats returns a float32 tensor's elements (float16 and double are
// converted).
func (t *ONNXTensor) Floats() ([]float32, error) {
	n := int(t.Elements())
	out := make([]float32, n)
	switch t.DataType {
	case ONNXFloat:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
	case ONNXDouble:
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:])))
		}
	case ONNXFloat16:
		for i := range out {
			out[i] = halfToFloat(binary.LittleEndian.Uint16(t.Data[2*i:]))
		}
	default:
		return nil, fmt.Errorf("tensor %q has element type %d, not a float type", t.Name, t.DataType)
	}
	return out, nil
}

// Int64s returns an integer tensor's elements.
func (t *ONNXTensor) Int64s() ([]int64, error) {
	n := int(t.Elements())
	out := make([]int64, n)
	switch t.DataType {
	case ONNXInt64:
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
		}
	case ONNXInt32:
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(t.Data[4*i:])))
		}
	default:
		return nil, fmt.Errorf("tensor %q has element type %d, not an integer type", t.Name, t.DataType)
	}
	return out, nil
}

func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := int(h>>10) & 0x1f
	frac := uint32(h & 0x3ff)
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		return float32(math.Copysign(float64(frac)/1024*math.Pow(2, -14), float64(int32(sign)|1)))
	case exp == 31:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | uint32(exp-15+127)<<23 | frac<<13)
}

// ONNXValueInfo is a graph input or output: its name, element type and
// shape (a dimension is a number or a symbolic name).
type ONNXValueInfo struct {
	Name     string
	ElemType int32
	Shape    []ONNXDim
}

// ONNXDim is one dimension of a value's shape: Value, or Param when
// symbolic ("batch", "phonemes"); both unset when unknown.
type ONNXDim struct {
	Value int64
	Param string
}

// Bounds on what ParseONNX accepts.
const (
	onnxMaxNodes  = 1 << 20
	onnxMaxDims   = 8
	onnxMaxDepth  = 4 // graphs inside attributes
	onnxMaxValues = 1 << 16
)

// ParseONNX parses an ONNX model from b, whose tensor data the result
// refers to (b must not change while it is used). It checks what it reads:
// every field's wire type, tensors' data against their element type and
// dimensions; external data (a weights file beside the model) is refused.
func ParseONNX(b []byte) (*ONNXModel, error) {
	m := &ONNXModel{Opsets: map[string]int64{}, Metadata: map[string]string{}}
	sawGraph := false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			m.IRVersion = int64(x)
		case num == 2 && typ == protowire.BytesType:
			m.Producer = string(v)
		case num == 3 && typ == protowire.BytesType:
			m.ProducerVersion = string(v)
		case num == 7 && typ == protowire.BytesType:
			sawGraph = true
			return parseGraph(v, &m.Graph, 0)
		case num == 8 && typ == protowire.BytesType:
			var domain string
			var version int64
			if err := eachField(v, func(n protowire.Number, t protowire.Type, v []byte, x uint64) error {
				switch {
				case n == 1 && t == protowire.BytesType:
					domain = string(v)
				case n == 2 && t == protowire.VarintType:
					version = int64(x)
				}
				return nil
			}); err != nil {
				return err
			}
			m.Opsets[domain] = version
		case num == 14 && typ == protowire.BytesType:
			var key, value string
			if err := eachField(v, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
				if t == protowire.BytesType && n == 1 {
					key = string(v)
				} else if t == protowire.BytesType && n == 2 {
					value = string(v)
				}
				return nil
			}); err != nil {
				return err
			}
			m.Metadata[key] = value
		case num >= 1 && num <= 8 || num == 14:
			return fmt.Errorf("%w: model field %d has wire type %d", ErrCorrupt, num, typ)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrCorrupt) && !sawGraph {
			return nil, fmt.Errorf("%w (%v)", ErrNotONNX, err)
		}
		return nil, err
	}
	if !sawGraph || m.IRVersion <= 0 {
		return nil, ErrNotONNX
	}
	return m, nil
}

// eachField calls f for each field of the message in b: its number, wire
// type, and value (bytes for length-delimited fields, the number for
// varints and fixed-size ones).
func eachField(b []byte, f func(protowire.Number, protowire.Type, []byte, uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x32 uint32
			x32, n = protowire.ConsumeFixed32(b)
			x = uint64(x32)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: field %d: %v", ErrCorrupt, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// strings of a packed-or-not repeated string field are appended one by one.
func parseGraph(b []byte, g *ONNXGraph, depth int) error {
	if depth > onnxMaxDepth {
		return fmt.Errorf("%w: graphs nested deeper than %d", ErrCorrupt, onnxMaxDepth)
	}
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			if num == 1 || num == 2 || num == 5 || num == 11 || num == 12 {
				return fmt.Errorf("%w: graph field %d has wire type %d", ErrCorrupt, num, typ)
			}
			return nil
		}
		switch num {
		case 1:
			if len(g.Nodes) >= onnxMaxNodes {
				return fmt.Errorf("%w: more than %d nodes", ErrCorrupt, onnxMaxNodes)
			}
			var n ONNXNode
			if err := parseNode(v, &n, depth); err != nil {
				return err
			}
			g.Nodes = append(g.Nodes, n)
		case 2:
			g.Name = string(v)
		case 5:
			if len(g.Initializers) >= onnxMaxNodes {
				return fmt.Errorf("%w: more than %d initializers", ErrCorrupt, onnxMaxNodes)
			}
			t, err := parseTensor(v)
			if err != nil {
				return err
			}
			g.Initializers = append(g.Initializers, t)
		case 11, 12:
			vi, err := parseValueInfo(v)
			if err != nil {
				return err
			}
			if num == 11 {
				g.Inputs = append(g.Inputs, vi)
			} else {
				g.Outputs = append(g.Outputs, vi)
			}
			if len(g.Inputs)+len(g.Outputs) > onnxMaxValues {
				return fmt.Errorf("%w: more than %d inputs and outputs", ErrCorrupt, onnxMaxValues)
			}
		}
		return nil
	})
}

func parseNode(b []byte, n *ONNXNode, depth int) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			if num <= 5 || num == 7 {
				return fmt.Errorf("%w: node field %d has wire type %d", ErrCorrupt, num, typ)
			}
			return nil
		}
		switch num {
		case 1:
			n.Inputs = append(n.Inputs, string(v))
		case 2:
			n.Outputs = append(n.Outputs, string(v))
		case 3:
			n.Name = string(v)
		case 4:
			n.OpType = string(v)
		case 5:
			name, a, err := parseAttr(v, depth)
			if err != nil {
				return fmt.Errorf("node %q: %w", n.Name, err)
			}
			if n.Attrs == nil {
				n.Attrs = map[string]ONNXAttr{}
			}
			n.Attrs[name] = a
		case 7:
			n.Domain = string(v)
		}
		if len(n.Inputs)+len(n.Outputs) > onnxMaxValues {
			return fmt.Errorf("%w: node with more than %d inputs and outputs", ErrCorrupt, onnxMaxValues)
		}
		return nil
	})
}

func parseAttr(b []byte, depth int) (string, ONNXAttr, error) {
	var name string
	var a ONNXAttr
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			name = string(v)
		case num == 20 && typ == protowire.VarintType:
			a.Type = int32(x)
		case num == 2 && typ == protowire.Fixed32Type:
			a.F = math.Float32frombits(uint32(x))
		case num == 3 && typ == protowire.VarintType:
			a.I = int64(x)
		case num == 4 && typ == protowire.BytesType:
			a.S = v
		case num == 5 && typ == protowire.BytesType:
			t, err := parseTensor(v)
			if err != nil {
				return err
			}
			a.T = &t
		case num == 6 && typ == protowire.BytesType:
			a.G = &ONNXGraph{}
			return parseGraph(v, a.G, depth+1)
		case num == 7 && typ == protowire.BytesType: // packed floats
			if len(v)%4 != 0 {
				return fmt.Errorf("%w: packed floats of %d bytes", ErrCorrupt, len(v))
			}
			for i := 0; i < len(v); i += 4 {
				a.Floats = append(a.Floats, math.Float32frombits(binary.LittleEndian.Uint32(v[i:])))
			}
		case num == 7 && typ == protowire.Fixed32Type:
			a.Floats = append(a.Floats, math.Float32frombits(uint32(x)))
		case num == 8 && typ == protowire.BytesType: // packed ints
			ints, err := packedVarints(v)
			if err != nil {
				return err
			}
			a.Ints = append(a.Ints, ints...)
		case num == 8 && typ == protowire.VarintType:
			a.Ints = append(a.Ints, int64(x))
		case num == 9 && typ == protowire.BytesType:
			a.Strings = append(a.Strings, v)
		}
		if len(a.Floats)+len(a.Ints)+len(a.Strings) > onnxMaxNodes {
			return fmt.Errorf("%w: attribute with more than %d values", ErrCorrupt, onnxMaxNodes)
		}
		return nil
	})
	if err == nil && a.Type == 0 { // files from old exporters leave the type out
		switch {
		case a.T != nil:
			a.Type = ONNXAttrTensor
		case a.G != nil:
			a.Type = ONNXAttrGraph
		case a.Floats != nil:
			a.Type = ONNXAttrFloats
		case a.Ints != nil:
			a.Type = ONNXAttrInts
		case a.Strings != nil:
			a.Type = ONNXAttrStrings
		case a.S != nil:
			a.Type = ONNXAttrString
		}
	}
	return name, a, err
}

func packedVarints(v []byte) ([]int64, error) {
	var out []int64
	for len(v) > 0 {
		x, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return nil, fmt.Errorf("%w: packed integers: %v", ErrCorrupt, protowire.ParseError(n))
		}
		out = append(out, int64(x))
		v = v[n:]
	}
	return out, nil
}

func parseTensor(b []byte) (ONNXTensor, error) {
	var t ONNXTensor
	var typed []byte // elements from float_data / int32_data / int64_data / double_data, little-endian
	external := false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			dims, err := packedVarints(v)
			if err != nil {
				return err
			}
			t.Dims = append(t.Dims, dims...)
		case num == 1 && typ == protowire.VarintType:
			t.Dims = append(t.Dims, int64(x))
		case num == 2 && typ == protowire.VarintType:
			t.DataType = int32(x)
		case num == 8 && typ == protowire.BytesType:
			t.Name = string(v)
		case num == 9 && typ == protowire.BytesType:
			t.Data = v
		case num == 4 && typ == protowire.BytesType: // float_data, packed
			typed = append(typed, v...)
		case num == 4 && typ == protowire.Fixed32Type:
			typed = binary.LittleEndian.AppendUint32(typed, uint32(x))
		case num == 10 && typ == protowire.BytesType: // double_data, packed
			typed = append(typed, v...)
		case num == 10 && typ == protowire.Fixed64Type:
			typed = binary.LittleEndian.AppendUint64(typed, x)
		case (num == 5 || num == 7) && (typ == protowire.BytesType || typ == protowire.VarintType): // int32_data, int64_data
			vals := []int64{int64(x)}
			if typ == protowire.BytesType {
				var err error
				if vals, err = packedVarints(v); err != nil {
					return err
				}
			}
			for _, val := range vals {
				if num == 7 {
					typed = binary.LittleEndian.AppendUint64(typed, uint64(val))
				} else {
					// int32_data carries int32, and the 8- and 16-bit types, one per varint.
					typed = appendSmallInt(typed, t.DataType, val)
				}
			}
		case num == 13 || num == 14 && x == 1:
			external = true
		}
		return nil
	})
	if err != nil {
		return t, err
	}
	if external {
		return t, fmt.Errorf("%w: tensor %q keeps its data in an external file, which owl does not read", ErrCorrupt, t.Name)
	}
	if t.Data == nil {
		t.Data = typed
	}
	if len(t.Dims) > onnxMaxDims {
		return t, fmt.Errorf("%w: tensor %q has %d dimensions", ErrCorrupt, t.Name, len(t.Dims))
	}
	size, ok := onnxElemSize[t.DataType]
	if !ok {
		return t, fmt.Errorf("%w: tensor %q has element type %d, which owl does not read", ErrCorrupt, t.Name, t.DataType)
	}
	n := int64(1)
	for _, d := range t.Dims {
		if d < 0 || d > math.MaxInt32 || n*d > math.MaxInt64/8 {
			return t, fmt.Errorf("%w: tensor %q has dimensions %v", ErrCorrupt, t.Name, t.Dims)
		}
		n *= d
	}
	if int64(len(t.Data)) != n*int64(size) {
		return t, fmt.Errorf("%w: tensor %q of %v elements of %d bytes holds %d bytes", ErrCorrupt, t.Name, t.Dims, size, len(t.Data))
	}
	return t, nil
}

// appendSmallInt appends v as an element of type typ read from int32_data.
func appendSmallInt(b []byte, typ int32, v int64) []byte {
	switch onnxElemSize[typ] {
	case 1:
		return append(b, byte(v))
	case 2:
		return binary.LittleEndian.AppendUint16(b, uint16(v))
	}
	return binary.LittleEndian.AppendUint32(b, uint32(v))
}

func parseValueInfo(b []byte) (ONNXValueInfo, error) {
	var vi ONNXValueInfo
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			vi.Name = string(v)
		case num == 2 && typ == protowire.BytesType: // TypeProto
			return eachField(v, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
				if n != 1 || t != protowire.BytesType { // tensor_type
					return nil
				}
				return eachField(v, func(n protowire.Number, t protowire.Type, v []byte, x uint64) error {
					switch {
					case n == 1 && t == protowire.VarintType:
						vi.ElemType = int32(x)
					case n == 2 && t == protowire.BytesType: // TensorShapeProto
						return eachField(v, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
							if n != 1 || t != protowire.BytesType {
								return nil
							}
							if len(vi.Shape) >= onnxMaxDims {
								return fmt.Errorf("%w: value %q has more than %d dimensions", ErrCorrupt, vi.Name, onnxMaxDims)
							}
							var d ONNXDim
							err := eachField(v, func(n protowire.Number, t protowire.Type, v []byte, x uint64) error {
								switch {
								case n == 1 && t == protowire.VarintType:
									d.Value = int64(x)
								case n == 2 && t == protowire.BytesType:
									d.Param = string(v)
								}
								return nil
							})
							vi.Shape = append(vi.Shape, d)
							return err
						})
					}
					return nil
				})
			})
		}
		return nil
	})
	return vi, err
}

// Initializer returns the initializer called name, or nil.
func (g *ONNXGraph) Initializer(name string) *ONNXTensor {
	for i := range g.Initializers {
		if g.Initializers[i].Name == name {
			return &g.Initializers[i]
		}
	}
	return nil
}
