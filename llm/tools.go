package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/ardanlabs/jinja"
	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/tools"
)

// Tool calling. llama.cpp's chat-template API takes no tool definitions,
// so a chat with tools (or with tool calls and results in its history) is
// rendered by the model's own Jinja template through a Go Jinja engine
// (github.com/ardanlabs/jinja, made for GGUF chat templates), the way the
// Hugging Face tokenizer renders it; the model's answer is then parsed for
// calls by ollama's tool-call parser, keyed on the text that opens a call
// in the template's family.

// Types of tool calling, ollama's (the same JSON as OpenAI's, but for a
// call's arguments, an object there and a string in OpenAI's API).
type (
	Tool     = api.Tool
	ToolCall = api.ToolCall
)

// ErrNoToolTemplate: the model's chat template cannot take tools.
var ErrNoToolTemplate = errors.New("the model's chat template does not take tools")

// TakesTools reports whether a chat template renders tool definitions.
func TakesTools(tmpl string) bool {
	return strings.Contains(tmpl, "tools") && (strings.Contains(tmpl, "tool_calls") || strings.Contains(tmpl, "tool_call"))
}

// ToolTag is the text that opens a tool call in the output of a model of
// tmpl's family: Hermes and Qwen's <tool_call>, Mistral's [TOOL_CALLS], or
// a bare JSON object (Llama 3 and others).
func ToolTag(tmpl string) string {
	switch {
	case strings.Contains(tmpl, "<tool_call>"):
		return "<tool_call>"
	case strings.Contains(tmpl, "[TOOL_CALLS]"):
		return "[TOOL_CALLS]"
	}
	return "{"
}

// toolClosers are texts that end a call in some families, left over after
// the parser took the call's name and arguments.
var toolClosers = []string{"</tool_call>"}

// turnEnds are end-of-turn texts of common families, where a rendered call
// ends (besides the model's own control tokens).
var turnEnds = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>", "<｜end▁of▁sentence｜>"}

// trimCallEnd drops what closes a call (braces, brackets, closing tags,
// spaces) from the head of the text after it.
func trimCallEnd(s string) string {
	for {
		t := strings.TrimLeft(s, " \t\n}]")
		for _, c := range toolClosers {
			t = strings.TrimPrefix(t, c)
		}
		if t == s {
			return s
		}
		s = t
	}
}

// jinjaTemplate is the model's chat template, compiled once.
func (m *Model) jinjaTemplate() (*jinja.Template, error) {
	m.jinjaOnce.Do(func() {
		if m.tmpl == "" {
			m.jinjaErr = fmt.Errorf("%w: the model has no chat template", ErrNoToolTemplate)
			return
		}
		m.jinja, m.jinjaErr = jinja.Compile(m.tmpl)
	})
	return m.jinja, m.jinjaErr
}

// FormatChatTools renders msgs and tools with the model's Jinja template;
// addAssistant ends the prompt with the opening of the assistant's reply.
// Contents are defused as FormatChat does.
func (m *Model) FormatChatTools(msgs []Message, tools []Tool, addAssistant bool) (string, error) {
	if !TakesTools(m.tmpl) {
		return "", ErrNoToolTemplate
	}
	t, err := m.jinjaTemplate()
	if err != nil {
		return "", err
	}
	list := make([]jinja.Value, 0, len(msgs))
	for i, msg := range msgs {
		if err := checkRole(i, msg.Role); err != nil {
			return "", err
		}
		d := jinja.NewDict()
		dict := d.AsDict()
		dict.Set("role", jinja.NewString(msg.Role))
		dict.Set("content", jinja.NewString(m.Defuse(strings.ReplaceAll(msg.Content, "\x00", ""))))
		if len(msg.ToolCalls) > 0 {
			calls := make([]jinja.Value, len(msg.ToolCalls))
			for j, c := range msg.ToolCalls {
				args, err := json.Marshal(c.Function.Arguments)
				if err != nil {
					return "", err
				}
				av, err := jsonValue(args)
				if err != nil {
					return "", err
				}
				fn := jinja.NewDict()
				fn.AsDict().Set("name", jinja.NewString(c.Function.Name))
				fn.AsDict().Set("arguments", av)
				call := jinja.NewDict()
				call.AsDict().Set("type", jinja.NewString("function"))
				call.AsDict().Set("id", jinja.NewString(c.ID))
				call.AsDict().Set("function", fn)
				calls[j] = call
			}
			dict.Set("tool_calls", jinja.NewList(calls))
		}
		if msg.Role == "tool" {
			dict.Set("tool_call_id", jinja.NewString(msg.ToolCallID))
			dict.Set("name", jinja.NewString(msg.ToolName))
		}
		list = append(list, d)
	}
	data := map[string]jinja.Value{
		"messages":              jinja.NewList(list),
		"add_generation_prompt": jinja.NewBool(addAssistant),
		"bos_token":             jinja.NewString(m.m.TokenText(m.bos)),
		"eos_token":             jinja.NewString(m.m.TokenText(m.m.EOS())),
	}
	if len(tools) > 0 {
		b, err := json.Marshal(tools)
		if err != nil {
			return "", err
		}
		tv, err := jsonValue(b)
		if err != nil {
			return "", err
		}
		data["tools"] = tv
	}
	out, err := t.RenderValues(data)
	if err != nil {
		return "", fmt.Errorf("%s: chat template: %w", m.path, err)
	}
	return out, nil
}

// jsonValue turns a JSON text into a Jinja value, keeping the order of
// object keys (as the tokenizer's template sees a request's JSON).
func jsonValue(b []byte) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return jinja.Value{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return jinja.Value{}, errors.New("trailing data after JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (jinja.Value, error) {
	tok, err := dec.Token()
	if err != nil {
		return jinja.Value{}, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			d := jinja.NewDict()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return jinja.Value{}, err
				}
				k, _ := kt.(string)
				v, err := decodeValue(dec)
				if err != nil {
					return jinja.Value{}, err
				}
				d.AsDict().Set(k, v)
			}
			_, err := dec.Token() // }
			return d, err
		case '[':
			var items []jinja.Value
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return jinja.Value{}, err
				}
				items = append(items, v)
			}
			_, err := dec.Token() // ]
			return jinja.NewList(items), err
		}
	case string:
		return jinja.NewString(t), nil
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return jinja.NewInt(i), nil
		}
		f, err := t.Float64()
		return jinja.NewFloat(f), err
	case bool:
		return jinja.NewBool(t), nil
	case nil:
		return jinja.None(), nil
	}
	return jinja.Value{}, fmt.Errorf("unexpected JSON token %v", tok)
}

// ToolParser finds the tool calls in a model's streamed answer.
type ToolParser struct {
	p     *tools.Parser
	calls int
	tail  bool // the text since the last call may still hold its closing
}

// NewToolParser parses calls of tools opened by tag (see ToolTag).
func NewToolParser(tag string, ts []Tool) *ToolParser {
	return &ToolParser{p: tools.NewParserWithTag(ts, tag)}
}

// Add takes the next piece of the answer and returns the calls it
// completed and the text to show.
func (p *ToolParser) Add(s string) ([]ToolCall, string) {
	calls, content := p.p.Add(s)
	if len(calls) > 0 {
		p.tail = true
	}
	if p.tail {
		if t := trimCallEnd(content); t != "" {
			content, p.tail = t, false
		} else {
			content = ""
		}
	}
	p.calls += len(calls)
	return calls, content
}

// Flush returns the text held back at the end of the answer (a partial
// tag that never became a call).
func (p *ToolParser) Flush() string {
	rest := string(p.p.GetBuffer())
	if p.tail {
		rest = trimCallEnd(rest)
	}
	if p.calls > 0 {
		rest = strings.TrimSpace(rest)
	}
	return rest
}

// ToolCallGrammar is a GBNF grammar that holds the answer to one call of
// one of tools (only that one, when only is set), in the form the model's
// template writes calls (custom's, when not nil): found by rendering a
// call with sentinel names, the arguments any JSON object.
func (m *Model) ToolCallGrammar(ts []Tool, only string, custom *Template) (string, error) {
	const name, arg, val = "OWLTOOLNAME", "OWLTOOLARG", "OWLTOOLVAL"
	args := api.NewToolCallFunctionArguments()
	args.Set(arg, val)
	user := Message{Role: "user", Content: "x"}
	call := Message{Role: "assistant", ToolCalls: []ToolCall{{ID: "call_0", Function: api.ToolCallFunction{Name: name, Arguments: args}}}}
	render := func(msgs []Message, addAssistant bool) (string, error) {
		if custom != nil { // the template opens the reply after a user's turn
			return m.FormatTemplate(context.Background(), custom, msgs, ts, nil)
		}
		return m.FormatChatTools(msgs, ts, addAssistant)
	}
	head, err := render([]Message{user}, true)
	if err != nil {
		return "", err
	}
	full, err := render([]Message{user, call}, false)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(full, head) {
		return "", errors.New("the chat template writes the assistant's turn differently after a call: its call format cannot be found")
	}
	text := full[len(head):]
	i, k := strings.Index(text, name), strings.Index(text, arg)
	if i < 0 || k < i {
		return "", errors.New("the chat template does not write tool calls")
	}
	open := strings.LastIndexByte(text[:k], '{')
	end := strings.Index(text[k:], val)
	if open < i+len(name) || end < 0 {
		return "", errors.New("the chat template writes a call's arguments in a form owl does not know")
	}
	close := k + end + len(val)
	close += strings.IndexByte(text[close:], '}') + 1
	before, between, after := text[:i], text[i+len(name):open], text[close:]
	// The call ends where the turn does: at its first control token.
	cut := len(after)
	for _, c := range append(m.m.ControlTexts(), turnEnds...) {
		if j := strings.Index(after, c); j >= 0 && j < cut {
			cut = j
		}
	}
	after = strings.TrimRight(after[:cut], " \n")
	var g strings.Builder
	var calls []string
	for i, t := range ts {
		if only != "" && t.Function.Name != only {
			continue
		}
		call, args := fmt.Sprintf("call%d", i), fmt.Sprintf("args%d", i)
		calls = append(calls, call)
		var parts []string
		for _, p := range []string{strings.TrimLeft(before, " \n"), gbnfString(t.Function.Name), between, args, after} {
			switch {
			case p == "":
			case p == args || strings.HasPrefix(p, `"`) && p == gbnfString(t.Function.Name):
				parts = append(parts, p)
			default:
				parts = append(parts, gbnfString(p))
			}
		}
		fmt.Fprintf(&g, "%s ::= %s\n", call, strings.Join(parts, " "))
		// The arguments: an object of the tool's parameters (any keys when
		// it names none), as many pairs as it has parameters and values
		// kept short, so that a call always ends.
		keys, most := "string", 4
		if props := t.Function.Parameters.Properties; props != nil && props.Len() > 0 {
			var names []string
			for k := range props.All() {
				names = append(names, gbnfString(`"`+k+`"`))
			}
			slices.Sort(names)
			keys, most = "( "+strings.Join(names, " | ")+" )", min(len(names), 8)
		}
		more := ""
		if most > 1 {
			more = fmt.Sprintf(" ( ws \",\" ws %s ws \":\" ws value ){0,%d}", keys, most-1)
		}
		fmt.Fprintf(&g, "%s ::= \"{\" ws ( %s ws \":\" ws value%s )? ws \"}\"\n", args, keys, more)
	}
	if len(calls) == 0 {
		return "", fmt.Errorf("no tool named %q", only)
	}
	return "root ::= " + strings.Join(calls, " | ") + "\n" + g.String() + argGrammar, nil
}

// argGrammar is the values of a call's arguments, in GBNF: JSON scalars,
// short strings and short lists of them. Strings hold no braces: the
// tool-call parser matches an object's braces without minding strings.
const argGrammar = `value ::= scalar | "[" ws ( scalar ( ws "," ws scalar ){0,7} )? ws "]"
scalar ::= string | number | "true" | "false" | "null"
string ::= "\"" ( [^"\\{}\x7F\x00-\x1F] | "\\" ["\\/bfnrt] ){0,32} "\""
number ::= "-"? ( "0" | [1-9] [0-9]{0,9} ) ( "." [0-9]{1,6} )?
ws ::= [ \t\n]{0,2}
`

// gbnfString is s as a GBNF string literal.
func gbnfString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
