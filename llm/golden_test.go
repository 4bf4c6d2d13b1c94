package llm

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/golden")

// golden compares got with testdata/golden/name (rewritten with -update).
// Today's date (Llama 3.2's template writes it) reads as "DD Mon YYYY".
func golden(t *testing.T, name, got string) {
	t.Helper()
	for _, d := range []time.Time{time.Now(), time.Now().Add(-time.Minute)} {
		got = strings.ReplaceAll(got, d.Format("02 Jan 2006"), "DD Mon YYYY")
	}
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run %s -update writes it)", err, t.Name())
	}
	if got != string(want) {
		t.Fatalf("%s differs from its golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// goldenConversation has tools offered, a system prompt, a user's
// question, the assistant's two calls (in one turn when parallel, else
// one after the other: Llama 3.2's template takes one call a turn) and
// both results, then a follow-up.
func goldenConversation(parallel bool) []Message {
	zone := api.NewToolCallFunctionArguments()
	zone.Set("zone", "CET")
	weather := ToolCall{ID: "call_1", Function: api.ToolCallFunction{Name: "get_weather", Arguments: paris()}}
	clock := ToolCall{ID: "call_2", Function: api.ToolCallFunction{Name: "get_time", Arguments: zone}}
	weatherResult := Message{Role: "tool", Content: "sunny, 21 °C", ToolCallID: "call_1", ToolName: "get_weather"}
	clockResult := Message{Role: "tool", Content: "14:05", ToolCallID: "call_2", ToolName: "get_time"}
	msgs := []Message{{Role: "system", Content: "You are a terse assistant."}, {Role: "user", Content: "Weather in Paris, and the time there?"}}
	if parallel {
		msgs = append(msgs, Message{Role: "assistant", ToolCalls: []ToolCall{weather, clock}}, weatherResult, clockResult)
	} else {
		msgs = append(msgs, Message{Role: "assistant", ToolCalls: []ToolCall{weather}}, weatherResult,
			Message{Role: "assistant", ToolCalls: []ToolCall{clock}}, clockResult)
	}
	return append(msgs, Message{Role: "assistant", Content: "Sunny and 21 °C; it is 14:05."}, Message{Role: "user", Content: "And in Oslo?"})
}

// Per family, golden files: the prompt its own chat template renders for
// a conversation with tools, calls and their results; and the calls
// parsed from captured outputs of its models — one call, two calls, a
// call after text, and malformed calls, which stay text.
func TestToolGolden(t *testing.T) {
	outputs := map[string][]string{
		"llama-3.2": {
			`{"name": "get_weather", "parameters": {"city": "Oslo"}}`,
			`{"name": "get_weather", "parameters": {"city": "Oslo"}}; {"name": "get_time", "parameters": {"zone": "CET"}}`,
			`{"name": "get_weather", "parameters": {"city": "Oslo"`,
			`{"name": "no_such_tool", "parameters": {}}`,
		},
		"qwen3": {
			"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
			"Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"CET\"}}\n</tool_call>",
			"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": ",
			"<tool_call>\nnot json at all\n</tool_call>",
		},
		"ministral-3": {
			`[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}`,
			`[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}[TOOL_CALLS]get_time[ARGS]{"zone": "CET"}`,
			`[TOOL_CALLS]get_weather[ARGS]{"city": `,
			`[TOOL_CALLS]`,
		},
	}
	for _, f := range toolFamilies {
		t.Run(f.name, func(t *testing.T) {
			m := familyModel(t, f.file)
			prompt, err := m.FormatChatTools(goldenConversation(f.name != "llama-3.2"), weatherTools(t), true)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, f.name+".prompt", prompt)
			goldenCalls(t, f.name, f.tag, outputs[f.name])
		})
	}
	t.Run("hermes.gotmpl", func(t *testing.T) {
		m := familyModel(t, "qwen3.jinja")
		prompt, err := m.FormatTemplate(context.Background(), hermesTemplate(t), goldenConversation(true), weatherTools(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		golden(t, "hermes.gotmpl.prompt", prompt)
		goldenCalls(t, "hermes.gotmpl", ToolTag(hermesTemplate(t).String()), outputs["qwen3"])
	})
}

// goldenCalls parses each output and compares what came of it (calls and
// text, as JSON) with testdata/golden/name.calls.json.
func goldenCalls(t *testing.T, name, tag string, outputs []string) {
	t.Helper()
	type parsed struct {
		Output string     `json:"output"`
		Calls  []ToolCall `json:"calls"`
		Text   string     `json:"text"`
	}
	var all []parsed
	for _, out := range outputs {
		calls, text := parseAll(tag, weatherTools(t), out)
		for i := range calls {
			calls[i].ID = "" // made fresh each time
		}
		all = append(all, parsed{out, calls, text})
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(all); err != nil {
		t.Fatal(err)
	}
	golden(t, name+".calls.json", b.String())
}
