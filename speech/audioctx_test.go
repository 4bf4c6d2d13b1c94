package speech

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

// A reduced audio context encodes a shorter window with the first
// positional embeddings and attends over those positions only: the float64
// oracle, given the same shorter window, agrees (with values cached plain
// for the fused kernel, and transposed without it).
func TestOracleReducedAudioCtx(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.bin")
	if err := testmodel.WriteWhisperFile(path, testmodel.WhisperMicro(testmodel.VocabEnglish, 0)); err != nil {
		t.Fatal(err)
	}
	ref := loadRef(t, path)
	for _, fa := range []bool{false, true} {
		m, err := Load(context.Background(), path, LoadOptions{Threads: 2, CacheDir: dir, FlashAttn: fa})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		const actx = 384
		frames := 2 * actx
		mel := LogMel(testAudio(), m.file.MelFilters, m.hp.NMels, 2)
		window := make([]float32, m.hp.NMels*frames)
		mel.Window(window, 0)
		win64 := make([][]float64, m.hp.NMels)
		for r := range win64 {
			win64[r] = make([]float64, frames)
			for c := range frames {
				win64[r][c] = float64(window[r*frames+c])
			}
		}
		st, err := m.newState(1)
		if err != nil {
			t.Fatal(err)
		}
		defer st.close()
		var enc []float32
		if err := m.encode(window, st, &enc); err != nil {
			t.Fatal(err)
		}
		if st.audioCtx != actx || len(enc) != actx*m.hp.NAudioState {
			t.Fatalf("audio context %d, encoder output %d values", st.audioCtx, len(enc))
		}
		refEnc := ref.encode(win64)
		prompt, _, err := m.sotSequence(Options{})
		if err != nil {
			t.Fatal(err)
		}
		prompt = append(prompt, 1000, 2000)
		logits, err := m.decode(st, prompt)
		if err != nil {
			t.Fatal(err)
		}
		encErr, decErr := relErr(enc, flatten(refEnc)), relErr(logits, ref.decode(refEnc, prompt))
		t.Logf("flash attention %v: relative error: encoder %.2g, decoder %.2g", fa, encErr, decErr)
		// The fused kernel takes keys and values in f16 (2^-11 relative
		// rounding, as in TestF16MatchesF32); the plain path stays in f32.
		tol := 1e-5
		if fa {
			tol = 4e-3
		}
		if encErr > tol || decErr > tol {
			t.Fatalf("flash attention %v: reduced context differs from the oracle: encoder %.2g, decoder %.2g", fa, encErr, decErr)
		}
	}
}
