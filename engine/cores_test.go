package engine

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/owlengine/owl/models/testmodel"
)

// A text model and a speech model computing at the same time take turns
// on the cores (the engine's compute gate): never more threads at once
// than the machine has cores, and each model's results are those it gives
// alone.
func TestModelsShareCores(t *testing.T) {
	dir := t.TempDir()
	text, speechModel := filepath.Join(dir, "tiny.gguf"), filepath.Join(dir, "micro.bin")
	writeTiny(t, text)
	if err := testmodel.WriteWhisperFile(speechModel, testmodel.WhisperMicro(testmodel.VocabEnglish, 1)); err != nil {
		t.Fatal(err)
	}
	jfk, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	samples, err := ReadAudio(jfk)
	if err != nil {
		t.Fatal(err)
	}
	samples = samples[:3*SampleRate]
	e := New(Options{NumCtx: 512, CacheDir: filepath.Join(dir, "cache")}) // every model takes all the cores
	defer e.Close()
	ctx := context.Background()
	prompt := "Once upon a time"
	gen := func() Result {
		res, err := e.Generate(ctx, GenerateRequest{Model: text, Prompt: prompt, GenerateOptions: greedy(24)}, nil)
		if err != nil {
			t.Error(err)
		}
		return res
	}
	transcribe := func() string {
		tr, err := e.Transcribe(ctx, TranscribeRequest{Model: speechModel, Samples: samples,
			TranscribeOptions: TranscribeOptions{BeamSize: 1, Temperatures: []float64{0}, MaxTokens: 32}})
		if err != nil {
			t.Error(err)
			return ""
		}
		return tr.Text()
	}
	start := time.Now()
	aloneText, aloneSpeech := gen(), transcribe()
	alone := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}
	before := e.gate.Stats()

	start = time.Now()
	var wg sync.WaitGroup
	texts := make([]Result, 3)
	speech := make([]string, 2)
	for i := range texts {
		wg.Go(func() { texts[i] = gen() })
	}
	for i := range speech {
		wg.Go(func() { speech[i] = transcribe() })
	}
	wg.Wait()
	together := time.Since(start)
	for i, r := range texts {
		if !slices.Equal(r.Tokens, aloneText.Tokens) {
			t.Errorf("generation %d beside transcriptions: %v, alone %v", i, r.Tokens, aloneText.Tokens)
		}
	}
	for i, s := range speech {
		if s != aloneSpeech {
			t.Errorf("transcription %d beside generations: %q, alone %q", i, s, aloneSpeech)
		}
	}
	st := e.gate.Stats()
	if st.MaxUsed > e.gate.Capacity() {
		t.Errorf("%d threads computed at once on %d cores", st.MaxUsed, e.gate.Capacity())
	}
	// Whether any evaluation waited depends on the machine: on a busy one
	// the decoder steps take fewer threads (compute.Spare) and two fit at
	// once. That every one went through the gate does not.
	if st.Acquired-before.Acquired == 0 {
		t.Errorf("the models did not go through the gate: %+v, before %+v", st, before)
	}
	// Not asserted (timings are for benchmarks): without the gate the
	// models' spinning threads starve each other and this takes 10-100×
	// longer than the same work one request after another.
	t.Logf("one generation and one transcription one after the other: %s; three and two at once: %s", alone.Round(time.Millisecond), together.Round(time.Millisecond))
	t.Logf("gate: %d evaluations, %d waited, at most %d of %d cores held", st.Acquired-before.Acquired, st.Waited-before.Waited, st.MaxUsed, e.gate.Capacity())
}
