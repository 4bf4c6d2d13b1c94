package models

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"sort"
	"strings"
)

// ErrNotGGUF is returned for a file that does not start with the GGUF magic.
var ErrNotGGUF = errors.New("not a GGUF file")

// ErrCorrupt is wrapped by every error about a file whose structure is wrong
// or truncated.
var ErrCorrupt = errors.New("corrupt model file")

const (
	ggufMagic            = 0x46554747 // "GGUF" little-endian
	ggufDefaultAlignment = 32

	// Limits that keep a hostile header from asking for absurd allocations;
	// real models stay far below them.
	maxGGUFString  = 64 << 20
	maxGGUFKVs     = 1 << 20
	maxGGUFTensors = 1 << 20
	maxTensorDims  = 4
)

// GGUFValueType is the type tag of a GGUF metadata value.
type GGUFValueType uint32

// GGUF metadata value types.
const (
	GGUFUint8   GGUFValueType = 0
	GGUFInt8    GGUFValueType = 1
	GGUFUint16  GGUFValueType = 2
	GGUFInt16   GGUFValueType = 3
	GGUFUint32  GGUFValueType = 4
	GGUFInt32   GGUFValueType = 5
	GGUFFloat32 GGUFValueType = 6
	GGUFBool    GGUFValueType = 7
	GGUFString  GGUFValueType = 8
	GGUFArray   GGUFValueType = 9
	GGUFUint64  GGUFValueType = 10
	GGUFInt64   GGUFValueType = 11
	GGUFFloat64 GGUFValueType = 12
)

// size of one value of a fixed-size type, 0 for strings and arrays.
func (t GGUFValueType) size() int {
	switch t {
	case GGUFUint8, GGUFInt8, GGUFBool:
		return 1
	case GGUFUint16, GGUFInt16:
		return 2
	case GGUFUint32, GGUFInt32, GGUFFloat32:
		return 4
	case GGUFUint64, GGUFInt64, GGUFFloat64:
		return 8
	}
	return 0
}

func (t GGUFValueType) valid() bool { return t <= GGUFFloat64 }

// GGUFKV is one metadata pair. Value holds uint8, int8, uint16, int16, uint32,
// int32, float32, bool, string, uint64, int64 or float64; an array holds a
// slice of one of those ([]string, []int32, ...) and ArrayType says which.
type GGUFKV struct {
	Key       string
	Type      GGUFValueType
	ArrayType GGUFValueType
	Value     any
}

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name   string
	Type   GGMLType
	Dims   []uint64 // innermost first
	Offset uint64   // from the start of the data section
	Bytes  uint64
}

// Elements is the number of elements of the tensor.
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// GGUF is the parsed header of a GGUF file: metadata and tensor directory.
// Tensor data is not read.
type GGUF struct {
	Version    uint32
	KV         []GGUFKV
	Tensors    []TensorInfo
	Alignment  uint64
	DataOffset int64 // where the data section starts in the file
	FileSize   int64

	index map[string]int
}

// ReadGGUF parses the GGUF file at path and checks that every tensor lies
// within the file. Errors name the file.
func ReadGGUF(path string) (*GGUF, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s: is a directory", path)
	}
	g, err := ParseGGUF(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return g, nil
}

// ParseGGUF parses a GGUF file of the given size from r.
func ParseGGUF(r io.ReaderAt, size int64) (*GGUF, error) {
	return newByteParser(r, size).parseGGUF()
}

// byteParser reads little-endian values from a file of known size, keeping
// count of the offset so that every length can be checked against what
// remains before anything is allocated.
type byteParser struct {
	ra   io.ReaderAt
	r    *bufio.Reader
	off  int64
	size int64
}

func newByteParser(r io.ReaderAt, size int64) *byteParser {
	return &byteParser{ra: r, r: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<16), size: size}
}

func (p *byteParser) remaining() int64 { return p.size - p.off }

// skip moves n bytes ahead without reading them; n must not exceed remaining.
func (p *byteParser) skip(n int64) {
	p.off += n
	p.r.Reset(io.NewSectionReader(p.ra, p.off, p.size-p.off))
}

func (p *byteParser) read(buf []byte, what string) error {
	n, err := io.ReadFull(p.r, buf)
	p.off += int64(n)
	if err != nil {
		return fmt.Errorf("%w: truncated at byte %d reading %s", ErrCorrupt, p.off, what)
	}
	return nil
}

func (p *byteParser) u32(what string) (uint32, error) {
	var b [4]byte
	if err := p.read(b[:], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

func (p *byteParser) u64(what string) (uint64, error) {
	var b [8]byte
	if err := p.read(b[:], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func (p *byteParser) str(what string) (string, error) {
	n, err := p.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > maxGGUFString || int64(n) > p.remaining() {
		return "", fmt.Errorf("%w: %s of %d bytes at byte %d runs past the end of the file (truncated or corrupt)", ErrCorrupt, what, n, p.off)
	}
	buf := make([]byte, n)
	if err := p.read(buf, what); err != nil {
		return "", err
	}
	return string(buf), nil
}

func (p *byteParser) parseGGUF() (*GGUF, error) {
	magic, err := p.u32("magic")
	if err != nil {
		return nil, ErrNotGGUF
	}
	if magic != ggufMagic {
		return nil, ErrNotGGUF
	}
	g := &GGUF{FileSize: p.size, Alignment: ggufDefaultAlignment, index: map[string]int{}}
	if g.Version, err = p.u32("version"); err != nil {
		return nil, err
	}
	if g.Version < 2 || g.Version > 3 {
		return nil, fmt.Errorf("%w: GGUF version %d is not supported (want 2 or 3)", ErrCorrupt, g.Version)
	}
	nTensors, err := p.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := p.u64("metadata count")
	if err != nil {
		return nil, err
	}
	if nTensors > maxGGUFTensors || nKV > maxGGUFKVs {
		return nil, fmt.Errorf("%w: header claims %d tensors and %d metadata pairs", ErrCorrupt, nTensors, nKV)
	}
	for i := uint64(0); i < nKV; i++ {
		kv, err := p.kv()
		if err != nil {
			return nil, err
		}
		// llama.cpp's GGUF reader asserts (aborting the process) on an empty
		// key and on a general.alignment that is not a uint32; refuse both.
		if kv.Key == "" {
			return nil, fmt.Errorf("%w: metadata pair %d has an empty key", ErrCorrupt, i)
		}
		if kv.Key == "general.alignment" && kv.Type != GGUFUint32 {
			return nil, fmt.Errorf("%w: general.alignment must be a uint32", ErrCorrupt)
		}
		if _, dup := g.index[kv.Key]; dup {
			return nil, fmt.Errorf("%w: metadata key %q appears twice", ErrCorrupt, kv.Key)
		}
		g.index[kv.Key] = len(g.KV)
		g.KV = append(g.KV, kv)
	}
	if a, ok := g.Uint("general.alignment"); ok {
		if a == 0 || a&(a-1) != 0 || a > 1<<20 {
			return nil, fmt.Errorf("%w: alignment %d is not a power of two", ErrCorrupt, a)
		}
		g.Alignment = a
	}
	names := make(map[string]bool, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		t, err := p.tensor()
		if err != nil {
			return nil, err
		}
		if names[t.Name] {
			return nil, fmt.Errorf("%w: tensor %q appears twice", ErrCorrupt, t.Name)
		}
		names[t.Name] = true
		g.Tensors = append(g.Tensors, t)
	}
	g.DataOffset = int64(alignUp(uint64(p.off), g.Alignment))
	for _, t := range g.Tensors {
		if t.Offset%g.Alignment != 0 {
			return nil, fmt.Errorf("%w: tensor %q at offset %d is not aligned to %d", ErrCorrupt, t.Name, t.Offset, g.Alignment)
		}
		end := uint64(g.DataOffset) + t.Offset + t.Bytes
		if end < t.Offset || end > uint64(p.size) {
			return nil, fmt.Errorf("%w: tensor %q (%d bytes at offset %d) extends past the end of the file (%d bytes); the file is truncated", ErrCorrupt, t.Name, t.Bytes, t.Offset, p.size)
		}
	}
	return g, nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

func (p *byteParser) kv() (GGUFKV, error) {
	key, err := p.str("metadata key")
	if err != nil {
		return GGUFKV{}, err
	}
	typ, err := p.u32("type of " + key)
	if err != nil {
		return GGUFKV{}, err
	}
	kv := GGUFKV{Key: key, Type: GGUFValueType(typ)}
	if !kv.Type.valid() {
		return kv, fmt.Errorf("%w: metadata %q has unknown type %d", ErrCorrupt, key, typ)
	}
	if kv.Type != GGUFArray {
		kv.Value, err = p.scalar(kv.Type, key)
		return kv, err
	}
	at, err := p.u32("array type of " + key)
	if err != nil {
		return kv, err
	}
	kv.ArrayType = GGUFValueType(at)
	if !kv.ArrayType.valid() || kv.ArrayType == GGUFArray {
		return kv, fmt.Errorf("%w: metadata %q is an array of unsupported type %d", ErrCorrupt, key, at)
	}
	n, err := p.u64("array length of " + key)
	if err != nil {
		return kv, err
	}
	minSize := int64(kv.ArrayType.size())
	if kv.ArrayType == GGUFString {
		minSize = 8
	}
	if n > uint64(p.remaining()/minSize) {
		return kv, fmt.Errorf("%w: metadata %q claims %d elements, more than the file holds", ErrCorrupt, key, n)
	}
	kv.Value, err = p.array(kv.ArrayType, int(n), key)
	return kv, err
}

func (p *byteParser) scalar(t GGUFValueType, key string) (any, error) {
	if t == GGUFString {
		return p.str("value of " + key)
	}
	var b [8]byte
	buf := b[:t.size()]
	if err := p.read(buf, "value of "+key); err != nil {
		return nil, err
	}
	return decodeScalar(t, buf), nil
}

func decodeScalar(t GGUFValueType, b []byte) any {
	le := binary.LittleEndian
	switch t {
	case GGUFUint8:
		return b[0]
	case GGUFInt8:
		return int8(b[0])
	case GGUFBool:
		return b[0] != 0
	case GGUFUint16:
		return le.Uint16(b)
	case GGUFInt16:
		return int16(le.Uint16(b))
	case GGUFUint32:
		return le.Uint32(b)
	case GGUFInt32:
		return int32(le.Uint32(b))
	case GGUFFloat32:
		return math.Float32frombits(le.Uint32(b))
	case GGUFUint64:
		return le.Uint64(b)
	case GGUFInt64:
		return int64(le.Uint64(b))
	case GGUFFloat64:
		return math.Float64frombits(le.Uint64(b))
	}
	return nil
}

func (p *byteParser) array(t GGUFValueType, n int, key string) (any, error) {
	if t == GGUFString {
		out := make([]string, n)
		for i := range out {
			s, err := p.str(fmt.Sprintf("element %d of %s", i, key))
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	}
	sz := t.size()
	raw := make([]byte, n*sz)
	if err := p.read(raw, "elements of "+key); err != nil {
		return nil, err
	}
	switch t {
	case GGUFUint8:
		return raw, nil
	case GGUFInt8:
		return convert(raw, sz, func(b []byte) int8 { return int8(b[0]) }), nil
	case GGUFBool:
		return convert(raw, sz, func(b []byte) bool { return b[0] != 0 }), nil
	case GGUFUint16:
		return convert(raw, sz, binary.LittleEndian.Uint16), nil
	case GGUFInt16:
		return convert(raw, sz, func(b []byte) int16 { return int16(binary.LittleEndian.Uint16(b)) }), nil
	case GGUFUint32:
		return convert(raw, sz, binary.LittleEndian.Uint32), nil
	case GGUFInt32:
		return convert(raw, sz, func(b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) }), nil
	case GGUFFloat32:
		return convert(raw, sz, func(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) }), nil
	case GGUFUint64:
		return convert(raw, sz, binary.LittleEndian.Uint64), nil
	case GGUFInt64:
		return convert(raw, sz, func(b []byte) int64 { return int64(binary.LittleEndian.Uint64(b)) }), nil
	case GGUFFloat64:
		return convert(raw, sz, func(b []byte) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(b)) }), nil
	}
	return nil, fmt.Errorf("%w: array type %d", ErrCorrupt, t)
}

func convert[T any](raw []byte, size int, f func([]byte) T) []T {
	out := make([]T, len(raw)/size)
	for i := range out {
		out[i] = f(raw[i*size:])
	}
	return out
}

func (p *byteParser) tensor() (TensorInfo, error) {
	name, err := p.str("tensor name")
	if err != nil {
		return TensorInfo{}, err
	}
	nd, err := p.u32("dimension count of " + name)
	if err != nil {
		return TensorInfo{}, err
	}
	if nd == 0 || nd > maxTensorDims {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q has %d dimensions (want 1 to %d)", ErrCorrupt, name, nd, maxTensorDims)
	}
	t := TensorInfo{Name: name, Dims: make([]uint64, nd)}
	for i := range t.Dims {
		if t.Dims[i], err = p.u64("dimensions of " + name); err != nil {
			return t, err
		}
		if t.Dims[i] == 0 || t.Dims[i] > 1<<40 {
			return t, fmt.Errorf("%w: tensor %q has dimension %d = %d", ErrCorrupt, name, i, t.Dims[i])
		}
	}
	typ, err := p.u32("type of " + name)
	if err != nil {
		return t, err
	}
	t.Type = GGMLType(typ)
	if !t.Type.Known() {
		return t, fmt.Errorf("%w: tensor %q has unknown ggml type %d", ErrCorrupt, name, typ)
	}
	if t.Offset, err = p.u64("offset of " + name); err != nil {
		return t, err
	}
	if t.Bytes, err = TensorBytes(t.Type, t.Dims); err != nil {
		return t, fmt.Errorf("%w: tensor %q: %v", ErrCorrupt, name, err)
	}
	return t, nil
}

// Get returns the metadata pair with key.
func (g *GGUF) Get(key string) (GGUFKV, bool) {
	i, ok := g.index[key]
	if !ok {
		return GGUFKV{}, false
	}
	return g.KV[i], true
}

// String returns a string metadata value.
func (g *GGUF) String(key string) (string, bool) {
	kv, ok := g.Get(key)
	if !ok {
		return "", false
	}
	s, ok := kv.Value.(string)
	return s, ok
}

// Uint returns an unsigned or non-negative integer metadata value.
func (g *GGUF) Uint(key string) (uint64, bool) {
	kv, ok := g.Get(key)
	if !ok {
		return 0, false
	}
	switch v := kv.Value.(type) {
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	case int8:
		return uint64(v), v >= 0
	case int16:
		return uint64(v), v >= 0
	case int32:
		return uint64(v), v >= 0
	case int64:
		return uint64(v), v >= 0
	}
	return 0, false
}

// Float returns a floating-point metadata value.
func (g *GGUF) Float(key string) (float64, bool) {
	kv, ok := g.Get(key)
	if !ok {
		return 0, false
	}
	switch v := kv.Value.(type) {
	case float32:
		return float64(v), true
	case float64:
		return v, true
	}
	return 0, false
}

// ArrayLen returns the length of an array metadata value.
func (g *GGUF) ArrayLen(key string) (int, bool) {
	kv, ok := g.Get(key)
	if !ok || kv.Type != GGUFArray {
		return 0, false
	}
	v := reflect.ValueOf(kv.Value)
	if v.Kind() != reflect.Slice {
		return 0, false
	}
	return v.Len(), true
}

// Architecture is general.architecture ("llama", "clip", ...), or "".
func (g *GGUF) Architecture() string {
	s, _ := g.String("general.architecture")
	return s
}

// TypeBytes is the total tensor bytes of one ggml type.
type TypeBytes struct {
	Type    GGMLType
	Tensors int
	Bytes   uint64
}

// GGUFSummary is what `owl models info` shows of a GGUF file.
type GGUFSummary struct {
	Architecture  string
	Name          string
	FileType      string // the type most weight bytes are stored as
	ContextLength uint64
	Params        uint64
	TensorCount   int
	TensorBytes   uint64
	ByType        []TypeBytes       // largest first
	Hyper         map[string]string // architecture-prefixed scalar keys, prefix removed
	Tokenizer     string
	VocabSize     int
	ChatTemplate  string // the Jinja text of tokenizer.chat_template, "" for none
	Embedding     bool   // an embedding model (see GGUF.EmbeddingOnly)
}

// embeddingArchitectures are the GGUF architectures of encoders: models
// that pool embeddings and do not generate text.
var embeddingArchitectures = map[string]bool{"bert": true, "nomic-bert": true, "nomic-bert-moe": true, "jina-bert-v2": true,
	"jina-bert-v3": true, "modern-bert": true, "neo-bert": true, "gemma-embedding": true, "t5encoder": true}

// EmbeddingOnly reports whether g is an embedding model: of an encoder
// architecture, or of a generative one converted to pool embeddings (its
// pooling_type set, as Qwen3-Embedding's "last").
func (g *GGUF) EmbeddingOnly() bool {
	arch := g.Architecture()
	if embeddingArchitectures[arch] {
		return true
	}
	p, ok := g.Uint(arch + ".pooling_type")
	return ok && p != 0
}

// Summary collects the facts of g that describe the model.
func (g *GGUF) Summary() GGUFSummary {
	s := GGUFSummary{Architecture: g.Architecture(), TensorCount: len(g.Tensors), Hyper: map[string]string{}}
	s.Name, _ = g.String("general.name")
	s.ContextLength, _ = g.Uint(s.Architecture + ".context_length")
	s.Tokenizer, _ = g.String("tokenizer.ggml.model")
	s.VocabSize, _ = g.ArrayLen("tokenizer.ggml.tokens")
	s.ChatTemplate, _ = g.String("tokenizer.chat_template")
	s.Embedding = g.EmbeddingOnly()
	byType := map[GGMLType]*TypeBytes{}
	for _, t := range g.Tensors {
		tb := byType[t.Type]
		if tb == nil {
			tb = &TypeBytes{Type: t.Type}
			byType[t.Type] = tb
		}
		tb.Tensors++
		tb.Bytes += t.Bytes
		s.TensorBytes += t.Bytes
		s.Params += t.Elements()
	}
	for _, tb := range byType {
		s.ByType = append(s.ByType, *tb)
	}
	sort.Slice(s.ByType, func(i, j int) bool { return s.ByType[i].Bytes > s.ByType[j].Bytes })
	if len(s.ByType) > 0 {
		s.FileType = s.ByType[0].Type.String()
	}
	prefix := s.Architecture + "."
	for _, kv := range g.KV {
		if s.Architecture == "" || !strings.HasPrefix(kv.Key, prefix) || kv.Type == GGUFArray {
			continue
		}
		s.Hyper[strings.TrimPrefix(kv.Key, prefix)] = fmt.Sprint(kv.Value)
	}
	return s
}
