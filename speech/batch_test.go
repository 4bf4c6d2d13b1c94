package speech

import (
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

// Sequences decoded side by side, and reordered as beam search does, give
// the logits each gives decoded alone.
func TestBatchedSequencesEqualAlone(t *testing.T) {
	for _, fa := range []bool{false, true} {
		m := loadModel(t, "micro-f16", testmodel.WhisperMicro(testmodel.VocabMultilingual, 1), LoadOptions{FlashAttn: fa})
		mel := LogMel(testAudio(), m.file.MelFilters, m.hp.NMels, 2)
		window := make([]float32, m.hp.NMels*WindowFrames)
		mel.Window(window, 0)
		prompt, _, _ := m.sotSequence(Options{})

		alone := func(history []int32) []float32 {
			st, err := m.newState(1)
			if err != nil {
				t.Fatal(err)
			}
			defer st.close()
			if err := m.encode(window, st, nil); err != nil {
				t.Fatal(err)
			}
			var l []float32
			if l, err = m.decode(st, prompt); err != nil {
				t.Fatal(err)
			}
			for _, tok := range history {
				if l, err = m.decode(st, []int32{tok}); err != nil {
					t.Fatal(err)
				}
			}
			return l
		}

		st, err := m.newState(3)
		if err != nil {
			t.Fatal(err)
		}
		defer st.close()
		if err := m.encode(window, st, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := m.prompt(st, prompt, []int{len(prompt) - 1}); err != nil {
			t.Fatal(err)
		}
		hist := [][]int32{{}, {}, {}}
		steps := []struct {
			parents []int
			tokens  []int32
		}{
			{[]int{0, 1, 2}, []int32{100, 200, 300}},
			{[]int{0, 1, 2}, []int32{101, 201, 301}},
			{[]int{1, 1, 0}, []int32{102, 202, 302}}, // sequences 0 and 1 continue 1; 2 continues 0
			{[]int{2, 0, 1}, []int32{103, 203, 303}},
		}
		var got [][]float32
		for _, s := range steps {
			if err := m.reorder(st, s.parents); err != nil {
				t.Fatal(err)
			}
			next := make([][]int32, 3)
			for i, p := range s.parents {
				next[i] = append(append([]int32{}, hist[p]...), s.tokens[i])
			}
			hist = next
			if got, err = m.step(st, s.tokens); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			want := alone(hist[i])
			ref := make([]float64, len(want))
			for j, v := range want {
				ref[j] = float64(v)
			}
			if e := relErr(got[i], ref); e > 1e-3 {
				t.Fatalf("flash %v: sequence %d (history %v) differs from decoding it alone by %.2g", fa, i, hist[i], e)
			}
		}
	}
}
