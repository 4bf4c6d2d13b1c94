package speech

import (
	"fmt"
	"testing"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

// whisper.cpp's quantize writes q4_0, q4_1, q5_0, q5_1 and q8_0 files:
// every matrix but the positional embeddings in blocks of 32, the
// convolutions f16, vectors f32, and 1000·2 added to the file type. Each
// is checked against an f32 file of exactly the values its blocks hold
// (the generator's quantizers and dequantizers follow ggml's reference
// code): what remains is ggml quantizing the activations that meet such
// weights to q8_0 (8 bits per 32 values, relative error under 1/254 per
// product), measured at 7e-3 to 8e-3 of the logits' scale (q8_0's own
// weights add little: 1e-2 from the unquantized f32); 1.5e-2 is the bound. A block read wrongly (scales, nibble order, fifth bits) misses by
// order 1, and the f32 weights before quantization miss by more than the
// bound for the 4- and 5-bit types.
func TestQuantizedFiles(t *testing.T) {
	f32 := probeLogits(t, loadModel(t, "micro-f32", testmodel.WhisperMicro(testmodel.VocabMultilingual, 0), LoadOptions{}))
	for _, tc := range []struct {
		ftype int
		typ   models.GGMLType
	}{{2, models.TypeQ4_0}, {3, models.TypeQ4_1}, {8, models.TypeQ5_0}, {9, models.TypeQ5_1}, {7, models.TypeQ8_0}} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			q := loadModel(t, "micro-"+tc.typ.String(), testmodel.WhisperMicro(testmodel.VocabMultilingual, tc.ftype), LoadOptions{})
			if got := q.hp.WeightType(); got != tc.typ {
				t.Fatalf("weights %s, want %s", got, tc.typ)
			}
			through := testmodel.WhisperMicro(testmodel.VocabMultilingual, 0)
			through.Through = tc.typ
			ref := loadModel(t, fmt.Sprintf("micro-f32-through-%s", tc.typ), through, LoadOptions{})
			ql := probeLogits(t, q)
			e, raw := relErr(ql, widen(probeLogits(t, ref))), relErr(ql, widen(f32))
			t.Logf("%s logits: %.2g of their scale from the f32 file of the same values, %.2g from the unquantized weights", tc.typ, e, raw)
			if e > 1.5e-2 {
				t.Fatalf("%s logits differ from the f32 file of the same values by %.2g", tc.typ, e)
			}
		})
	}
}
