package engine

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/owlengine/owl/llm"
	"github.com/owlengine/owl/models/testmodel"
)

// Tool calling through the engine with Llama 3.2's and Qwen 3's real
// templates on the tiny model: a required call always parses (a grammar
// holds the answer to the template's call form), a named one calls that
// tool, streamed calls are the final ones, none offers no tools, and a
// tool's result goes back into the conversation.
func TestChatTools(t *testing.T) {
	e := New(Options{Threads: 2, NumCtx: 2048, Parallel: 1, CacheDir: t.TempDir()})
	t.Cleanup(func() { e.Close() })
	var tools []Tool
	if err := json.Unmarshal([]byte(`[{"type":"function","function":{"name":"get_weather","description":"The weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},
		{"type":"function","function":{"name":"get_time","description":"The time in a zone","parameters":{"type":"object","properties":{"zone":{"type":"string"}}}}}]`), &tools); err != nil {
		t.Fatal(err)
	}
	for _, family := range []string{"llama-3.2.jinja", "qwen3.jinja"} {
		t.Run(family, func(t *testing.T) {
			tpl, err := os.ReadFile(filepath.Join("..", "llm", "testdata", "templates", family))
			if err != nil {
				t.Fatal(err)
			}
			c := testmodel.TinyLlama()
			c.ChatTpl = string(tpl)
			path := filepath.Join(t.TempDir(), "m.gguf")
			if err := testmodel.WriteLlamaFile(path, c); err != nil {
				t.Fatal(err)
			}
			msgs := []Message{{Role: "user", Content: "Weather in Paris?"}}
			s := llm.DefaultSampling()
			s.Seed = 11
			opts := GenerateOptions{Sampling: s, MaxTokens: 120}
			var streamed []ToolCall
			res, err := e.Chat(context.Background(), ChatRequest{Model: path, Messages: msgs, Tools: tools, ToolChoice: "required", GenerateOptions: opts},
				func(ch Chunk) error { streamed = append(streamed, ch.ToolCalls...); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if len(res.ToolCalls) != 1 || res.FinishReason != FinishToolCalls || res.ToolCalls[0].ID == "" ||
				!slices.ContainsFunc(tools, func(t Tool) bool { return t.Function.Name == res.ToolCalls[0].Function.Name }) {
				t.Fatalf("required: %+v, finish %s, text %q", res.ToolCalls, res.FinishReason, res.Text)
			}
			if len(streamed) != 1 || streamed[0].ID != res.ToolCalls[0].ID {
				t.Fatalf("streamed %+v, whole %+v", streamed, res.ToolCalls)
			}
			named, err := e.Chat(context.Background(), ChatRequest{Model: path, Messages: msgs, Tools: tools, ToolChoice: "get_time", GenerateOptions: opts}, nil)
			if err != nil || len(named.ToolCalls) != 1 || named.ToolCalls[0].Function.Name != "get_time" {
				t.Fatalf("named: %+v %v", named.ToolCalls, err)
			}
			// The call and its result go back: the prompt holds both.
			back := append(slices.Clone(msgs), Message{Role: "assistant", ToolCalls: named.ToolCalls},
				Message{Role: "tool", Content: "12:00 CET", ToolCallID: named.ToolCalls[0].ID, ToolName: "get_time"})
			after, err := e.Chat(context.Background(), ChatRequest{Model: path, Messages: back, Tools: tools, GenerateOptions: GenerateOptions{MaxTokens: 4}}, nil)
			if err != nil || after.PromptTokens <= named.PromptTokens {
				t.Fatalf("with the result: %v, prompt %d tokens (before %d)", err, after.PromptTokens, named.PromptTokens)
			}
			// An answer of two calls (a grammar makes the random model
			// write them) gives both, or the first alone when parallel
			// calls are off.
			if family == "qwen3.jinja" {
				two := `root ::= "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>"`
				for _, single := range []bool{false, true} {
					o := opts
					o.Grammar = two
					var streamed []ToolCall
					res, err := e.Chat(context.Background(), ChatRequest{Model: path, Messages: msgs, Tools: tools, SingleToolCall: single, GenerateOptions: o},
						func(ch Chunk) error { streamed = append(streamed, ch.ToolCalls...); return nil })
					want := []string{"get_time", "get_weather"}
					if single {
						want = want[:1]
					}
					var names []string
					for _, c := range res.ToolCalls {
						names = append(names, c.Function.Name)
					}
					if err != nil || !slices.Equal(names, want) || len(streamed) != len(want) {
						t.Fatalf("single %v: %v %v (streamed %d), text %q", single, err, names, len(streamed), res.Text)
					}
				}
			}
			none, err := e.Chat(context.Background(), ChatRequest{Model: path, Messages: msgs, Tools: tools, ToolChoice: "none", GenerateOptions: GenerateOptions{MaxTokens: 4}}, nil)
			if err != nil || len(none.ToolCalls) != 0 || none.PromptTokens >= res.PromptTokens {
				t.Fatalf("none: %+v %v, prompt %d tokens (with tools %d)", none.ToolCalls, err, none.PromptTokens, res.PromptTokens)
			}
		})
	}
	// A template that takes no tools refuses them.
	plain := filepath.Join(t.TempDir(), "plain.gguf")
	if err := testmodel.WriteLlamaFile(plain, testmodel.TinyLlama()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Chat(context.Background(), ChatRequest{Model: plain, Messages: []Message{{Role: "user", Content: "hi"}}, Tools: tools}, nil); err == nil {
		t.Fatal("ChatML took tools")
	}
}
