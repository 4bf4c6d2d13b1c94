package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

func writeTiny(t testing.TB, path string) {
	t.Helper()
	if err := testmodel.WriteLlamaFile(path, testmodel.TinyLlama()); err != nil {
		t.Fatal(err)
	}
}

func greedy(n int) GenerateOptions { return GenerateOptions{MaxTokens: n} }

func TestConcurrentRequestsShareOneModel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	writeTiny(t, path)
	e := New(Options{Threads: 1, NumCtx: 512})
	defer e.Close()
	req := GenerateRequest{Model: path, Prompt: "The owl", GenerateOptions: greedy(12)}
	want, err := e.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			got, err := e.Generate(context.Background(), req, nil)
			if err == nil && got.Text != want.Text {
				err = errors.New("concurrent request gave different text: " + got.Text)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.loaded); n != 1 {
		t.Fatalf("%d models loaded, want 1", n)
	}
}

func TestFailedLoadIsNotCached(t *testing.T) {
	path := filepath.Join(t.TempDir(), "later.gguf")
	if err := os.WriteFile(path, []byte("not yet a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := New(Options{Threads: 1, NumCtx: 256})
	defer e.Close()
	req := GenerateRequest{Model: path, Prompt: "hi", GenerateOptions: greedy(2)}
	if _, err := e.Generate(context.Background(), req, nil); err == nil {
		t.Fatal("generated from a file that is not a model")
	}
	writeTiny(t, path)
	if _, err := e.Generate(context.Background(), req, nil); err != nil {
		t.Fatalf("after the file was fixed: %v", err)
	}
}

func TestChatReusesHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	writeTiny(t, path)
	e := New(Options{Threads: 1, NumCtx: 512})
	defer e.Close()
	msgs := []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hello"}}
	first, err := e.Chat(context.Background(), ChatRequest{Model: path, Messages: msgs, GenerateOptions: greedy(5)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs = append(msgs, Message{Role: "assistant", Content: first.Text}, Message{Role: "user", Content: "And then?"})
	second, err := e.Chat(context.Background(), ChatRequest{Model: path, Messages: msgs, GenerateOptions: greedy(5)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if second.CachedTokens < first.PromptTokens {
		t.Fatalf("second turn reused %d tokens; the first turn's prompt alone had %d", second.CachedTokens, first.PromptTokens)
	}
	if _, err := e.Chat(context.Background(), ChatRequest{Model: path}, nil); err == nil {
		t.Fatal("empty chat accepted")
	}
}

func TestClosed(t *testing.T) {
	e := New(Options{})
	e.Close()
	if _, err := e.Generate(context.Background(), GenerateRequest{Model: "x.gguf", Prompt: "hi"}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}
