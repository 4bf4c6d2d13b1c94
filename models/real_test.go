package models_test

import (
	"bytes"
	"math"
	"slices"
	"testing"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

// The generated Silero file has the real one's layout: the same header and
// the same tensors in the same order, shapes and types (a scalar output
// bias, an f16 output weight of 128, the STFT basis last).
func TestGeneratedSileroLayoutIsReal(t *testing.T) {
	real, err := models.ReadSilero(testmodel.RealFile(t, "whispercpp/for-tests-silero-v6.2.0-ggml.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := testmodel.WriteSilero(&buf, testmodel.SileroV6()); err != nil {
		t.Fatal(err)
	}
	gen, err := models.ParseSilero(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if gen.Type != real.Type || gen.Version != real.Version || gen.Window != real.Window || gen.Context != real.Context ||
		!slices.Equal(gen.Encoder, real.Encoder) || gen.LSTMInput != real.LSTMInput || gen.LSTMHidden != real.LSTMHidden ||
		gen.FinalIn != real.FinalIn || gen.FinalOut != real.FinalOut {
		t.Fatalf("header %+v, the real one %+v", gen, real)
	}
	if len(gen.Tensors) != len(real.Tensors) {
		t.Fatalf("%d tensors, the real file %d", len(gen.Tensors), len(real.Tensors))
	}
	for i, r := range real.Tensors {
		g := gen.Tensors[i]
		if g.Name != r.Name || !slices.Equal(g.Dims, r.Dims) || g.Type != r.Type || g.Bytes != r.Bytes {
			t.Errorf("tensor %d: %s %v %s, the real file's %s %v %s", i, g.Name, g.Dims, g.Type, r.Name, r.Dims, r.Type)
		}
	}
}

// A generated whisper file has the real header, mel filters and stored
// vocabulary layout of its size: the same hyper-parameters, the mel
// filters within float32 rounding, 50,257 stored tokens with the same 256
// byte tokens (U+FFFD for bytes that are no character alone) and the same
// last one.
func TestGeneratedWhisperLayoutIsReal(t *testing.T) {
	for _, tc := range []struct {
		file  string
		vocab int
	}{{"tiny", testmodel.VocabMultilingual}, {"tiny.en", testmodel.VocabEnglish}} {
		t.Run(tc.file, func(t *testing.T) {
			real, err := models.ReadWhisper(testmodel.RealFile(t, "whispercpp/for-tests-ggml-"+tc.file+".bin"))
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := testmodel.WriteWhisper(&buf, testmodel.WhisperTiny(tc.vocab, 1)); err != nil {
				t.Fatal(err)
			}
			gen, err := models.ParseWhisper(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
			if err != nil {
				t.Fatal(err)
			}
			if gen.HParams != real.HParams {
				t.Fatalf("hyper-parameters %+v, the real file's %+v", gen.HParams, real.HParams)
			}
			worst := 0.0
			for i, v := range real.MelFilters {
				worst = math.Max(worst, math.Abs(float64(gen.MelFilters[i]-v)))
			}
			t.Logf("mel filters: largest difference %.2g", worst)
			if len(gen.MelFilters) != len(real.MelFilters) || worst > 1e-6 {
				t.Errorf("mel filters differ from the real ones by %.2g", worst)
			}
			if len(gen.Vocab) != len(real.Vocab) {
				t.Fatalf("%d stored tokens, the real file %d", len(gen.Vocab), len(real.Vocab))
			}
			for i := range 256 {
				if !bytes.Equal(gen.Vocab[i], real.Vocab[i]) {
					t.Errorf("byte token %d is %q, the real one %q", i, gen.Vocab[i], real.Vocab[i])
				}
			}
			if n := len(real.Vocab) - 1; !bytes.Equal(gen.Vocab[n], real.Vocab[n]) {
				t.Errorf("last stored token %q, the real one %q", gen.Vocab[n], real.Vocab[n])
			}
		})
	}
}
