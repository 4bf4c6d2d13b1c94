package testmodel

import (
	"bytes"
	"crypto/sha256"
	"math"
	"testing"

	"github.com/owlengine/owl/models"
)

func TestWhisperFilesParse(t *testing.T) {
	for name, c := range map[string]WhisperConfig{
		"micro.en f32":  WhisperMicro(VocabEnglish, 0),
		"micro f16":     WhisperMicro(VocabMultilingual, 1),
		"micro-v3 q8_0": WhisperMicroV3(7),
		"tiny.en f16":   WhisperTiny(VocabEnglish, 1),
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteWhisper(&buf, c); err != nil {
				t.Fatal(err)
			}
			f, err := models.ParseWhisper(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
			if err != nil {
				t.Fatal(err)
			}
			if f.HParams != c.HParams {
				t.Fatalf("hparams %+v, want %+v", f.HParams, c.HParams)
			}
			if len(f.Vocab) != 50257 { // as in whisper.cpp's files
				t.Fatalf("%d stored tokens, want 50257", len(f.Vocab))
			}
			if last := string(f.Vocab[50256]); c.HParams.Multilingual() != (last == "") {
				t.Fatalf("stored token 50256 is %q", last)
			}
			if string(f.Vocab[100]) != "\ufffd" || string(f.Vocab[33]) != "B" { // bytes 0xa7 and 'B' in GPT-2's order
				t.Fatalf("byte tokens %q and %q, want U+FFFD for a byte that is no character alone", f.Vocab[100], f.Vocab[33])
			}
			if string(f.Vocab[220]) != " " {
				t.Fatalf("token 220 is %q, want a space as in GPT-2", f.Vocab[220])
			}
			if len(f.Tensors) != len(models.WhisperTensorNames(c.HParams)) {
				t.Fatalf("%d tensors", len(f.Tensors))
			}
			conv, _ := f.Tensor("encoder.conv1.weight")
			if c.HParams.FType != 0 && conv.Type != models.TypeF16 {
				t.Fatalf("conv weights are %s, want f16", conv.Type)
			}
		})
	}
}

func TestWhisperDeterministic(t *testing.T) {
	sum := func() [32]byte {
		var buf bytes.Buffer
		if err := WriteWhisper(&buf, WhisperMicro(VocabEnglish, 1)); err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(buf.Bytes())
	}
	if sum() != sum() {
		t.Fatal("same config, different bytes")
	}
}

// The filterbank has librosa's Slaney properties: triangles over the FFT
// bins whose peaks rise with the filter index, each with unit area in Hz
// (2/(hi-lo) normalization), which the 40-Hz bin spacing samples well for
// the wide high filters.
func TestMelFilters(t *testing.T) {
	for _, n := range []int{80, 128} {
		f := MelFilters(n)
		if len(f) != n*201 {
			t.Fatalf("%d weights", len(f))
		}
		lastPeak := -1
		for m := range n {
			sum, peak := 0.0, 0
			for k := range 201 {
				w := f[m*201+k]
				if w < 0 || math.IsNaN(float64(w)) {
					t.Fatalf("n=%d filter %d bin %d = %v", n, m, k, w)
				}
				sum += float64(w)
				if w > f[m*201+peak] {
					peak = k
				}
			}
			if sum == 0 || peak < lastPeak {
				t.Fatalf("n=%d filter %d: sum %v, peak bin %d after %d", n, m, sum, peak, lastPeak)
			}
			lastPeak = peak
			if m >= n-20 && math.Abs(sum*40-1) > 0.05 {
				t.Fatalf("n=%d filter %d: area %.3f, want 1", n, m, sum*40)
			}
		}
	}
}
