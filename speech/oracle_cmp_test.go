package speech

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

// testAudio is a deterministic 3-second signal: tones that glide and a
// little noise, loud enough to exercise the whole mel range.
func testAudio() []float32 {
	out := make([]float32, 3*SampleRate)
	seed := uint64(7)
	for i := range out {
		tm := float64(i) / SampleRate
		v := 0.3*math.Sin(2*math.Pi*(220+80*tm)*tm) + 0.2*math.Sin(2*math.Pi*1330*tm)*math.Sin(math.Pi*tm)
		seed = seed*6364136223846793005 + 1442695040888963407
		v += 0.02 * (float64(seed>>40)/float64(1<<24) - 0.5)
		out[i] = float32(v)
	}
	return out
}

// relErr is max|a-b| / max|b|.
func relErr(a []float32, b []float64) float64 {
	d, s := 0.0, 0.0
	for i := range b {
		d = math.Max(d, math.Abs(float64(a[i])-b[i]))
		s = math.Max(s, math.Abs(b[i]))
	}
	return d / s
}

func flatten(x [][]float64) []float64 {
	var out []float64
	for _, r := range x {
		out = append(out, r...)
	}
	return out
}

func TestOracle(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  testmodel.WhisperConfig
		long bool // skipped with -short
	}{
		{"micro.en", testmodel.WhisperMicro(testmodel.VocabEnglish, 0), false},
		{"micro-v3", testmodel.WhisperMicroV3(0), false},
		{"micro-turbo", testmodel.WhisperMicroTurbo(0), false},
		{"tiny", testmodel.WhisperTiny(testmodel.VocabMultilingual, 0), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.long && testing.Short() {
				t.Skip("the float64 oracle of a tiny-sized model takes a while")
			}
			// f32 weights and caches: what remains is float32 rounding,
			// which stays orders of magnitude below what any of the
			// mistakes checked causes.
			checkOracle(t, tc.cfg, "", 1e-5, 100, !tc.long)
		})
	}
}

// checkOracle compares the encoder and decoder of a model made from cfg,
// on device ("" the CPU), with the float64 oracle within tol; with
// perturbs it checks that each of the oracle's mistakes moves it more than
// margin times tol away.
func checkOracle(t *testing.T, cfg testmodel.WhisperConfig, device string, tol, margin float64, perturbs bool) {
	{
		{
			dir := t.TempDir()
			path := filepath.Join(dir, "model.bin")
			if err := testmodel.WriteWhisperFile(path, cfg); err != nil {
				t.Fatal(err)
			}
			ref := loadRef(t, path)
			samples := testAudio()

			m, err := Load(context.Background(), path, LoadOptions{Threads: 2, CacheDir: dir, Device: device})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()

			mel := LogMel(samples, m.file.MelFilters, m.hp.NMels, 2)
			refMel := refLogMel(samples, m.file.MelFilters, m.hp.NMels)
			if e := relErr(mel.Data, flatten(refMel)); e > 1e-5 {
				t.Fatalf("mel differs from the direct DFT by %.2g", e)
			}

			window := make([]float32, m.hp.NMels*WindowFrames)
			mel.Window(window, 0)
			win64 := make([][]float64, m.hp.NMels)
			for r := range win64 {
				win64[r] = make([]float64, WindowFrames)
				for c := range WindowFrames {
					win64[r][c] = float64(window[r*WindowFrames+c])
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
			refEnc := ref.encode(win64)
			encErr := relErr(enc, flatten(refEnc))

			prompt, _, err := m.sotSequence(Options{})
			if err != nil {
				t.Fatal(err)
			}
			prompt = append(prompt, 1000, 2000, 3000)
			logits1, err := m.decode(st, prompt) // several tokens at once: the causal mask
			if err != nil {
				t.Fatal(err)
			}
			next := int32(42)
			logits2, err := m.decode(st, []int32{next}) // one more: the cache
			if err != nil {
				t.Fatal(err)
			}
			ref1 := ref.decode(refEnc, prompt)
			ref2 := ref.decode(refEnc, append(prompt, next))
			dec1, dec2 := relErr(logits1, ref1), relErr(logits2, ref2)
			t.Logf("relative error: encoder %.2g, decoder batch %.2g, decoder step %.2g", encErr, dec1, dec2)

			tolEnc, tolDec := tol, tol
			if encErr > tolEnc || dec1 > tolDec || dec2 > tolDec {
				t.Fatalf("ggml differs from the oracle: encoder %.2g, decoder %.2g and %.2g", encErr, dec1, dec2)
			}
			if !perturbs {
				return
			}
			// The tolerances are tight enough to catch each mistake.
			for _, p := range []perturb{lnNoBias, swapHeads, noQueryBias, posOffByOne} {
				ref.p = p
				e := ref.encode(win64)
				eErr := relErr(enc, flatten(e))
				dErr := relErr(logits2, ref.decode(e, append(prompt, next)))
				ref.p = exact
				t.Logf("%s: encoder %.2g, decoder %.2g", p, eErr, dErr)
				if max(eErr/tolEnc, dErr/tolDec) < margin {
					t.Errorf("an oracle with %s stays within %g× the tolerance (encoder %.2g, decoder %.2g)", p, margin, eErr, dErr)
				}
			}
		}
	}
}
