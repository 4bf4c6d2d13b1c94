package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	ollama "github.com/ollama/ollama/api"

	"github.com/owlengine/owl/engine"
)

// Tool calling in both APIs: the tools a request offers, its tool choice,
// and the calls and results in its messages, turned into the engine's.

// openAIToolCall is a call in OpenAI's shape: the arguments a JSON text.
type openAIToolCall struct {
	Index    *int   `json:"index,omitempty"` // in streamed deltas
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// toOpenAICalls turns the engine's calls into OpenAI's; withIndex numbers
// them for streamed deltas.
func toOpenAICalls(calls []engine.ToolCall, withIndex bool) []openAIToolCall {
	out := make([]openAIToolCall, len(calls))
	for i, c := range calls {
		args, _ := json.Marshal(c.Function.Arguments)
		out[i].ID, out[i].Type = c.ID, "function"
		out[i].Function.Name, out[i].Function.Arguments = c.Function.Name, string(args)
		if withIndex {
			n := c.Function.Index
			out[i].Index = &n
		}
	}
	return out
}

// parseTools reads a request's tools: OpenAI's and ollama's have the same
// shape ({"type": "function", "function": {"name", "description",
// "parameters"}}).
func parseTools(raw json.RawMessage) ([]engine.Tool, error) {
	t := string(bytes.TrimSpace(raw))
	if t == "" || t == "null" {
		return nil, nil
	}
	var tools []engine.Tool
	if err := json.Unmarshal(raw, &tools); err != nil {
		return nil, badRequest("tools", "tools: %v", err)
	}
	seen := map[string]bool{}
	for i, tool := range tools {
		switch {
		case tool.Type != "" && tool.Type != "function":
			return nil, badRequest(fmt.Sprintf("tools[%d].type", i), "tools[%d]: type %s (want function)", i, quoteShort(tool.Type))
		case tool.Function.Name == "":
			return nil, badRequest(fmt.Sprintf("tools[%d].function.name", i), "tools[%d] has no name", i)
		case seen[tool.Function.Name]:
			return nil, badRequest(fmt.Sprintf("tools[%d].function.name", i), "tools[%d]: %s is offered twice", i, quoteShort(tool.Function.Name))
		}
		seen[tool.Function.Name] = true
		tools[i].Type = "function"
	}
	return tools, nil
}

// parseToolChoice reads OpenAI's tool_choice: "auto", "none", "required",
// or {"type": "function", "function": {"name"}}.
func parseToolChoice(raw json.RawMessage, tools []engine.Tool) (string, error) {
	t := string(bytes.TrimSpace(raw))
	if t == "" || t == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "auto", "none", "required":
			if s == "required" && len(tools) == 0 {
				return "", badRequest("tool_choice", "tool_choice required needs tools")
			}
			return s, nil
		}
		return "", badRequest("tool_choice", "tool_choice %s: want auto, none, required or a function", quoteShort(s))
	}
	var named struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &named); err != nil || named.Function.Name == "" {
		return "", badRequest("tool_choice", "tool_choice must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\": ...}}")
	}
	for _, tool := range tools {
		if tool.Function.Name == named.Function.Name {
			return named.Function.Name, nil
		}
	}
	return "", badRequest("tool_choice", "tool_choice names %s, which tools do not offer", quoteShort(named.Function.Name))
}

// engineCalls turns a message's calls in OpenAI's shape into the engine's.
func engineCalls(in []openAIToolCall, param string) ([]engine.ToolCall, error) {
	out := make([]engine.ToolCall, len(in))
	for i, c := range in {
		if c.Function.Name == "" {
			return nil, badRequest(param, "%s[%d] has no function name", param, i)
		}
		args := ollama.NewToolCallFunctionArguments()
		if a := strings.TrimSpace(c.Function.Arguments); a != "" {
			if err := json.Unmarshal([]byte(a), &args); err != nil {
				return nil, badRequest(param, "%s[%d].function.arguments is not a JSON object: %v", param, i, err)
			}
		}
		out[i] = engine.ToolCall{ID: c.ID, Function: ollama.ToolCallFunction{Index: i, Name: c.Function.Name, Arguments: args}}
	}
	return out, nil
}
