package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ollama "github.com/ollama/ollama/api"
	"github.com/ollama/ollama/parser"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/internal/hubtest"
	"github.com/owlengine/owl/models/hub"
	"github.com/owlengine/owl/models/testmodel"
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
	// A copy is a second name for the same file: it outlives the original.
	if err := client.Copy(ctx, &ollama.CopyRequest{Source: "tiny-F16", Destination: "my-tiny"}); err != nil {
		t.Fatal(err)
	}
	var se ollama.StatusError
	if err := client.Copy(ctx, &ollama.CopyRequest{Source: "tiny-F16", Destination: "my-tiny"}); !errors.As(err, &se) || se.StatusCode != http.StatusConflict {
		t.Fatalf("copying onto a taken name: %v", err)
	}
	if err := client.Copy(ctx, &ollama.CopyRequest{Source: "no-such", Destination: "x"}); !errors.As(err, &se) || se.StatusCode != http.StatusNotFound {
		t.Fatalf("copying what is not there: %v", err)
	}
	if err := client.Delete(ctx, &ollama.DeleteRequest{Model: "tiny-F16"}); err != nil {
		t.Fatal(err)
	}
	if list, _ := client.List(ctx); len(list.Models) != 1 || list.Models[0].Name != "my-tiny" {
		t.Fatalf("list after deleting the original: %+v", list)
	}
	if res, err := collectGenerate(ctx, client, "my-tiny"); err != nil || res == "" {
		t.Fatalf("the copy: %q %v", res, err)
	}
	if err := client.Delete(ctx, &ollama.DeleteRequest{Model: "my-tiny"}); err != nil {
		t.Fatal(err)
	}
	if list, _ := client.List(ctx); len(list.Models) != 0 {
		t.Fatalf("list after the delete: %+v", list)
	}
	if err := client.Push(ctx, &ollama.PushRequest{Model: "my-tiny"}, func(ollama.ProgressResponse) error { return nil }); err == nil ||
		!strings.Contains(err.Error(), "does not push models") {
		t.Fatalf("push: %v", err)
	}
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

// show lists a text model's template, default parameters and capabilities;
// options out of range are refused; a model of an architecture llama.cpp
// cannot run is the client's error, with its own code.
func TestOllamaShowOptionsAndArchitecture(t *testing.T) {
	dir := t.TempDir()
	if err := os.Link(filepath.Join(modelsDir, "seer.gguf"), filepath.Join(dir, "seer.gguf")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(modelsDir, "mmproj-seer.gguf"), filepath.Join(dir, "mmproj-seer.gguf")); err != nil {
		t.Fatal(err)
	}
	c := testmodel.TinyLlama()
	c.Arch = "notarch"
	if err := testmodel.WriteLlamaFile(filepath.Join(dir, "alien.gguf"), c); err != nil {
		t.Fatal(err)
	}
	ts := testServer(t, Config{ModelsDir: dir})
	u, _ := url.Parse(ts.URL)
	client := ollama.NewClient(u, http.DefaultClient)
	ctx := context.Background()
	show, err := client.Show(ctx, &ollama.ShowRequest{Model: "seer"})
	if err != nil {
		t.Fatal(err)
	}
	if show.Template == "" || !strings.Contains(show.Parameters, "temperature") || !strings.Contains(show.Modelfile, "FROM ") ||
		!slices.Contains(show.Capabilities, "completion") || !slices.Contains(show.Capabilities, "vision") {
		t.Fatalf("show: template %d bytes, parameters %q, modelfile %q, capabilities %v", len(show.Template), show.Parameters, show.Modelfile, show.Capabilities)
	}
	no := false
	for _, opts := range []map[string]any{{"top_k": -1}, {"num_ctx": 0}, {"top_p": 1.5}, {"num_batch": -4}, {"typical_p": 2}, {"num_predict": -3}, {"min_p": -0.1}} {
		err := client.Generate(ctx, &ollama.GenerateRequest{Model: "seer", Prompt: "hi", Stream: &no, Options: opts}, func(ollama.GenerateResponse) error { return nil })
		var se ollama.StatusError
		if !errors.As(err, &se) || se.StatusCode != http.StatusBadRequest || !strings.Contains(se.ErrorMessage, "options.") {
			t.Errorf("options %v: %v", opts, err)
		}
	}
	if err := client.Generate(ctx, &ollama.GenerateRequest{Model: "seer", Prompt: "hi", Stream: &no, Options: map[string]any{"num_ctx": 4096, "top_k": 0, "num_predict": -1}},
		func(ollama.GenerateResponse) error { return nil }); err != nil {
		t.Errorf("options in range: %v", err)
	}
	code, _, body := post(t, ts.URL+"/v1/chat/completions", "application/json", []byte(`{"model":"alien","messages":[{"role":"user","content":"hi"}]}`))
	msg, typ, errCode := openAIErr(t, body)
	if code != http.StatusBadRequest || errCode != "unsupported_model" || typ != "invalid_request_error" || !strings.Contains(msg, "notarch") {
		t.Fatalf("a model llama.cpp cannot run: %d %s", code, body)
	}
}

// modelfileCommand is the argument of a Modelfile's command name (model,
// system, template, a parameter's name, …) as ollama's parser reads it.
func modelfileCommand(t *testing.T, modelfile, name string) string {
	t.Helper()
	f, err := parser.ParseFile(strings.NewReader(modelfile))
	if err != nil {
		t.Fatalf("ollama's parser: %v\n%s", err, modelfile)
	}
	for _, c := range f.Commands {
		if c.Name == name {
			return c.Args
		}
	}
	return ""
}

// tinyFolderServer serves a folder holding tiny.gguf (its bytes returned)
// with an engine of its own: the models it loads are not the shared ones.
func tinyFolderServer(t *testing.T) (*httptest.Server, *ollama.Client, []byte) {
	t.Helper()
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(modelsDir, "tiny.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tiny.gguf"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	e := engine.New(engine.Options{Threads: 2, NumCtx: 1024, Parallel: 1, CacheDir: filepath.Join(t.TempDir(), "cache")})
	t.Cleanup(func() { e.Close() })
	ts := testServer(t, Config{ModelsDir: dir, Engine: e})
	u, _ := url.Parse(ts.URL)
	return ts, ollama.NewClient(u, http.DefaultClient), raw
}

// ollama's client creates a model from one the server holds, with a
// system prompt, parameters and opening messages: it is listed and shown
// with them, and its chats (ollama's and OpenAI's) equal the base model's
// with the system prompt, the messages and the options given by hand.
// What owl cannot create is refused in words.
func TestOllamaCreate(t *testing.T) {
	ts, client, raw := tinyFolderServer(t)
	ctx := t.Context()
	var status []string
	err := client.Create(ctx, &ollama.CreateRequest{Model: "pirate", From: "tiny", System: "You are a pirate.",
		Parameters: map[string]any{"temperature": 0, "num_predict": 5, "top_k": 1},
		Messages:   []ollama.Message{{Role: "user", Content: "Ahoy?"}, {Role: "assistant", Content: "Arr."}}},
		func(p ollama.ProgressResponse) error { status = append(status, p.Status); return nil })
	if err != nil || status[len(status)-1] != "success" {
		t.Fatalf("create: %v %v", err, status)
	}
	list, err := client.List(ctx)
	if err != nil || !slices.ContainsFunc(list.Models, func(m ollama.ListModelResponse) bool { return m.Name == "pirate" }) {
		t.Fatalf("list: %+v %v", list, err)
	}
	show, err := client.Show(ctx, &ollama.ShowRequest{Model: "pirate"})
	if err != nil || show.System != "You are a pirate." || !strings.Contains(show.Parameters, "num_predict") || len(show.Messages) != 2 ||
		modelfileCommand(t, show.Modelfile, "system") != "You are a pirate." || modelfileCommand(t, show.Modelfile, "temperature") != "0" {
		t.Fatalf("show: %v %+v", err, show)
	}

	chat := func(model string, msgs []ollama.Message, opts map[string]any) string {
		stream := false
		var out string
		if err := client.Chat(ctx, &ollama.ChatRequest{Model: model, Messages: msgs, Stream: &stream, Options: opts}, func(r ollama.ChatResponse) error {
			out += r.Message.Content
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	q := ollama.Message{Role: "user", Content: "Where is the treasure?"}
	got := chat("pirate", []ollama.Message{q}, nil)
	want := chat("tiny", []ollama.Message{{Role: "system", Content: "You are a pirate."}, {Role: "user", Content: "Ahoy?"}, {Role: "assistant", Content: "Arr."}, q},
		map[string]any{"temperature": 0, "num_predict": 5, "top_k": 1})
	if got != want {
		t.Fatalf("the created model said %q, the base with its settings %q", got, want)
	}
	// A request's options win over the model's.
	if longer := chat("pirate", []ollama.Message{q}, map[string]any{"num_predict": 9}); longer == got {
		t.Fatalf("num_predict 9 gave the same %q", longer)
	}
	// OpenAI's chat gets the same.
	code, _, body := post(t, ts.URL+"/v1/chat/completions", "application/json",
		[]byte(`{"model":"pirate","messages":[{"role":"user","content":"Where is the treasure?"}]}`))
	if code != 200 || answerOf(t, "/v1/chat/completions", body) != want {
		t.Fatalf("OpenAI chat: %d %s, want %q", code, body, want)
	}

	var se ollama.StatusError
	for _, bad := range []struct {
		req  ollama.CreateRequest
		code int
		want string
	}{
		{ollama.CreateRequest{Model: "x", From: "tiny", Template: "{{ .Prompt "}, 400, "template"},
		{ollama.CreateRequest{Model: "x", From: "tiny", Parameters: map[string]any{"top_k": -3}}, 400, "parameters.top_k"},
		{ollama.CreateRequest{Model: "x", From: "tiny", Parameters: map[string]any{"no_such": 1}}, 400, "no_such"},
		{ollama.CreateRequest{Model: "x", From: "nope"}, 404, "not found"},
		{ollama.CreateRequest{Model: "x", Files: map[string]string{"m.gguf": "sha256:" + strings.Repeat("0", 64)}}, 400, "POST /api/blobs"},
		{ollama.CreateRequest{Model: "x", From: "tiny", Quantize: "q4_K_M"}, 501, "quantize"},
	} {
		err := client.Create(ctx, &bad.req, func(ollama.ProgressResponse) error { return nil })
		if !errors.As(err, &se) || se.StatusCode != bad.code || !strings.Contains(se.Error(), bad.want) {
			t.Errorf("create %+v: %v, want %d %q", bad.req, err, bad.code, bad.want)
		}
	}
	if err := client.Delete(ctx, &ollama.DeleteRequest{Model: "pirate"}); err != nil {
		t.Fatal(err)
	}

	// FROM a file, as ollama's command line sends it: the file uploaded
	// as a blob (its digest checked), then created from.
	sum := sha256.Sum256(raw)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	if err := client.CreateBlob(ctx, "sha256:"+strings.Repeat("1", 64), bytes.NewReader(raw)); !errors.As(err, &se) || se.StatusCode != 400 {
		t.Fatalf("a blob under the wrong digest: %v", err)
	}
	if err := client.CreateBlob(ctx, digest, bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	if err := client.CreateBlob(ctx, digest, bytes.NewReader(raw)); err != nil { // HEAD says it is there
		t.Fatal(err)
	}
	if err := client.Create(ctx, &ollama.CreateRequest{Model: "from-file", Files: map[string]string{"model.gguf": digest}, System: "You are a pirate.",
		Parameters: map[string]any{"temperature": 0, "num_predict": 5, "top_k": 1},
		Messages:   []ollama.Message{{Role: "user", Content: "Ahoy?"}, {Role: "assistant", Content: "Arr."}}}, func(ollama.ProgressResponse) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if fromFile := chat("from-file", []ollama.Message{q}, nil); fromFile != want {
		t.Fatalf("the model created from a file said %q, want %q", fromFile, want)
	}
}

// A Modelfile's TEMPLATE (ollama's Go template form) renders the created
// model's prompts: its chats equal raw generations of the prompt the
// template makes by hand, /api/show and the Modelfile give it back, a
// model created from it keeps it, and /api/generate takes one per request.
func TestOllamaCreateTemplate(t *testing.T) {
	_, client, _ := tinyFolderServer(t)
	ctx := t.Context()
	const tmpl = "{{ range .Messages }}{{ if eq .Role \"user\" }}[user]{{ else }}[{{ .Role }}]{{ end }} {{ .Content }}\n{{ end }}[assistant]"
	params := map[string]any{"temperature": 0, "num_predict": 6, "top_k": 1}
	if err := client.Create(ctx, &ollama.CreateRequest{Model: "plain", From: "tiny", Template: tmpl, System: "Be brief.", Parameters: params},
		func(ollama.ProgressResponse) error { return nil }); err != nil {
		t.Fatal(err)
	}
	no := false
	generate := func(req ollama.GenerateRequest) string {
		req.Stream = &no
		var out string
		if err := client.Generate(ctx, &req, func(r ollama.GenerateResponse) error { out += r.Response; return nil }); err != nil {
			t.Fatalf("generate %+v: %v", req, err)
		}
		return out
	}
	want := generate(ollama.GenerateRequest{Model: "tiny", Raw: true, Prompt: "[system] Be brief.\n[user] Where is the owl?\n[assistant]", Options: params})
	stream := false
	var got string
	if err := client.Chat(ctx, &ollama.ChatRequest{Model: "plain", Stream: &stream, Messages: []ollama.Message{{Role: "user", Content: "Where is the owl?"}}},
		func(r ollama.ChatResponse) error { got += r.Message.Content; return nil }); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("chat with the template said %q, the raw prompt %q", got, want)
	}
	if g := generate(ollama.GenerateRequest{Model: "plain", Prompt: "Where is the owl?"}); g != want {
		t.Fatalf("generate with the template said %q, want %q", g, want)
	}
	// The same template given with a request to the base model.
	if g := generate(ollama.GenerateRequest{Model: "tiny", Prompt: "Where is the owl?", System: "Be brief.", Template: tmpl, Options: params}); g != want {
		t.Fatalf("generate with a request's template said %q, want %q", g, want)
	}
	show, err := client.Show(ctx, &ollama.ShowRequest{Model: "plain"})
	// The Modelfile reads back, by ollama's parser, to the same template.
	if err != nil || show.Template != tmpl || modelfileCommand(t, show.Modelfile, "template") != tmpl || slices.Contains(show.Capabilities, "tools") {
		t.Fatalf("show: %v template %q modelfile %q capabilities %v", err, show.Template, show.Modelfile, show.Capabilities)
	}
	// Created from the created model: the template carries over.
	if err := client.Create(ctx, &ollama.CreateRequest{Model: "plain2", From: "plain"}, func(ollama.ProgressResponse) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if show, err := client.Show(ctx, &ollama.ShowRequest{Model: "plain2"}); err != nil || show.Template != tmpl {
		t.Fatalf("show plain2: %v %q", err, show.Template)
	}
	var se ollama.StatusError
	if err := client.Generate(ctx, &ollama.GenerateRequest{Model: "tiny", Prompt: "x", Template: "{{ if }}", Stream: &no}, func(ollama.GenerateResponse) error { return nil }); !errors.As(err, &se) || se.StatusCode != 400 {
		t.Fatalf("a broken template: %v", err)
	}
}
