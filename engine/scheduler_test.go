package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/owlengine/owl/llm"
	"github.com/owlengine/owl/models/testmodel"
)

// logitTrace records, per prompt, the logits of each step.
type logitTrace struct {
	mu    sync.Mutex
	steps map[string][][]float32
}

func newTrace() *logitTrace { return &logitTrace{steps: map[string][][]float32{}} }

func (t *logitTrace) hook(r *textRunner) {
	r.onLogits = func(prompt []llm.Token, step int, logits []float32) {
		t.mu.Lock()
		defer t.mu.Unlock()
		k := fmt.Sprint(prompt)
		t.steps[k] = append(t.steps[k], slices.Clone(logits))
	}
}

func (t *logitTrace) get(prompt []llm.Token) [][]float32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.steps[fmt.Sprint(prompt)]
}

// tinyEngine returns an engine over a fresh copy of the tiny model, with
// its logits traced.
func tinyEngine(t *testing.T, o Options) (*Engine, string, *logitTrace) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	writeTiny(t, path)
	if o.Threads == 0 {
		o.Threads = 2
	}
	e := New(o)
	tr := newTrace()
	e.onRunner = tr.hook
	t.Cleanup(func() { e.Close() })
	return e, path, tr
}

// runner returns the runner of the loaded text model at path.
func runnerOf(t *testing.T, e *Engine, path string) *textRunner {
	t.Helper()
	m, l, err := e.textModel(context.Background(), path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	l.release(nil)
	return m.runner
}

// prompts of different lengths, tokenized by the model.
func testPrompts(t *testing.T, r *textRunner, texts ...string) [][]llm.Token {
	t.Helper()
	var out [][]llm.Token
	for _, s := range texts {
		toks, err := r.model.Tokenize(s, true, false)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, toks)
	}
	return out
}

func ignoreEOS(prompt []llm.Token, n int) llm.Request {
	return llm.Request{Prompt: prompt, MaxTokens: n, IgnoreEOS: true}
}

// batchTolerance bounds how far a request's logits may move when other
// requests share its decode steps. Bit-exact equality cannot hold: the
// matrix kernels sum in a different order for a batch of rows than for one
// row, and attention runs over a cache that also holds other sequences'
// (masked) cells. Most steps differ by an f32 rounding (1e-7); a step now
// and then by more, when a last-bit difference flips the rounding of an
// activation to f16 (a relative 2^-11, 4.9e-4) before a matrix product.
// The tiny model's logits are of magnitude ~2, so the tolerance is two f16
// steps of that: 2e-3 (measured at most 4.9e-4).
const batchTolerance = 2e-3

// compareRuns checks a batched run against the same request run alone:
// logits within batchTolerance while the tokens agree, and tokens that
// differ only where the alone run's top two logits were closer than twice
// the tolerance. It returns the largest difference seen.
func compareRuns(t *testing.T, name string, alone, batched [][]float32, aloneToks, batchedToks []llm.Token) float64 {
	t.Helper()
	worst := 0.0
	n := min(len(alone), len(batched))
	for step := range n {
		d := 0.0
		for i := range alone[step] {
			d = max(d, math.Abs(float64(alone[step][i]-batched[step][i])))
		}
		worst = max(worst, d)
		if d > batchTolerance {
			t.Errorf("%s: step %d: logits differ by %g (tolerance %g)", name, step, d, batchTolerance)
			return worst
		}
		if step < len(aloneToks) && step < len(batchedToks) && aloneToks[step] != batchedToks[step] {
			if m := top2Margin(alone[step]); m > 2*batchTolerance {
				t.Errorf("%s: step %d: token %d alone, %d batched, with a top-2 margin of %g", name, step, aloneToks[step], batchedToks[step], m)
			}
			return worst
		}
	}
	if !slices.Equal(aloneToks, batchedToks) {
		t.Errorf("%s: tokens alone %v, batched %v", name, aloneToks, batchedToks)
	}
	return worst
}

func top2Margin(logits []float32) float64 {
	a, b := float32(math.Inf(-1)), float32(math.Inf(-1))
	for _, v := range logits {
		if v > a {
			a, b = v, a
		} else if v > b {
			b = v
		}
	}
	return float64(a - b)
}

// Four greedy requests decoded together give what each gives alone, also
// when a long prompt joins (in chunks) while the others generate.
func TestBatchedEqualsAlone(t *testing.T) {
	testBatchedEqualsAlone(t, Options{NumCtx: 512, Parallel: 4, NumBatch: 64})
}

// testBatchedEqualsAlone is TestBatchedEqualsAlone on engines of the
// options o (the GPU test's offload every layer).
func testBatchedEqualsAlone(t *testing.T, o Options) {
	texts := []string{"The owl", "Once upon a time in a forest far away", "Hello", "A"}
	long := strings.Repeat("The old oak tree stood on the hill above the river. ", 12)
	const gen = 24

	// Alone: one request at a time, each on a fresh engine.
	type run struct {
		logits [][]float32
		toks   []llm.Token
	}
	alone := map[string]run{}
	var prompts [][]llm.Token
	for _, text := range append(texts, long) {
		e, path, tr := tinyEngine(t, o)
		r := runnerOf(t, e, path)
		p := testPrompts(t, r, text)[0]
		res, err := r.generate(context.Background(), ignoreEOS(p, gen), nil, PriorityNormal, nil)
		if err != nil {
			t.Fatal(err)
		}
		alone[fmt.Sprint(p)] = run{tr.get(p), res.Tokens}
		prompts = append(prompts, p)
	}

	t.Run("together", func(t *testing.T) {
		e, path, tr := tinyEngine(t, o)
		r := runnerOf(t, e, path)
		results := make([]llm.Result, 4)
		var wg sync.WaitGroup
		for i, p := range prompts[:4] {
			wg.Go(func() {
				var err error
				if results[i], err = r.generate(context.Background(), ignoreEOS(p, gen), nil, PriorityNormal, nil); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		worst := 0.0
		for i, p := range prompts[:4] {
			a := alone[fmt.Sprint(p)]
			worst = max(worst, compareRuns(t, texts[i], a.logits, tr.get(p), a.toks, results[i].Tokens))
		}
		t.Logf("largest logit difference: %g", worst)
		if st := r.stats.steps.Load(); st > int64(len(prompts[1])+gen+2) {
			t.Errorf("%d decode steps for four requests of %d tokens: they were not batched", st, gen)
		}
	})

	t.Run("long prompt joins", func(t *testing.T) {
		e, path, tr := tinyEngine(t, o)
		r := runnerOf(t, e, path)
		results := make([]llm.Result, 4)
		started := make(chan struct{})
		var once sync.Once
		var wg sync.WaitGroup
		run := func(i int, p []llm.Token) {
			var err error
			n := 0
			results[i], err = r.generate(context.Background(), ignoreEOS(p, gen), nil, PriorityNormal, func(llm.Chunk) error {
				if n++; n == 4 {
					once.Do(func() { close(started) })
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}
		for i, p := range prompts[:3] {
			wg.Go(func() { run(i, p) })
		}
		<-started
		stepsBefore := r.stats.steps.Load()
		wg.Go(func() { run(3, prompts[4]) })
		wg.Wait()
		worst := 0.0
		for i, p := range append(slices.Clone(prompts[:3]), prompts[4]) {
			a := alone[fmt.Sprint(p)]
			worst = max(worst, compareRuns(t, fmt.Sprint("request ", i), a.logits, tr.get(p), a.toks, results[i].Tokens))
		}
		t.Logf("largest logit difference: %g; the %d-token prompt joined after step %d", worst, len(prompts[4]), stepsBefore)
		if results[3].PromptTokens != len(prompts[4]) || len(prompts[4]) <= r.joinBudget {
			t.Fatalf("the long prompt has %d tokens, the join budget is %d", len(prompts[4]), r.joinBudget)
		}
	})
}

// A request sharing a 200-token prefix with an earlier one evaluates only
// its suffix, and its output equals an uncached run; the prefix is shared
// from a slot still generating, too.
func TestPrefixReuse(t *testing.T) {
	prefix := strings.Repeat("You are a helpful owl who answers in short sentences. ", 14)
	e, path, tr := tinyEngine(t, Options{NumCtx: 512, Parallel: 2, NumBatch: 128})
	r := runnerOf(t, e, path)
	ps := testPrompts(t, r, prefix+"What is a tree?", prefix+"Why do owls hoot at night?", prefix)
	a, b, shared := ps[0], ps[1], llm.CommonPrefix(ps[0], ps[1])
	if shared < 200 {
		t.Fatalf("prompts share %d tokens, want ≥ 200", shared)
	}
	if _, err := r.generate(context.Background(), ignoreEOS(a, 8), nil, PriorityNormal, nil); err != nil {
		t.Fatal(err)
	}
	before := r.stats.promptTokens.Load()
	res, err := r.generate(context.Background(), ignoreEOS(b, 8), nil, PriorityNormal, nil)
	if err != nil {
		t.Fatal(err)
	}
	evaluated := r.stats.promptTokens.Load() - before
	if res.CachedTokens != shared || evaluated != int64(len(b)-shared) {
		t.Fatalf("second request: %d tokens cached, %d evaluated; want %d and %d", res.CachedTokens, evaluated, shared, len(b)-shared)
	}

	// Uncached, on a fresh engine.
	e2, path2, tr2 := tinyEngine(t, Options{NumCtx: 512, Parallel: 2, NumBatch: 128})
	r2 := runnerOf(t, e2, path2)
	want, err := r2.generate(context.Background(), ignoreEOS(b, 8), nil, PriorityNormal, nil)
	if err != nil || want.CachedTokens != 0 {
		t.Fatalf("uncached run: %v, %d cached", err, want.CachedTokens)
	}
	d := compareRuns(t, "cached prefix", tr2.get(b), tr.get(b), want.Tokens, res.Tokens)
	t.Logf("cached vs uncached: largest logit difference %g", d)

	// While one request generates from the prefix, another starting with
	// it shares the cells of the busy slot.
	gate := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		n := 0
		if _, err := r.generate(context.Background(), ignoreEOS(ps[2], 40), nil, PriorityNormal, func(llm.Chunk) error {
			if n++; n == 2 {
				close(gate)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	})
	<-gate
	c := testPrompts(t, r, prefix+"Tell me about the moon.")[0]
	res, err = r.generate(context.Background(), ignoreEOS(c, 4), nil, PriorityNormal, nil)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if want := llm.CommonPrefix(c, ps[2]); res.CachedTokens < want {
		t.Fatalf("shared %d tokens from the busy slot, want ≥ %d", res.CachedTokens, want)
	}
}

// hold starts a request on the text model at path that generates until
// cancel is called (holding the model, as any request does), and waits
// until it runs. wait returns its error.
func hold(t *testing.T, e *Engine, path string) (r *textRunner, cancel func() int64, wait func() error) {
	t.Helper()
	m, l, err := e.textModel(context.Background(), path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	r = m.runner
	p := testPrompts(t, r, "The owl")[0]
	ctx, stop := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		defer l.release(nil)
		_, err := r.generate(ctx, ignoreEOS(p, 100000), nil, PriorityNormal, nil)
		errc <- err
	}()
	waitFor(t, func() bool { return r.stats.running.Load() == 1 && r.stats.decodeTokens.Load() > 0 })
	return r, func() int64 {
			n := r.stats.steps.Load()
			stop()
			return n
		}, func() error {
			return <-errc
		}
}

// Cancelling a running request frees its slot within a step; a waiting one
// leaves the queue at once; a full queue answers ErrBusy at once; nothing
// is left running after Close.
func TestCancelAndBusy(t *testing.T) {
	baseline := runtime.NumGoroutine()
	e, path, _ := tinyEngine(t, Options{NumCtx: 4096, Parallel: 1, MaxQueue: 1})
	r, cancel, wait := hold(t, e, path)
	p := testPrompts(t, r, "The owl")[0]

	// The slot is busy: one request may wait, the next is refused.
	wctx, wcancel := context.WithCancel(context.Background())
	waiting := make(chan error, 1)
	go func() {
		_, err := r.generate(wctx, ignoreEOS(p, 1), nil, PriorityNormal, nil)
		waiting <- err
	}()
	waitFor(t, func() bool { return r.queueDepth() == 1 })
	if _, err := r.generate(context.Background(), ignoreEOS(p, 1), nil, PriorityNormal, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("third request: %v, want ErrBusy", err)
	}
	wcancel()
	if err := <-waiting; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiting request: %v", err)
	}
	if d := r.queueDepth(); d != 0 {
		t.Fatalf("queue depth %d after the waiting request left", d)
	}

	stepsAtCancel := cancel()
	if err := wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
	waitFor(t, func() bool { return r.stats.running.Load() == 0 })
	if extra := r.stats.steps.Load() - stepsAtCancel; extra > 1 {
		t.Fatalf("%d steps ran after the cancel", extra)
	}
	// The slot serves the next request.
	if _, err := r.generate(context.Background(), ignoreEOS(p, 3), nil, PriorityNormal, nil); err != nil {
		t.Fatal(err)
	}
	e.Close()
	waitFor(t, func() bool { return runtime.NumGoroutine() <= baseline })
}

// Waiting requests are admitted by priority, then in order of arrival.
func TestPriority(t *testing.T) {
	e, path, _ := tinyEngine(t, Options{NumCtx: 4096, Parallel: 1})
	// The order of admission is read where it happens: the runner steps
	// one request at a time (Parallel 1), so the order in which requests
	// see their first logits is the order they were admitted in. Each
	// request's prompt is one token longer than the last, which names it.
	m, l, err := e.textModel(context.Background(), path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.release(nil)
	p := testPrompts(t, m.runner, "The owl")[0]
	cases := []struct {
		name string
		prio Priority
	}{{"batch", PriorityBatch}, {"normal", PriorityNormal}, {"interactive", PriorityInteractive}, {"normal 2", PriorityNormal}}
	var order []string
	var mu sync.Mutex
	m.runner.onLogits = func(prompt []llm.Token, step int, _ []float32) {
		if i := len(prompt) - len(p) - 1; step == 0 && i >= 0 && i < len(cases) {
			mu.Lock()
			order = append(order, cases[i].name)
			mu.Unlock()
		}
	}
	r, cancel, wait := hold(t, e, path)
	var wg sync.WaitGroup
	for i, c := range cases {
		prompt := slices.Clone(p)
		for range i + 1 {
			prompt = append(prompt, p[len(p)-1])
		}
		wg.Go(func() {
			if _, err := r.generate(context.Background(), ignoreEOS(prompt, 1), nil, c.prio, nil); err != nil {
				t.Error(err)
			}
		})
		waitFor(t, func() bool { return r.queueDepth() == i+1 })
	}
	cancel()
	wait()
	wg.Wait()
	if want := []string{"interactive", "normal", "normal 2", "batch"}; !slices.Equal(order, want) {
		t.Fatalf("admitted in order %v, want %v", order, want)
	}
}

// waitFor polls cond for up to ten seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// The KV cache may be quantized; batched requests still run. A model
// whose attention heads do not fill whole quantization blocks is refused
// with a clear error instead of a native assertion.
func TestQuantizedKVCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "heads32.gguf")
	c := testmodel.TinyLlama()
	c.Heads, c.HeadsKV = 2, 1 // heads of 32
	if err := testmodel.WriteLlamaFile(path, c); err != nil {
		t.Fatal(err)
	}
	for _, kv := range []string{"q8_0", "q4_0"} {
		t.Run(kv, func(t *testing.T) {
			e := New(Options{Threads: 2, NumCtx: 256, Parallel: 2, KVType: kv})
			defer e.Close()
			var wg sync.WaitGroup
			for _, p := range []string{"The owl", "Hello there"} {
				wg.Go(func() {
					res, err := e.Generate(context.Background(), GenerateRequest{Model: path, Prompt: p, GenerateOptions: greedy(8)}, nil)
					if err != nil || res.PromptTokens == 0 {
						t.Errorf("%s: %v %+v", p, err, res)
					}
				})
			}
			wg.Wait()
		})
	}
	tiny := filepath.Join(t.TempDir(), "tiny.gguf")
	writeTiny(t, tiny) // heads of 16
	for kv, want := range map[string]string{"q8_0": "multiple of 32", "q3": "q3"} {
		e := New(Options{KVType: kv})
		_, err := e.Generate(context.Background(), GenerateRequest{Model: tiny, Prompt: "hi"}, nil)
		e.Close()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("kv %s: %v, want an error saying %q", kv, err, want)
		}
	}
}
