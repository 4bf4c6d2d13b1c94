package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ollama "github.com/ollama/ollama/api"
	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/testmodel"
)

// callerServer serves "caller", the tiny model with Llama 3.2's chat
// template, on an engine of its own: the tools' definitions make long
// prompts in the tiny model's tokens.
func callerServer(t *testing.T) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	tpl, err := os.ReadFile(filepath.Join("..", "llm", "testdata", "templates", "llama-3.2.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	c := testmodel.TinyLlama()
	c.ChatTpl = string(tpl)
	if err := testmodel.WriteLlamaFile(filepath.Join(dir, "caller.gguf"), c); err != nil {
		t.Fatal(err)
	}
	e := engine.New(engine.Options{Threads: 2, NumCtx: 4096, Parallel: 2, CacheDir: filepath.Join(dir, "cache")})
	t.Cleanup(func() { e.Close() })
	return testServer(t, Config{ModelsDir: dir, Engine: e})
}

// Tool calling through both APIs with their official clients, on the tiny
// model with Llama 3.2's template: required and named choices give a call
// that parses, streamed deltas reassemble into the same call, and the
// tool's result goes back.
func TestToolCallingOverBothAPIs(t *testing.T) {
	ts := callerServer(t)
	ctx := context.Background()
	oc := openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0))
	tools := []openai.ChatCompletionToolUnionParam{
		openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_weather", Description: openai.String("The weather of a city"),
			Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}}}),
		openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_time", Description: openai.String("The time in a zone"),
			Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"zone": map[string]any{"type": "string"}}}}),
	}
	params := openai.ChatCompletionNewParams{Model: "caller", Tools: tools, Seed: openai.Int(3), MaxTokens: openai.Int(120),
		Messages:   []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris?")},
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}}
	resp, err := oc.Chat.Completions.New(ctx, params)
	if err != nil {
		b, _ := json.Marshal(params)
		_, _, body := post(t, ts.URL+"/v1/chat/completions", "application/json", b)
		t.Fatalf("%v: %s", err, body)
	}
	calls := resp.Choices[0].Message.ToolCalls
	if len(calls) != 1 || resp.Choices[0].FinishReason != "tool_calls" || calls[0].ID == "" || !json.Valid([]byte(calls[0].Function.Arguments)) ||
		(calls[0].Function.Name != "get_weather" && calls[0].Function.Name != "get_time") {
		t.Fatalf("required: %+v (finish %s)", calls, resp.Choices[0].FinishReason)
	}
	// Streamed, the deltas add up to the same call.
	stream := oc.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	sc := acc.Choices[0].Message.ToolCalls
	if len(sc) != 1 || sc[0].Function.Name != calls[0].Function.Name || sc[0].Function.Arguments != calls[0].Function.Arguments {
		t.Fatalf("streamed %+v, whole %+v", sc, calls)
	}
	// Named.
	params.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfFunctionToolChoice: &openai.ChatCompletionNamedToolChoiceParam{
		Function: openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_time"}}}
	named, err := oc.Chat.Completions.New(ctx, params)
	if err != nil || len(named.Choices[0].Message.ToolCalls) != 1 || named.Choices[0].Message.ToolCalls[0].Function.Name != "get_time" {
		t.Fatalf("named: %+v %v", named, err)
	}
	// The result goes back, and the answer comes.
	call := named.Choices[0].Message.ToolCalls[0]
	back := openai.ChatCompletionNewParams{Model: "caller", Tools: tools, MaxTokens: openai.Int(6), Messages: []openai.ChatCompletionMessageParamUnion{
		openai.UserMessage("Weather in Paris?"), named.Choices[0].Message.ToParam(), openai.ToolMessage("12:00 CET", call.ID)}}
	answer, err := oc.Chat.Completions.New(ctx, back)
	if err != nil || answer.Usage.PromptTokens <= named.Usage.PromptTokens {
		t.Fatalf("with the result: %+v %v", answer, err)
	}
	// A tool the request does not offer cannot be chosen; a model whose
	// template takes no tools refuses them.
	code, _, body := post(t, ts.URL+"/v1/chat/completions", "application/json",
		[]byte(`{"model":"caller","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"a"}}],"tool_choice":{"type":"function","function":{"name":"b"}}}`))
	if code != http.StatusBadRequest || !strings.Contains(string(body), "tool_choice") {
		t.Fatalf("an unknown tool choice: %d %s", code, body)
	}
	plain := testServer(t, Config{})
	code, _, body = post(t, plain.URL+"/v1/chat/completions", "application/json",
		[]byte(`{"model":"tiny","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"a"}}]}`))
	if code != http.StatusBadRequest || !strings.Contains(string(body), "does not take tools") {
		t.Fatalf("tools on ChatML: %d %s", code, body)
	}

	// ollama's client: tools offered (the model answers as it likes), and a
	// conversation holding a call and its result.
	u, _ := url.Parse(ts.URL)
	cl := ollama.NewClient(u, http.DefaultClient)
	var otools ollama.Tools
	json.Unmarshal([]byte(`[{"type":"function","function":{"name":"get_time","description":"The time in a zone","parameters":{"type":"object","properties":{"zone":{"type":"string"}}}}}]`), &otools)
	args := ollama.NewToolCallFunctionArguments()
	args.Set("zone", "CET")
	no := false
	var got ollama.ChatResponse
	err = cl.Chat(ctx, &ollama.ChatRequest{Model: "caller", Tools: otools, Stream: &no, Options: map[string]any{"num_predict": 6}, Messages: []ollama.Message{
		{Role: "user", Content: "Time?"},
		{Role: "assistant", ToolCalls: []ollama.ToolCall{{Function: ollama.ToolCallFunction{Name: "get_time", Arguments: args}}}},
		{Role: "tool", Content: "12:00", ToolName: "get_time"}}}, func(r ollama.ChatResponse) error { got = r; return nil })
	if err != nil || !got.Done || got.PromptEvalCount < 20 {
		t.Fatalf("ollama chat with tools: %+v %v", got, err)
	}
}
