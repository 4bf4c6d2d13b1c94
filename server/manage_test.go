package server

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ollama "github.com/ollama/ollama/api"

	"github.com/owlengine/owl/internal/hubtest"
	"github.com/owlengine/owl/models/hub"
)

// ollama's own client pulls a model through owl serve from a local hub,
// with the progress its command line prints, lists it, uses it, and
// deletes it.
func TestOllamaPullAndDelete(t *testing.T) {
	srv := hubtest.New(t)
	tinyBytes, err := os.ReadFile(filepath.Join(modelsDir, "tiny.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	srv.AddLFS("owl-test/tiny-GGUF", "tiny-F16.gguf", tinyBytes)
	srv.Throttle("owl-test/tiny-GGUF", "tiny-F16.gguf", len(tinyBytes)/8, 30*time.Millisecond)
	hc := hub.NewClient("owl-test")
	hc.Endpoint = srv.URL()
	ts := testServer(t, Config{ModelsDir: t.TempDir(), Hub: hc})
	u, _ := url.Parse(ts.URL)
	client := ollama.NewClient(u, http.DefaultClient)
	ctx := context.Background()

	var statuses []string
	var last ollama.ProgressResponse
	err = client.Pull(ctx, &ollama.PullRequest{Model: "hf.co/owl-test/tiny-GGUF:F16"}, func(p ollama.ProgressResponse) error {
		if len(statuses) == 0 || statuses[len(statuses)-1] != p.Status {
			statuses = append(statuses, p.Status)
		}
		if p.Total > 0 {
			if p.Completed < last.Completed || p.Total != int64(len(tinyBytes)) {
				t.Errorf("progress %+v after %+v", p, last)
			}
			last = p
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(statuses, []string{"pulling manifest", "pulling tiny-F16", "verifying sha256 digest", "writing manifest", "success"}) ||
		last.Completed != last.Total || last.Digest == "" {
		t.Fatalf("statuses %q, last progress %+v", statuses, last)
	}
	list, err := client.List(ctx)
	if err != nil || len(list.Models) != 1 || list.Models[0].Name != "tiny-F16" {
		t.Fatalf("list after the pull: %+v %v", list, err)
	}
	res, err := collectGenerate(ctx, client, "tiny-F16")
	if err != nil || res == "" {
		t.Fatalf("the pulled model: %q %v", res, err)
	}
	// A second pull finds it up to date.
	if err := client.Pull(ctx, &ollama.PullRequest{Model: "hf.co/owl-test/tiny-GGUF:F16"}, func(ollama.ProgressResponse) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := client.Delete(ctx, &ollama.DeleteRequest{Model: "tiny-F16"}); err != nil {
		t.Fatal(err)
	}
	if list, _ := client.List(ctx); len(list.Models) != 0 {
		t.Fatalf("list after the delete: %+v", list)
	}
	var se ollama.StatusError
	if err := client.Delete(ctx, &ollama.DeleteRequest{Model: "tiny-F16"}); !errors.As(err, &se) || se.StatusCode != http.StatusNotFound {
		t.Fatalf("deleting it again: %v", err)
	}
	err = client.Pull(ctx, &ollama.PullRequest{Model: "hf.co/owl-test/nothing-GGUF:F16"}, func(ollama.ProgressResponse) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("pulling what the hub lacks: %v", err)
	}
	// A server without a hub refuses pulls in words.
	off := testServer(t, Config{ModelsDir: t.TempDir()})
	ou, _ := url.Parse(off.URL)
	err = ollama.NewClient(ou, http.DefaultClient).Pull(ctx, &ollama.PullRequest{Model: "whisper:base.en"}, func(ollama.ProgressResponse) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "does not download models") {
		t.Fatalf("an offline server's pull: %v", err)
	}
}

func collectGenerate(ctx context.Context, c *ollama.Client, model string) (string, error) {
	var out strings.Builder
	stream := false
	err := c.Generate(ctx, &ollama.GenerateRequest{Model: model, Prompt: "Hello", Stream: &stream, Options: map[string]any{"num_predict": 4}},
		func(r ollama.GenerateResponse) error { out.WriteString(r.Response); return nil })
	return out.String(), err
}
