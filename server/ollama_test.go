package server

import (
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ollama "github.com/ollama/ollama/api"

	"github.com/owlengine/owl/engine"
)

// ollamaClient is ollama's own client pointed at ts.
func ollamaClient(t testing.TB, ts string) *ollama.Client {
	t.Helper()
	u, err := url.Parse(ts)
	if err != nil {
		t.Fatal(err)
	}
	return ollama.NewClient(u, &http.Client{Timeout: 60 * time.Second})
}

// greedy are the options of a reproducible answer of at most n tokens.
func greedy(n int) map[string]any {
	return map[string]any{"temperature": 0, "seed": 42, "num_predict": n}
}

// statusError is err as an ollama.StatusError, or a test failure.
func statusError(t testing.TB, err error) ollama.StatusError {
	t.Helper()
	var se ollama.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not an ollama.StatusError", err, err)
	}
	return se
}

func TestOllamaChat(t *testing.T) {
	ts := testServer(t, Config{})
	c := ollamaClient(t, ts.URL)
	ctx := t.Context()
	msgs := []ollama.Message{{Role: "system", Content: "You are brief."}, {Role: "user", Content: "Tell me about owls"}}

	// Not streamed: one response, done, with counts.
	var whole []ollama.ChatResponse
	err := c.Chat(ctx, &ollama.ChatRequest{Model: "tiny", Messages: msgs, Stream: new(bool), Options: greedy(12)}, func(r ollama.ChatResponse) error {
		whole = append(whole, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(whole) != 1 {
		t.Fatalf("%d responses to a request not streamed", len(whole))
	}
	w := whole[0]
	if !w.Done || w.Model != "tiny" || w.Message.Role != "assistant" || w.Message.Content == "" || w.CreatedAt.IsZero() {
		t.Fatalf("response %+v", w)
	}
	if w.EvalCount <= 0 || w.EvalCount > 12 || w.PromptEvalCount <= 0 || w.TotalDuration <= 0 {
		t.Fatalf("metrics %+v", w.Metrics)
	}
	if (w.DoneReason == "length") != (w.EvalCount == 12) || (w.DoneReason != "length" && w.DoneReason != "stop") {
		t.Fatalf("done reason %q after %d tokens", w.DoneReason, w.EvalCount)
	}

	// Streamed (ollama's default): several pieces that add up to the same
	// greedy answer, then a last response that is done.
	var pieces []string
	var last ollama.ChatResponse
	err = c.Chat(ctx, &ollama.ChatRequest{Model: "tiny", Messages: msgs, Options: greedy(12)}, func(r ollama.ChatResponse) error {
		if last.Done {
			t.Errorf("a response after the last one: %+v", r)
		}
		if !r.Done {
			pieces = append(pieces, r.Message.Content)
		}
		last = r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pieces) < 2 {
		t.Fatalf("%d pieces streamed, want several", len(pieces))
	}
	if got := strings.Join(pieces, ""); got != w.Message.Content {
		t.Fatalf("streamed %q, not streamed %q", got, w.Message.Content)
	}
	if !last.Done || last.Message.Content != "" || last.DoneReason != w.DoneReason || last.EvalCount != w.EvalCount {
		t.Fatalf("last streamed response %+v, the whole one %+v", last, w)
	}

	// The answer continues a conversation: with the first answer as the
	// assistant's turn, the model is asked again.
	more := append(slices.Clone(msgs), ollama.Message{Role: "assistant", Content: w.Message.Content}, ollama.Message{Role: "user", Content: "And more?"})
	err = c.Chat(ctx, &ollama.ChatRequest{Model: "tiny:latest", Messages: more, Stream: new(bool), Options: greedy(4)}, func(r ollama.ChatResponse) error {
		if !r.Done || r.EvalCount == 0 || r.PromptEvalCount == 0 {
			t.Errorf("follow-up %+v", r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOllamaChatImage(t *testing.T) {
	ts := testServer(t, Config{})
	c := ollamaClient(t, ts.URL)
	ctx := t.Context()
	img := ollama.ImageData(pngImage(t, 28, 20))
	req := func(model string) *ollama.ChatRequest {
		return &ollama.ChatRequest{Model: model, Stream: new(bool), Options: greedy(4),
			Messages: []ollama.Message{{Role: "user", Content: "What is in this picture?", Images: []ollama.ImageData{img}}}}
	}
	var res ollama.ChatResponse
	if err := c.Chat(ctx, req("seer"), func(r ollama.ChatResponse) error { res = r; return nil }); err != nil {
		t.Fatal(err)
	}
	// The image's cells count as prompt tokens.
	if !res.Done || res.EvalCount == 0 || res.PromptEvalCount <= 20 {
		t.Fatalf("chat with an image: %+v", res)
	}
	// A text-only model refuses it with a clear client error.
	err := c.Chat(ctx, req("tiny"), func(r ollama.ChatResponse) error {
		t.Errorf("a response to an image for a text-only model: %+v", r)
		return nil
	})
	if se := statusError(t, err); se.StatusCode != http.StatusBadRequest || !strings.Contains(se.ErrorMessage, "projector") {
		t.Fatalf("image for a text-only model: %+v", se)
	}
	// Streamed, the refusal is still a status, not an event.
	r := req("tiny")
	r.Stream = nil
	err = c.Chat(ctx, r, func(ollama.ChatResponse) error { return nil })
	if se := statusError(t, err); se.StatusCode != http.StatusBadRequest {
		t.Fatalf("image for a text-only model, streamed: %+v", se)
	}
}

func TestOllamaGenerate(t *testing.T) {
	ts := testServer(t, Config{})
	c := ollamaClient(t, ts.URL)
	ctx := t.Context()
	var pieces []string
	var last ollama.GenerateResponse
	err := c.Generate(ctx, &ollama.GenerateRequest{Model: "tiny", Prompt: "Once upon a time", Options: greedy(10)}, func(r ollama.GenerateResponse) error {
		if !r.Done {
			pieces = append(pieces, r.Response)
		}
		last = r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pieces) < 2 || !last.Done || last.EvalCount == 0 || last.EvalCount > 10 || last.Model != "tiny" {
		t.Fatalf("streamed %q, last %+v", pieces, last)
	}
	// raw continues the prompt as is; not streamed, it is one response.
	var raw []ollama.GenerateResponse
	err = c.Generate(ctx, &ollama.GenerateRequest{Model: "tiny", Prompt: "Once upon a time", Raw: true, Stream: new(bool), Options: greedy(10)},
		func(r ollama.GenerateResponse) error { raw = append(raw, r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 1 || !raw[0].Done || raw[0].Response == "" || raw[0].EvalCount == 0 {
		t.Fatalf("raw generation %+v", raw)
	}
	// An empty prompt only asks for the model, as ollama's clients do to
	// load it.
	var load ollama.GenerateResponse
	if err := c.Generate(ctx, &ollama.GenerateRequest{Model: "tiny"}, func(r ollama.GenerateResponse) error { load = r; return nil }); err != nil {
		t.Fatal(err)
	}
	if !load.Done || load.DoneReason != "load" || load.Response != "" {
		t.Fatalf("load %+v", load)
	}
	// Options owl cannot honor are refused.
	err = c.Generate(ctx, &ollama.GenerateRequest{Model: "tiny", Prompt: "hi", Options: map[string]any{"temperature": -1}}, func(ollama.GenerateResponse) error { return nil })
	if se := statusError(t, err); se.StatusCode != http.StatusBadRequest || !strings.Contains(se.ErrorMessage, "temperature") {
		t.Fatalf("negative temperature: %+v", se)
	}
}

func TestOllamaModels(t *testing.T) {
	ts := testServer(t, Config{Version: "1.2.3"})
	c := ollamaClient(t, ts.URL)
	ctx := t.Context()

	v, err := c.Version(ctx)
	if err != nil || v != "1.2.3" {
		t.Fatalf("version %q, %v", v, err)
	}
	// Every ollama command first checks the server with HEAD /.
	if err := c.Heartbeat(ctx); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	if code, body := get(t, ts.URL+"/"); code != 200 || !strings.Contains(string(body), "owl is running") {
		t.Fatalf("GET /: %d %s", code, body)
	}
	if code, _ := get(t, ts.URL+"/nothing"); code != 404 {
		t.Fatalf("GET /nothing: %d", code)
	}

	list, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range list.Models {
		names = append(names, m.Name)
		if m.Model != m.Name || m.Size <= 0 || len(m.Digest) != 64 || m.ModifiedAt.IsZero() {
			t.Errorf("listed %+v", m)
		}
		wantFormat := "gguf"
		if strings.HasPrefix(m.Name, "ggml-") {
			wantFormat = "ggml"
		}
		if m.Details.Format != wantFormat {
			t.Errorf("%s: format %q, want %q", m.Name, m.Details.Format, wantFormat)
		}
	}
	if got, want := strings.Join(names, " "), "ggml-micro ggml-micro.en seer tiny"; got != want {
		t.Fatalf("models %q, want %q (projectors are not listed)", got, want)
	}

	show, err := c.Show(ctx, &ollama.ShowRequest{Model: "seer"})
	if err != nil {
		t.Fatal(err)
	}
	caps := make([]string, 0, len(show.Capabilities))
	for _, cp := range show.Capabilities {
		caps = append(caps, string(cp))
	}
	arch, _ := show.ModelInfo["general.architecture"].(string)
	if strings.Join(caps, " ") != "completion vision" || arch == "" || show.Details.Family != arch ||
		!slices.Contains(show.Details.Families, "clip") || show.ProjectorInfo["name"] != "mmproj-seer" || show.ModifiedAt.IsZero() {
		t.Fatalf("show seer: %+v", show)
	}
	if n, ok := show.ModelInfo["general.parameter_count"].(float64); !ok || n <= 0 {
		t.Fatalf("show seer: parameter count %v", show.ModelInfo["general.parameter_count"])
	}
	// What ollama's show prints, read the way it reads it (a missing key or
	// a number sent as text crashes its command line).
	for _, k := range []string{arch + ".context_length", arch + ".embedding_length"} {
		if _, ok := show.ModelInfo[k].(float64); !ok {
			t.Errorf("model_info %s = %#v, want a number", k, show.ModelInfo[k])
		}
	}
	if pa, _ := show.ProjectorInfo["general.architecture"].(string); pa != "clip" {
		t.Errorf("projector_info architecture %#v", show.ProjectorInfo["general.architecture"])
	}
	for _, k := range []string{"general.parameter_count", "clip.vision.embedding_length", "clip.vision.projection_dim"} {
		if v, ok := show.ProjectorInfo[k].(float64); !ok || v <= 0 {
			t.Errorf("projector_info %s = %#v, want a positive number", k, show.ProjectorInfo[k])
		}
	}
	show, err = c.Show(ctx, &ollama.ShowRequest{Name: "ggml-micro.en"})
	if err != nil {
		t.Fatal(err)
	}
	if len(show.Capabilities) != 1 || show.Capabilities[0] != "transcription" || show.ModelInfo["general.architecture"] != "whisper" {
		t.Fatalf("show ggml-micro.en: %+v", show)
	}
}

// An unknown model is a 404 ollama.StatusError from every call that names one.
func TestOllamaUnknownModel(t *testing.T) {
	ts := testServer(t, Config{})
	c := ollamaClient(t, ts.URL)
	ctx := t.Context()
	check := func(what string, err error) {
		t.Helper()
		se := statusError(t, err)
		if se.StatusCode != http.StatusNotFound || !strings.Contains(se.ErrorMessage, `"nope"`) || !strings.Contains(se.ErrorMessage, "not found") {
			t.Errorf("%s: %+v", what, se)
		}
	}
	msgs := []ollama.Message{{Role: "user", Content: "hi"}}
	check("chat", c.Chat(ctx, &ollama.ChatRequest{Model: "nope", Messages: msgs}, func(ollama.ChatResponse) error { return nil }))
	check("chat not streamed", c.Chat(ctx, &ollama.ChatRequest{Model: "nope", Messages: msgs, Stream: new(bool)}, func(ollama.ChatResponse) error { return nil }))
	check("generate", c.Generate(ctx, &ollama.GenerateRequest{Model: "nope", Prompt: "hi"}, func(ollama.GenerateResponse) error { return nil }))
	_, err := c.Show(ctx, &ollama.ShowRequest{Model: "nope"})
	check("show", err)
	// A speech model cannot chat.
	err = c.Chat(ctx, &ollama.ChatRequest{Model: "ggml-micro.en", Messages: msgs}, func(ollama.ChatResponse) error { return nil })
	if se := statusError(t, err); se.StatusCode != http.StatusBadRequest || !strings.Contains(se.ErrorMessage, "not a text model") {
		t.Fatalf("chat with a speech model: %+v", se)
	}
	// Routes ollama has and owl does not are 404s in ollama's shape.
	_, err = c.Whoami(ctx)
	if se := statusError(t, err); se.StatusCode != http.StatusNotFound || !strings.Contains(se.ErrorMessage, "no endpoint") {
		t.Fatalf("whoami: %+v", se)
	}
	// Copying names store entries; a plain file is refused in words.
	err = c.Copy(ctx, &ollama.CopyRequest{Source: "tiny", Destination: "tiny2"})
	if se := statusError(t, err); se.StatusCode != http.StatusBadRequest || !strings.Contains(se.ErrorMessage, "not a store entry") {
		t.Fatalf("copy: %+v", se)
	}
}

// /api/ps lists the models loaded and when they expire, which follows the
// requests' keep_alive.
func TestOllamaRunningAndKeepAlive(t *testing.T) {
	// An engine of its own, so that unloading does not disturb other tests.
	e := engine.New(engine.Options{Threads: 2, NumCtx: 512, Parallel: 1, CacheDir: filepath.Join(t.TempDir(), "cache")})
	t.Cleanup(func() { e.Close() })
	ts := testServer(t, Config{Engine: e})
	c := ollamaClient(t, ts.URL)
	ctx := t.Context()

	ps, err := c.ListRunning(ctx)
	if err != nil || len(ps.Models) != 0 {
		t.Fatalf("before any request: %+v %v", ps, err)
	}
	chat := func(keepAlive *ollama.Duration) {
		t.Helper()
		err := c.Chat(ctx, &ollama.ChatRequest{Model: "tiny", Stream: new(bool), Options: greedy(2), KeepAlive: keepAlive,
			Messages: []ollama.Message{{Role: "user", Content: "hi"}}}, func(ollama.ChatResponse) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
	}
	running := func() *ollama.ProcessModelResponse {
		t.Helper()
		ps, err := c.ListRunning(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range ps.Models {
			if m.Name == "tiny" {
				return &ps.Models[i]
			}
		}
		return nil
	}

	before := time.Now()
	chat(&ollama.Duration{Duration: 42 * time.Minute})
	m := running()
	if m == nil || m.Model != "tiny" || m.Size <= 0 || len(m.Digest) != 64 || m.Details.Format != "gguf" || m.ContextLength != 512 {
		t.Fatalf("after a chat: %+v", m)
	}
	if exp := m.ExpiresAt; exp.Before(before.Add(42*time.Minute-time.Second)) || exp.After(time.Now().Add(42*time.Minute+time.Second)) {
		t.Fatalf("expires at %v, want 42 minutes after the request", exp)
	}

	// A negative keep_alive keeps the model loaded for good.
	chat(&ollama.Duration{Duration: -1})
	if m := running(); m == nil || m.ExpiresAt.Before(time.Now().AddDate(10, 0, 0)) {
		t.Fatalf("kept forever: %+v", m)
	}

	// keep_alive 0 unloads the model once the request is done.
	chat(&ollama.Duration{Duration: 0})
	if m := running(); m != nil {
		t.Fatalf("still loaded after keep_alive 0: %+v", m)
	}
	if met := e.Metrics(); met.Unloads != 1 || len(met.Models) != 0 {
		t.Fatalf("engine after keep_alive 0: %+v", met)
	}

	// A chat without messages loads the model ahead of use (ollama run
	// does this), and one with keep_alive 0 unloads it (ollama stop).
	var load ollama.ChatResponse
	if err := c.Chat(ctx, &ollama.ChatRequest{Model: "tiny", KeepAlive: &ollama.Duration{Duration: time.Hour}},
		func(r ollama.ChatResponse) error { load = r; return nil }); err != nil {
		t.Fatal(err)
	}
	if m := running(); load.DoneReason != "load" || m == nil || m.ExpiresAt.Before(time.Now().Add(59*time.Minute)) {
		t.Fatalf("load: %+v, running %+v", load, m)
	}
	var stop ollama.GenerateResponse
	if err := c.Generate(ctx, &ollama.GenerateRequest{Model: "tiny", KeepAlive: &ollama.Duration{Duration: 0}},
		func(r ollama.GenerateResponse) error { stop = r; return nil }); err != nil {
		t.Fatal(err)
	}
	if m := running(); stop.DoneReason != "unload" || m != nil {
		t.Fatalf("stop: %+v, running %+v", stop, m)
	}
	if met := e.Metrics(); met.Loads != 2 || met.Unloads != 2 {
		t.Fatalf("engine after load and stop: %+v", met)
	}
}
