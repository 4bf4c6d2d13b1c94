package speech

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

// Four transcriptions running at once on one model give what each gives
// alone, and their decoder steps share graph evaluations.
func TestConcurrentTranscriptions(t *testing.T) {
	m := loadModel(t, "micro-f16", testmodel.WhisperMicro(testmodel.VocabMultilingual, 1), LoadOptions{})
	samples := jfk(t)
	// Four different inputs: the recording cut at different points.
	inputs := [][]float32{samples, samples[16000:], samples[:len(samples)*2/3], samples[8000 : len(samples)-8000]}
	opts := []Options{greedyOnly, {BeamSize: 3, Temperatures: []float64{0}}, greedyOnly, {BeamSize: 2, Temperatures: []float64{0}}}
	for i := range opts {
		opts[i].MaxTokens = 24
		opts[i].Language = "en"
	}
	alone := make([]*Transcript, len(inputs))
	for i := range inputs {
		var err error
		if alone[i], err = m.Transcribe(context.Background(), inputs[i], opts[i]); err != nil {
			t.Fatal(err)
		}
	}
	graphs, calls := m.stepGraphs.Load(), m.stepCalls.Load()
	if graphs != calls {
		t.Fatalf("transcriptions one at a time: %d step graphs for %d steps", graphs, calls)
	}
	together := make([]*Transcript, len(inputs))
	var wg sync.WaitGroup
	for i := range inputs {
		wg.Go(func() {
			var err error
			if together[i], err = m.Transcribe(context.Background(), inputs[i], opts[i]); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	graphs, calls = m.stepGraphs.Load()-graphs, m.stepCalls.Load()-calls
	t.Logf("concurrent: %d decoder steps in %d graphs", calls, graphs)
	if graphs >= calls {
		t.Errorf("no decoder steps were batched: %d graphs for %d steps", graphs, calls)
	}
	for i := range inputs {
		if a, b := tokenIDs(alone[i]), tokenIDs(together[i]); !slices.Equal(a, b) {
			t.Errorf("input %d: alone %v, together %v", i, a, b)
		}
	}
}
