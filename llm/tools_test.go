package llm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"

	"github.com/owlengine/owl/models/testmodel"
)

// The chat templates of three families as their models ship them
// (tokenizer.chat_template), in testdata/templates.
var toolFamilies = []struct {
	name, file, tag string
	call            string // a call of get_weather(city: Paris) as the family's models write it
}{
	{"llama-3.2", "llama-3.2.jinja", "{", `{"name": "get_weather", "parameters": {"city": "Paris"}}`},
	{"qwen3", "qwen3.jinja", "<tool_call>", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"},
	{"ministral-3", "ministral-3.jinja", "[TOOL_CALLS]", `[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}`},
}

func weatherTools(t *testing.T) []Tool {
	t.Helper()
	var tools []Tool
	if err := json.Unmarshal([]byte(`[{"type":"function","function":{"name":"get_weather","description":"The weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string","description":"its name"}},"required":["city"]}}},
		{"type":"function","function":{"name":"get_time","description":"The time in a zone","parameters":{"type":"object","properties":{"zone":{"type":"string"}},"required":["zone"]}}}]`), &tools); err != nil {
		t.Fatal(err)
	}
	return tools
}

// familyModel is the tiny model with a family's chat template.
func familyModel(t testing.TB, file string) *Model {
	t.Helper()
	tpl, err := os.ReadFile(filepath.Join("testdata", "templates", file))
	if err != nil {
		t.Fatal(err)
	}
	c := testmodel.TinyLlama()
	c.ChatTpl = string(tpl)
	p := filepath.Join(t.TempDir(), "m.gguf")
	if err := testmodel.WriteLlamaFile(p, c); err != nil {
		t.Fatal(err)
	}
	m, err := Load(p, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func paris() api.ToolCallFunctionArguments {
	a := api.NewToolCallFunctionArguments()
	a.Set("city", "Paris")
	return a
}

// A conversation with tools, a call and its result renders with each
// family's own template: the tools' definitions, the call in the family's
// form and the result in the family's place.
func TestToolTemplatesRender(t *testing.T) {
	for _, f := range toolFamilies {
		t.Run(f.name, func(t *testing.T) {
			m := familyModel(t, f.file)
			if !TakesTools(m.ChatTemplate()) || ToolTag(m.ChatTemplate()) != f.tag {
				t.Fatalf("TakesTools %v, tag %q", TakesTools(m.ChatTemplate()), ToolTag(m.ChatTemplate()))
			}
			msgs := []Message{{Role: "user", Content: "Weather in Paris?"},
				{Role: "assistant", ToolCalls: []ToolCall{{ID: "call_1", Function: api.ToolCallFunction{Name: "get_weather", Arguments: paris()}}}},
				{Role: "tool", Content: "sunny, 21 °C", ToolCallID: "call_1", ToolName: "get_weather"}}
			out, err := m.FormatChatTools(msgs, weatherTools(t), true)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"The weather of a city", "get_time", "Weather in Paris?", "sunny, 21 °C", `"city"`, "Paris"} {
				if !strings.Contains(out, want) {
					t.Errorf("the prompt lacks %q:\n%s", want, out)
				}
			}
			// The call as the model would have written it, in the
			// family's form (its arguments as the template writes JSON).
			calls, content := parseAll(f.tag, weatherTools(t), callText(t, out, f.tag))
			if len(calls) != 1 || calls[0].Function.Name != "get_weather" || content != "" {
				t.Fatalf("the rendered call parses to %+v, %q", calls, content)
			}
			// Without tools, and with no tool turns, the template still
			// renders; an unknown role is refused.
			if _, err := m.FormatChatTools([]Message{{Role: "user", Content: "hi"}}, nil, true); err != nil {
				t.Fatal(err)
			}
			if _, err := m.FormatChatTools([]Message{{Role: "robot", Content: "hi"}}, nil, true); err == nil {
				t.Fatal("an unknown role rendered")
			}
		})
	}
}

// callText is the rendered assistant call in a prompt.
func callText(t *testing.T, prompt, tag string) string {
	t.Helper()
	i := strings.Index(prompt, tag+`"name": "get_weather"`)
	if tag == "{" {
		i = strings.Index(prompt, `{"name": "get_weather"`)
	} else if tag == "[TOOL_CALLS]" {
		i = strings.Index(prompt, "[TOOL_CALLS]get_weather")
	} else {
		i = strings.Index(prompt, "<tool_call>\n{\"name\": \"get_weather\"")
	}
	if i < 0 {
		t.Fatalf("no call in the prompt:\n%s", prompt)
	}
	end := strings.Index(prompt[i:], "}}")
	if tag == "[TOOL_CALLS]" {
		end = strings.Index(prompt[i:], "}") - 1
	}
	return prompt[i : i+end+2]
}

func parseAll(tag string, tools []Tool, text string) ([]ToolCall, string) {
	p := NewToolParser(tag, tools)
	var calls []ToolCall
	var content strings.Builder
	for _, r := range text { // streamed a character at a time
		cs, c := p.Add(string(r))
		calls = append(calls, cs...)
		content.WriteString(c)
	}
	content.WriteString(p.Flush())
	return calls, strings.TrimSpace(content.String())
}

// The calls in each family's captured output; malformed and plain output
// stay text.
func TestToolParsers(t *testing.T) {
	tools := weatherTools(t)
	for _, f := range toolFamilies {
		calls, content := parseAll(f.tag, tools, f.call)
		if len(calls) != 1 || calls[0].Function.Name != "get_weather" || content != "" {
			t.Fatalf("%s: %q → %+v, %q", f.name, f.call, calls, content)
		}
		if city, _ := calls[0].Function.Arguments.Get("city"); city != "Paris" {
			t.Fatalf("%s: arguments %v", f.name, calls[0].Function.Arguments)
		}
		cut := f.call[:strings.Index(f.call, "Paris")]
		if calls, content := parseAll(f.tag, tools, cut); len(calls) != 0 || !strings.Contains(content, "get_weather") {
			t.Fatalf("%s: a cut call %q → %+v, %q", f.name, cut, calls, content)
		}
		if calls, content := parseAll(f.tag, tools, "It is sunny in Paris."); len(calls) != 0 || content != "It is sunny in Paris." {
			t.Fatalf("%s: plain text → %+v, %q", f.name, calls, content)
		}
	}
	// Two calls in one answer.
	two := "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"CET\"}}\n</tool_call>"
	if calls, content := parseAll("<tool_call>", tools, two); len(calls) != 2 || calls[1].Function.Name != "get_time" || content != "" {
		t.Fatalf("two calls → %+v, %q", calls, content)
	}
}

// The grammar of a required call follows each family's form.
func TestToolCallGrammar(t *testing.T) {
	for _, f := range toolFamilies {
		m := familyModel(t, f.file)
		g, err := m.ToolCallGrammar(weatherTools(t), "", nil)
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		if !strings.Contains(g, `"get_weather"`) || !strings.Contains(g, `"get_time"`) || !strings.HasPrefix(g, "root ::= ") {
			t.Fatalf("%s: %s", f.name, g)
		}
		only, err := m.ToolCallGrammar(weatherTools(t), "get_time", nil)
		if err != nil || strings.Contains(only, "get_weather") {
			t.Fatalf("%s: named: %v\n%s", f.name, err, only)
		}
		t.Logf("%s: %s", f.name, strings.SplitN(g, "\n", 2)[0])
	}
}

// FuzzToolParser: whatever a model writes, the parser returns calls of the
// offered tools and text, and never panics; nothing is lost but what it
// took as calls.
func FuzzToolParser(f *testing.F) {
	for _, fam := range toolFamilies {
		f.Add(fam.tag, fam.call)
	}
	f.Add("{", `{"name": "get_weather", "parameters": {"city": [1, {"x": null}]}} trailing`)
	f.Add("<tool_call>", "<tool_call>\n{\"name\": \"get_time\", \"arguments\": \"not an object\"}\n</tool_call>")
	var tools []Tool
	json.Unmarshal([]byte(`[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},{"type":"function","function":{"name":"get_time"}}]`), &tools)
	f.Fuzz(func(t *testing.T, tag, text string) {
		if tag == "" {
			tag = "{"
		}
		calls, _ := parseAll(tag, tools, text)
		for _, c := range calls {
			if c.Function.Name != "get_weather" && c.Function.Name != "get_time" {
				t.Fatalf("a call of %q", c.Function.Name)
			}
		}
	})
}
