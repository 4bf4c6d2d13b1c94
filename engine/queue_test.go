package engine

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/owlengine/owl/llm"
	"github.com/owlengine/owl/models/testmodel"
	"github.com/owlengine/owl/speech"
)

// heldRecognizer is a speech backend whose transcriptions run until the
// test lets them go (or their context ends), so that tests decide who
// runs and who waits.
type heldRecognizer struct {
	mu       sync.Mutex // guards running and admitted
	running  int
	admitted []int         // the priority of each transcription, as it starts
	release  chan struct{} // closed to let every transcription finish
}

func (h *heldRecognizer) Transcribe(ctx context.Context, samples []float32, o speech.Options) (*speech.Transcript, error) {
	h.mu.Lock()
	h.running++
	h.admitted = append(h.admitted, o.Priority)
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.running--
		h.mu.Unlock()
	}()
	select {
	case <-h.release:
		return &speech.Transcript{Language: "en"}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (h *heldRecognizer) Close() error { return nil }

func (h *heldRecognizer) Running() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.running
}

var heldBackends = struct {
	sync.Mutex
	n int
}{}

// heldSpeech registers a held backend and writes a whisper model file for
// the engine to size; it returns the backend's name and the file.
func heldSpeech(t *testing.T) (*heldRecognizer, string, string) {
	t.Helper()
	h := &heldRecognizer{release: make(chan struct{})}
	heldBackends.Lock()
	heldBackends.n++
	name := "held-" + string(rune('a'+heldBackends.n))
	heldBackends.Unlock()
	speech.RegisterBackend(name, func(context.Context, string, speech.LoadOptions) (speech.Recognizer, error) { return h, nil })
	path := filepath.Join(t.TempDir(), "ggml-micro.en.bin")
	if err := testmodel.WriteWhisperFile(path, testmodel.WhisperMicro(testmodel.VocabEnglish, 1)); err != nil {
		t.Fatal(err)
	}
	return h, name, path
}

func speechMetrics(t *testing.T, e *Engine) ModelMetrics {
	t.Helper()
	for _, m := range e.Metrics().Models {
		if m.Kind == "speech" {
			return m
		}
	}
	t.Fatal("no speech model loaded")
	return ModelMetrics{}
}

// A speech model runs Parallel transcriptions at once and lets MaxQueue
// wait; more are turned away at once with ErrBusy, a waiter whose context
// ends leaves the queue, and waiters are admitted by priority.
func TestSpeechAdmission(t *testing.T) {
	h, backend, path := heldSpeech(t)
	e := New(Options{Parallel: 1, MaxQueue: 3, SpeechBackend: backend})
	defer e.Close()
	samples := make([]float32, 1600)
	transcribe := func(ctx context.Context, prio Priority) error {
		_, err := e.Transcribe(ctx, TranscribeRequest{Model: path, Samples: samples, TranscribeOptions: TranscribeOptions{Priority: int(prio)}})
		return err
	}
	first := make(chan error, 1)
	go func() { first <- transcribe(context.Background(), PriorityNormal) }()
	waitFor(t, func() bool { return h.Running() == 1 })

	// Three wait, in order of priority; the fourth is refused.
	var wg sync.WaitGroup
	leaving, leave := context.WithCancel(context.Background())
	left := make(chan error, 1)
	for i, p := range []Priority{PriorityBatch, PriorityInteractive, PriorityNormal} {
		ctx := context.Background()
		if p == PriorityNormal {
			ctx = leaving
		}
		wg.Go(func() {
			err := transcribe(ctx, p)
			if p == PriorityNormal {
				left <- err
				return
			}
			if err != nil {
				t.Error(err)
			}
		})
		waitFor(t, func() bool { return speechMetrics(t, e).QueueDepth == i+1 })
	}
	if err := transcribe(context.Background(), PriorityInteractive); !errors.Is(err, ErrBusy) {
		t.Fatalf("a fifth transcription with three waiting: %v, want ErrBusy", err)
	}
	leave()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("a waiter whose context ended: %v", err)
	}
	m := speechMetrics(t, e)
	if m.QueueDepth != 2 || m.Running != 1 || m.Slots != 1 || m.Rejected != 1 || m.Requests != 1 {
		t.Fatalf("metrics with one running and two waiting: %+v", m)
	}
	close(h.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	// The order the recognizer saw them start in (the order they return
	// in is the scheduler's, not the queue's).
	if want := []int{int(PriorityNormal), int(PriorityInteractive), int(PriorityBatch)}; !slices.Equal(h.admitted, want) {
		t.Fatalf("admitted in order %v, want %v", h.admitted, want)
	}
	m = speechMetrics(t, e)
	if m.QueueDepth != 0 || m.Running != 0 || m.Requests != 3 || m.QueueWait.Count != 3 || m.QueueWait.Buckets[len(m.QueueWait.Buckets)-1] != 3 {
		t.Fatalf("metrics after the transcriptions: %+v", m)
	}
}

// A request that waits longer than QueueWait for its model is turned away
// busy, for speech and text models alike, and is counted as rejected.
func TestQueueWait(t *testing.T) {
	const wait = 100 * time.Millisecond
	t.Run("speech", func(t *testing.T) {
		h, backend, path := heldSpeech(t)
		e := New(Options{Parallel: 1, QueueWait: wait, SpeechBackend: backend})
		defer e.Close()
		defer close(h.release)
		go e.Transcribe(context.Background(), TranscribeRequest{Model: path, Samples: make([]float32, 100)})
		waitFor(t, func() bool { return h.Running() == 1 })
		start := time.Now()
		_, err := e.Transcribe(context.Background(), TranscribeRequest{Model: path, Samples: make([]float32, 100)})
		if !errors.Is(err, ErrBusy) || time.Since(start) < wait {
			t.Fatalf("after %s: %v, want ErrBusy after %s", time.Since(start), err, wait)
		}
		t.Log(err)
		if m := speechMetrics(t, e); m.Rejected != 1 || m.QueueDepth != 0 {
			t.Fatalf("metrics: %+v", m)
		}
	})
	t.Run("text", func(t *testing.T) {
		e, path, _ := tinyEngine(t, Options{NumCtx: 4096, Parallel: 1, QueueWait: wait})
		r, cancel, done := hold(t, e, path)
		defer func() { cancel(); done() }()
		p := testPrompts(t, r, "The owl")[0]
		start := time.Now()
		_, err := r.generate(context.Background(), ignoreEOS(p, 1), nil, PriorityNormal, nil)
		if !errors.Is(err, ErrBusy) || time.Since(start) < wait {
			t.Fatalf("after %s: %v, want ErrBusy after %s", time.Since(start), err, wait)
		}
		t.Log(err)
		if r.queueDepth() != 0 || r.queue.rejected.Load() != 1 {
			t.Fatalf("queue depth %d, %d rejected", r.queueDepth(), r.queue.rejected.Load())
		}
	})
}

// A fault of owl's own in a decode step (here a panic planted in the step)
// fails the requests of that step with ErrInternal; the runner, the model
// and the compute gate go on serving the next requests.
func TestStepPanicIsContained(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	writeTiny(t, path)
	e := New(Options{Threads: 1, NumCtx: 512, Parallel: 2})
	defer e.Close()
	var planted sync.Once
	e.onRunner = func(r *textRunner) {
		r.onLogits = func([]llm.Token, int, []float32) {
			planted.Do(func() { panic("planted fault") })
		}
	}
	req := GenerateRequest{Model: path, Prompt: "The owl", GenerateOptions: greedy(4)}
	if _, err := e.Generate(context.Background(), req, nil); !errors.Is(err, ErrInternal) {
		t.Fatalf("the request of the failed step: %v, want ErrInternal", err)
	}
	for range 3 {
		if res, err := e.Generate(context.Background(), req, nil); err != nil || len(res.Tokens) == 0 {
			t.Fatalf("after the fault: %+v, %v", res, err)
		}
	}
	if u := e.gate.Used(); u != 0 {
		t.Fatalf("%d compute units held after the requests", u)
	}
}
