package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ollama "github.com/ollama/ollama/api"
	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/testmodel"
)

// thinkingBackend makes the tiny model think: every chat's output is held
// by a grammar to a reasoning between <think> markers and an answer, as a
// reasoning model writes. The rest (the engine's parsing, the server's
// fields) is what serves real models.
type thinkingBackend struct{ Backend }

func (b thinkingBackend) Chat(ctx context.Context, req engine.ChatRequest, onChunk func(engine.Chunk) error) (engine.Result, error) {
	req.Grammar = `root ::= "<think>" [a-z ]{4,12} "</think>" [a-z ]{3,10}`
	req.Sampling.Temperature, req.Sampling.Seed = 0.8, 5
	return b.Backend.Chat(ctx, req, onChunk)
}

// A thinking model's reasoning reaches OpenAI clients as reasoning_content
// and ollama's as thinking, streamed and whole, apart from the answer;
// think on a model that does not think is refused.
func TestThinkingOverBothAPIs(t *testing.T) {
	dir := t.TempDir()
	c := testmodel.TinyLlama()
	c.ChatTpl = testmodel.ChatMLTemplate + "{% if add_generation_prompt and enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
	if err := testmodel.WriteLlamaFile(filepath.Join(dir, "thinker.gguf"), c); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(modelsDir, "tiny.gguf"), filepath.Join(dir, "tiny.gguf")); err != nil {
		t.Fatal(err)
	}
	ts := testServer(t, Config{ModelsDir: dir, Engine: thinkingBackend{sharedEngine}})
	ctx := context.Background()

	oc := openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithAPIKey("x"))
	params := openai.ChatCompletionNewParams{Model: "thinker", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Why is the sky blue?")}}
	resp, err := oc.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	var reasoning string
	if f, ok := resp.Choices[0].Message.JSON.ExtraFields["reasoning_content"]; ok {
		json.Unmarshal([]byte(f.Raw()), &reasoning)
	}
	answer := resp.Choices[0].Message.Content
	if strings.TrimSpace(reasoning) == "" || answer == "" || strings.Contains(answer, "think>") {
		t.Fatalf("reasoning %q, answer %q", reasoning, answer)
	}
	stream := oc.Chat.Completions.NewStreaming(ctx, params)
	var sr, sa strings.Builder
	for stream.Next() {
		ch := stream.Current()
		if len(ch.Choices) == 0 {
			continue
		}
		sa.WriteString(ch.Choices[0].Delta.Content)
		if f, ok := ch.Choices[0].Delta.JSON.ExtraFields["reasoning_content"]; ok {
			var d string
			json.Unmarshal([]byte(f.Raw()), &d)
			sr.WriteString(d)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if sr.String() != reasoning || sa.String() != answer {
		t.Fatalf("streamed %q / %q, whole %q / %q", sr.String(), sa.String(), reasoning, answer)
	}

	u, _ := url.Parse(ts.URL)
	cl := ollama.NewClient(u, http.DefaultClient)
	no := false
	var chat ollama.ChatResponse
	err = cl.Chat(ctx, &ollama.ChatRequest{Model: "thinker", Messages: []ollama.Message{{Role: "user", Content: "Why is the sky blue?"}}, Stream: &no,
		Think: &ollama.ThinkValue{Value: true}}, func(r ollama.ChatResponse) error { chat = r; return nil })
	if err != nil || chat.Message.Thinking != reasoning || chat.Message.Content != answer {
		t.Fatalf("ollama chat: %+v %v (want %q / %q)", chat.Message, err, reasoning, answer)
	}
	var thought, said strings.Builder
	err = cl.Generate(ctx, &ollama.GenerateRequest{Model: "thinker", Prompt: "Why is the sky blue?", Think: &ollama.ThinkValue{Value: "high"}},
		func(r ollama.GenerateResponse) error {
			thought.WriteString(r.Thinking)
			said.WriteString(r.Response)
			return nil
		})
	if err != nil || thought.String() != reasoning || said.String() != answer {
		t.Fatalf("ollama generate: %q / %q %v", thought.String(), said.String(), err)
	}
	show, err := cl.Show(ctx, &ollama.ShowRequest{Model: "thinker"})
	if err != nil || !slices.Contains(show.Capabilities, "thinking") {
		t.Fatalf("show: %v %v", show.Capabilities, err)
	}
	err = cl.Chat(ctx, &ollama.ChatRequest{Model: "tiny", Messages: []ollama.Message{{Role: "user", Content: "hi"}}, Stream: &no,
		Think: &ollama.ThinkValue{Value: true}}, func(ollama.ChatResponse) error { return nil })
	var se ollama.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusBadRequest || !strings.Contains(se.ErrorMessage, "does not think") {
		t.Fatalf("think on a model that does not: %v", err)
	}
	code, _, body := post(t, ts.URL+"/v1/chat/completions", "application/json", []byte(`{"model":"thinker","reasoning_effort":"extreme","messages":[{"role":"user","content":"hi"}]}`))
	if msg, _, _ := openAIErr(t, body); code != http.StatusBadRequest || !strings.Contains(msg, "reasoning_effort") {
		t.Fatalf("a bad reasoning_effort: %d %s", code, body)
	}
}
