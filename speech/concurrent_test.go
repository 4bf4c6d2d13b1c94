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

// Many more beam-search transcriptions at once than one decoder graph can
// hold: their shared steps are split over several graphs instead of
// overflowing one, and each transcription still gives what it gives alone.
func TestManyConcurrentBeamSearches(t *testing.T) {
	m := loadModel(t, "micro-f16", testmodel.WhisperMicro(testmodel.VocabMultilingual, 1), LoadOptions{})
	samples := jfk(t)[:16000*4]
	const n = 48
	o := Options{BeamSize: 5, Temperatures: []float64{0}, MaxTokens: 12, Language: "en"}
	alone, err := m.Transcribe(context.Background(), samples, o)
	if err != nil {
		t.Fatal(err)
	}
	graphs, calls := m.stepGraphs.Load(), m.stepCalls.Load()
	var wg sync.WaitGroup
	results := make([]*Transcript, n)
	for i := range n {
		wg.Go(func() {
			var err error
			if results[i], err = m.Transcribe(context.Background(), samples, o); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	graphs, calls = m.stepGraphs.Load()-graphs, m.stepCalls.Load()-calls
	t.Logf("%d transcriptions at once: %d decoder steps in %d graphs (at most %d transcriptions and %d sequences a graph)", n, calls, graphs, m.stepParts, maxStepRows)
	if n <= m.stepParts {
		t.Fatalf("%d transcriptions fit one graph (%d): the test does not reach the limit", n, m.stepParts)
	}
	for i, r := range results {
		if r != nil && !slices.Equal(tokenIDs(r), tokenIDs(alone)) {
			t.Errorf("transcription %d: %v, alone %v", i, tokenIDs(r), tokenIDs(alone))
		}
	}
}

// A step graph of as many transcriptions as stepParts allows, each with a
// state of its own, fits the graph; the plan leaves no room for much more.
func TestStepPartsFillAGraph(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  testmodel.WhisperConfig
	}{{"micro-f16", testmodel.WhisperMicro(testmodel.VocabMultilingual, 1)}, {"micro-f32", testmodel.WhisperMicro(testmodel.VocabMultilingual, 0)}} {
		m := loadModel(t, c.name, c.cfg, LoadOptions{})
		parts := make([]decoderPart, m.stepParts)
		for i := range parts {
			st, err := m.newState(2)
			if err != nil {
				t.Fatal(err)
			}
			defer st.close()
			parts[i] = decoderPart{st: st, tokens: []int32{1, 2}, p0: m.hp.NTextCtx - 1, nSeq: 2}
		}
		g := m.backend.NewGraph()
		m.buildDecoderParts(g, parts, nil)
		used, capacity := g.Used(), g.Capacity()
		err := g.Err()
		g.Close()
		if err != nil {
			t.Fatalf("%s: %d transcriptions in one step: %v", c.name, m.stepParts, err)
		}
		perPart := used / m.stepParts
		t.Logf("%s: %d transcriptions take %d of %d nodes", c.name, m.stepParts, used, capacity)
		if capacity-used > 2*perPart {
			t.Errorf("%s: %d nodes of %d left after %d transcriptions of about %d each", c.name, capacity-used, capacity, m.stepParts, perPart)
		}
	}
}
