package engine

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// loadedNames lists the file names of the loaded models.
func loadedNames(e *Engine) []string {
	var out []string
	for _, m := range e.Metrics().Models {
		out = append(out, filepath.Base(m.Path))
	}
	slices.Sort(out)
	return out
}

// threeModels writes three copies of the tiny model and returns their
// paths and the estimated size of one.
func threeModels(t *testing.T) ([]string, uint64) {
	dir := t.TempDir()
	var paths []string
	for _, n := range []string{"a.gguf", "b.gguf", "c.gguf"} {
		p := filepath.Join(dir, n)
		writeTiny(t, p)
		paths = append(paths, p)
	}
	probe := New(Options{NumCtx: 4096, Parallel: 1})
	defer probe.Close()
	fp, err := probe.estimate(modelRef{path: paths[0], kind: kindText})
	if err != nil {
		t.Fatal(err)
	}
	return paths, fp.total
}

func generateOn(t *testing.T, e *Engine, path string) {
	t.Helper()
	if _, err := e.Generate(context.Background(), GenerateRequest{Model: path, Prompt: "hi", GenerateOptions: greedy(2)}, nil); err != nil {
		t.Fatal(err)
	}
}

// With a budget for two of three models, loading the third unloads the
// least recently used idle one, never one in use.
func TestMemoryBudgetEvictsLRU(t *testing.T) {
	paths, size := threeModels(t)
	e := New(Options{Threads: 1, NumCtx: 4096, Parallel: 1, MaxMemory: size*2 + size/2, KeepAlive: -1})
	defer e.Close()
	generateOn(t, e, paths[0])
	generateOn(t, e, paths[1])
	generateOn(t, e, paths[2])
	if got, want := loadedNames(e), []string{"b.gguf", "c.gguf"}; !slices.Equal(got, want) {
		t.Fatalf("loaded %v, want %v (a was least recently used)", got, want)
	}
	// b is now the least recently used, but a request holds it.
	_, cancel, wait := hold(t, e, paths[1])
	generateOn(t, e, paths[0])
	if got, want := loadedNames(e), []string{"a.gguf", "b.gguf"}; !slices.Equal(got, want) {
		t.Fatalf("loaded %v, want %v (c was the only idle model)", got, want)
	}
	cancel()
	wait()
	m := e.Metrics()
	if m.MemoryUsed > m.MemoryBudget || m.Loads != 4 || m.Unloads != 2 {
		t.Fatalf("metrics %+v", m)
	}
}

// When every loaded model is in use, a load waits for memory (until its
// context ends); a model larger than the whole budget is refused at once.
func TestMemoryBudgetWaitsAndRefuses(t *testing.T) {
	paths, size := threeModels(t)
	e := New(Options{Threads: 1, NumCtx: 4096, Parallel: 1, MaxMemory: size + size/2})
	defer e.Close()
	_, cancel, wait := hold(t, e, paths[0])
	ctx, stop := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer stop()
	_, err := e.Generate(ctx, GenerateRequest{Model: paths[1], Prompt: "hi", GenerateOptions: greedy(1)}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("load while the budget is held: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		generateOn(t, e, paths[1]) // waits for a's request to end
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	wait()
	<-done
	if got, want := loadedNames(e), []string{"b.gguf"}; !slices.Equal(got, want) {
		t.Fatalf("loaded %v, want %v", got, want)
	}

	small := New(Options{Threads: 1, NumCtx: 4096, Parallel: 1, MaxMemory: size / 2})
	defer small.Close()
	if _, err := small.Generate(context.Background(), GenerateRequest{Model: paths[0], Prompt: "hi"}, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("model over the budget: %v", err)
	}
}

// An idle model unloads when its keep-alive runs out; a request may set
// its own (0: unload at once).
func TestKeepAlive(t *testing.T) {
	paths, _ := threeModels(t)
	e := New(Options{Threads: 1, NumCtx: 4096, Parallel: 1, KeepAlive: 30 * time.Millisecond})
	defer e.Close()
	generateOn(t, e, paths[0])
	waitFor(t, func() bool { return len(loadedNames(e)) == 0 })

	forever, now := time.Duration(-1), time.Duration(0)
	if _, err := e.Generate(context.Background(), GenerateRequest{Model: paths[1], Prompt: "hi", GenerateOptions: GenerateOptions{MaxTokens: 1, KeepAlive: &forever}}, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := loadedNames(e); !slices.Equal(got, []string{"b.gguf"}) {
		t.Fatalf("loaded %v, want b kept forever", got)
	}
	if _, err := e.Generate(context.Background(), GenerateRequest{Model: paths[1], Prompt: "hi", GenerateOptions: GenerateOptions{MaxTokens: 1, KeepAlive: &now}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := loadedNames(e); len(got) != 0 {
		t.Fatalf("loaded %v after a request with keep-alive 0", got)
	}
}

// Eight concurrent requests for a model that is not loaded load it once.
func TestConcurrentLoadsOnce(t *testing.T) {
	paths, _ := threeModels(t)
	e := New(Options{Threads: 1, NumCtx: 256, Parallel: 2})
	defer e.Close()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { generateOn(t, e, paths[0]) })
	}
	wg.Wait()
	if m := e.Metrics(); m.Loads != 1 || len(m.Models) != 1 || m.Models[0].Requests != 8 {
		t.Fatalf("metrics %+v", m)
	}
}

func TestParseBytes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
	}{{"1024", 1024}, {"8GiB", 8 << 30}, {"512 MB", 512e6}, {"1.5g", 3 << 29}, {"2TiB", 2 << 40}} {
		if got, err := ParseBytes(c.in); err != nil || got != c.want {
			t.Errorf("%q: %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	if got, err := ParseBytes("50%"); err != nil || got == 0 {
		t.Errorf("50%%: %d, %v", got, err)
	}
	for _, bad := range []string{"", "x", "-1G", "0", "150%", "1e30"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A model's embedding context counts in its share of the budget: the
// used memory grows by its estimate when it is made, and a budget with
// room for the model but not for the context refuses the embedding
// (ErrTooLarge) while generation goes on.
func TestEmbeddingContextInBudget(t *testing.T) {
	paths, size := threeModels(t)
	ctx := context.Background()
	e := New(Options{Threads: 1, NumCtx: 4096, Parallel: 1})
	defer e.Close()
	generateOn(t, e, paths[0])
	before := e.Metrics().MemoryUsed
	if _, err := e.Embed(ctx, EmbedRequest{Model: paths[0], Inputs: []string{"hello"}}); err != nil {
		t.Fatal(err)
	}
	grown := e.Metrics().MemoryUsed - before
	if grown == 0 {
		t.Fatal("the embedding context did not count in the budget")
	}
	if _, err := e.Embed(ctx, EmbedRequest{Model: paths[0], Inputs: []string{"again"}}); err != nil || e.Metrics().MemoryUsed-before != grown {
		t.Fatalf("a second embedding: %v, grown %d then %d", err, grown, e.Metrics().MemoryUsed-before)
	}
	t.Logf("model %d bytes, embedding context %d", size, grown)

	tight := New(Options{Threads: 1, NumCtx: 4096, Parallel: 1, MaxMemory: size + grown/2})
	defer tight.Close()
	generateOn(t, tight, paths[1])
	if _, err := tight.Embed(ctx, EmbedRequest{Model: paths[1], Inputs: []string{"hello"}}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("an embedding context over the budget: %v", err)
	}
	generateOn(t, tight, paths[1])
}
