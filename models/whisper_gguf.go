package models

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	key, err := whisperCacheKey(in, f)
	if err != nil {
		return "", fmt.Errorf("%s: %w", src, err)
	}
	base := strings.TrimSuffix(filepath.Base(src), filepath.Ext(src))
	dst := filepath.Join(cacheDir, fmt.Sprintf("%s-%s.gguf", base, key[:16]))
	if g, err := ReadGGUF(dst); err == nil {
		if k, _ := g.String(keySource); k == key && len(g.Tensors) == len(f.Tensors) {
			return dst, nil
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("whisper model cache: %w", err)
	}
	tmp, err := os.CreateTemp(cacheDir, ".convert-*.gguf")
	if err != nil {
		return "", fmt.Errorf("whisper model cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := writeWhisperGGUF(tmp, in, f, key); err != nil {
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

// whisperCacheKey hashes the source's size, modification time and header
// (everything before the first tensor).
func whisperCacheKey(src io.ReaderAt, f *WhisperFile) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00%d\x00", f.Size, f.ModTime.UnixNano())
	end := f.Size
	if len(f.Tensors) > 0 {
		end = f.Tensors[0].Offset
	}
	if _, err := io.Copy(h, io.NewSectionReader(src, 0, end)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeWhisperGGUF(w io.Writer, src io.ReaderAt, f *WhisperFile, key string) error {
	h := f.HParams
	kvs := []GGUFKV{
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
	specs := make([]TensorSpec, len(f.Tensors))
	for i, t := range f.Tensors {
		specs[i] = TensorSpec{Name: t.Name, Type: t.Type, Dims: t.Dims, Write: func(w io.Writer) error {
			_, err := io.Copy(w, io.NewSectionReader(src, t.Offset, int64(t.Bytes)))
			return err
		}}
	}
	return WriteGGUF(w, kvs, specs)
}
