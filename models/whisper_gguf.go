package models

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// keySource is the metadata key of a GGUF converted from a whisper.cpp file
// that records which source it came from.
const keySource = "owl.source.key"

// WhisperGGUF returns the path of a GGUF file holding the tensors of the
// whisper.cpp model f, read from src. The GGUF is written once into
// cacheDir and reused while the source keeps its size, modification time and
// header (hyper-parameters, mel filters, vocabulary), which together form
// the cache key. Tensor data is copied byte for byte: types and quantization
// stay the source's.
func WhisperGGUF(src string, f *WhisperFile, cacheDir string) (string, error) {
	return legacyGGUF(src, f.Size, f.ModTime, f.Tensors, cacheDir, func(key string) []GGUFKV { return whisperKVs(f, key) })
}

// legacyGGUF converts the tensors of a legacy ggml file (whose header ends
// where its first tensor begins) into a GGUF in cacheDir, once per source
// key, with the metadata kvs(key) gives.
func legacyGGUF(src string, size int64, mtime time.Time, tensors []FileTensor, cacheDir string, kvs func(key string) []GGUFKV) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	key, err := cacheKey(in, size, mtime, tensors)
	if err != nil {
		return "", fmt.Errorf("%s: %w", src, err)
	}
	base := strings.TrimSuffix(filepath.Base(src), filepath.Ext(src))
	dst := filepath.Join(cacheDir, fmt.Sprintf("%s-%s.gguf", base, key[:16]))
	return cachedGGUF(src, dst, key, len(tensors), func(w io.Writer) error { return writeLegacyGGUF(w, in, tensors, kvs(key)) })
}

// DefaultCacheDir is where converted models are kept: $OWL_CACHE_DIR, or
// owl's folder in the user's cache.
func DefaultCacheDir() string {
	if d := os.Getenv("OWL_CACHE_DIR"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "owl")
	}
	return filepath.Join(os.TempDir(), "owl-cache")
}

// cachedGGUF is the conversion of src at dst: dst as it is when it holds
// the conversion of key (and, unless tensors is 0, that many tensors),
// else written anew by write — into a temporary file in its folder,
// renamed into place once whole, so that a conversion cut short is never
// taken for one.
func cachedGGUF(src, dst, key string, tensors int, write func(io.Writer) error) (string, error) {
	if g, err := ReadGGUF(dst); err == nil {
		if k, _ := g.String(keySource); k == key && (tensors == 0 || len(g.Tensors) == tensors) {
			return dst, nil
		}
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("model cache: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".convert-*.gguf")
	if err != nil {
		return "", fmt.Errorf("model cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return "", fmt.Errorf("%s: converting to GGUF: %w", src, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	return dst, nil
}

// cacheKey hashes the source's size, modification time and header
// (everything before the first tensor).
func cacheKey(src io.ReaderAt, size int64, mtime time.Time, tensors []FileTensor) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00%d\x00", size, mtime.UnixNano())
	end := size
	if len(tensors) > 0 {
		end = tensors[0].Offset
	}
	if _, err := io.Copy(h, io.NewSectionReader(src, 0, end)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func whisperKVs(f *WhisperFile, key string) []GGUFKV {
	h := f.HParams
	return []GGUFKV{
		{Key: "general.architecture", Value: "whisper"},
		{Key: "general.name", Value: "whisper-" + h.SizeName()},
		{Key: "general.file_type", Value: uint32(h.FType)},
		// The ggml backend files a tensor under the layer given by the first
		// number in its name, which for "encoder.conv2.weight" is 2.
		{Key: "whisper.block_count", Value: uint32(max(h.NAudioLayer, h.NTextLayer, 3))},
		{Key: "whisper.vocab_size", Value: uint32(h.NVocab)},
		{Key: "whisper.audio.context_length", Value: uint32(h.NAudioCtx)},
		{Key: "whisper.audio.embedding_length", Value: uint32(h.NAudioState)},
		{Key: "whisper.audio.head_count", Value: uint32(h.NAudioHead)},
		{Key: "whisper.audio.block_count", Value: uint32(h.NAudioLayer)},
		{Key: "whisper.text.context_length", Value: uint32(h.NTextCtx)},
		{Key: "whisper.text.embedding_length", Value: uint32(h.NTextState)},
		{Key: "whisper.text.head_count", Value: uint32(h.NTextHead)},
		{Key: "whisper.text.block_count", Value: uint32(h.NTextLayer)},
		{Key: "whisper.mel_count", Value: uint32(h.NMels)},
		{Key: keySource, Value: key},
	}
}

func writeLegacyGGUF(w io.Writer, src io.ReaderAt, tensors []FileTensor, kvs []GGUFKV) error {
	specs := make([]TensorSpec, len(tensors))
	for i, t := range tensors {
		specs[i] = TensorSpec{Name: t.Name, Type: t.Type, Dims: t.Dims, Write: func(w io.Writer) error {
			_, err := io.Copy(w, io.NewSectionReader(src, t.Offset, int64(t.Bytes)))
			return err
		}}
	}
	return WriteGGUF(w, kvs, specs)
}
