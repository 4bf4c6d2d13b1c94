package llm

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/template/parse"

	"github.com/ollama/ollama/api"
	ollamatemplate "github.com/ollama/ollama/template"
)

// Template is a chat template in ollama's form, as a Modelfile's TEMPLATE
// gives it: Go's text/template over .System, .Messages (or .Prompt and
// .Response), .Tools and .Think. A model created with one has its prompts
// rendered by it (through ollama's template package) instead of by the
// chat template in its file.
//
// A template is outside input, and Go templates can loop (over numbers,
// nested over the messages, through templates that call themselves): a
// rendering that runs past templateSteps loop turns or templateBytes of
// output stops with an error instead of holding a core. Templates of the
// older form (.Prompt and .Response, no .Messages) may not loop at all:
// ollama renders them into a buffer of its own, out of the count's reach.
type Template struct {
	t *ollamatemplate.Template
}

// The most a template may do in one rendering: loop turns (and calls of
// its defined templates), and bytes of prompt (far past any context).
const (
	templateSteps = 1 << 20
	templateBytes = 16 << 20
)

// ErrTemplateBudget: a template looped or wrote past the limits.
var ErrTemplateBudget = errors.New("the template runs too long (it loops past a million turns or writes past 16 MiB)")

// ParseTemplate compiles an ollama chat template.
func ParseTemplate(s string) (*Template, error) {
	t, err := ollamatemplate.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	vars, err := t.Vars()
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	legacy := !slices.Contains(vars, "messages")
	for _, tt := range t.Templates() {
		if tt.Tree == nil || tt.Tree.Root == nil {
			continue
		}
		if legacy && (tt.Name() != t.Name() || loops(tt.Tree.Root)) {
			return nil, errors.New("template: a template without .Messages may not loop or define templates")
		}
		count(tt.Tree.Root)
	}
	return &Template{t: t}, nil
}

// loops reports whether a tree holds a range or calls a template.
func loops(n parse.Node) bool {
	found := false
	walkTemplate(n, func(n parse.Node) {
		switch n.(type) {
		case *parse.RangeNode, *parse.TemplateNode:
			found = true
		}
	})
	return found
}

// count puts an empty text at the head of a tree and of every range's
// body: each is a write of nothing, which the rendering's writer counts as
// one step.
func count(root *parse.ListNode) {
	tick := func(l *parse.ListNode) {
		l.Nodes = slices.Insert(l.Nodes, 0, parse.Node(&parse.TextNode{NodeType: parse.NodeText, Pos: l.Pos, Text: []byte{}}))
	}
	walkTemplate(root, func(n parse.Node) {
		if r, ok := n.(*parse.RangeNode); ok && r.List != nil {
			tick(r.List)
		}
	})
	tick(root)
}

// walkTemplate calls fn on n and every node under it.
func walkTemplate(n parse.Node, fn func(parse.Node)) {
	if n == nil {
		return
	}
	fn(n)
	var branch *parse.BranchNode
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range slices.Clone(n.Nodes) {
			walkTemplate(c, fn)
		}
		return
	case *parse.IfNode:
		branch = &n.BranchNode
	case *parse.RangeNode:
		branch = &n.BranchNode
	case *parse.WithNode:
		branch = &n.BranchNode
	default:
		return
	}
	if branch.List != nil {
		walkTemplate(branch.List, fn)
	}
	if branch.ElseList != nil {
		walkTemplate(branch.ElseList, fn)
	}
}

// budgetWriter is a rendering's output, refusing writes past the limits.
type budgetWriter struct {
	w            io.Writer
	steps, bytes int
}

func (b *budgetWriter) Write(p []byte) (int, error) {
	b.steps++
	b.bytes += len(p)
	if b.steps > templateSteps || b.bytes > templateBytes {
		return 0, ErrTemplateBudget
	}
	return b.w.Write(p)
}

// String is the template's text.
func (t *Template) String() string { return t.t.String() }

// TakesTools reports whether the template renders tool definitions.
func (t *Template) TakesTools() bool { return t.t.Contains(".Tools") }

// FormatTemplate renders msgs and tools with t, which ends the prompt with
// the opening of the assistant's reply when the last message is not the
// assistant's. think is the request's choice (nil when it made none: the
// template's .IsThinkSet is false). Contents are defused as FormatChat
// does.
func (m *Model) FormatTemplate(t *Template, msgs []Message, tools []Tool, think *bool) (string, error) {
	if len(tools) > 0 && !t.TakesTools() {
		return "", ErrNoToolTemplate
	}
	am := make([]api.Message, len(msgs))
	for i, msg := range msgs {
		if err := checkRole(i, msg.Role); err != nil {
			return "", err
		}
		am[i] = api.Message{Role: msg.Role, Content: m.Defuse(strings.ReplaceAll(msg.Content, "\x00", "")),
			ToolCalls: msg.ToolCalls, ToolName: msg.ToolName, ToolCallID: msg.ToolCallID}
	}
	v := ollamatemplate.Values{Messages: am, Tools: api.Tools(tools), IsThinkSet: think != nil}
	v.Think = think != nil && *think
	var b strings.Builder
	if err := t.t.Execute(&budgetWriter{w: &b}, v); err != nil {
		if errors.Is(err, ErrTemplateBudget) {
			return "", ErrTemplateBudget
		}
		return "", fmt.Errorf("template: %w", err)
	}
	if b.Len() == 0 {
		return "", errors.New("the template renders an empty prompt")
	}
	return b.String(), nil
}
