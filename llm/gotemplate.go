package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
	"unicode/utf8"

	"github.com/ollama/ollama/api"
	ollamatemplate "github.com/ollama/ollama/template"
)

// Template is a chat template in ollama's form, as a Modelfile's TEMPLATE
// gives it: Go's text/template over .System, .Messages (or .Prompt and
// .Response), .Tools and .Think. A model created with one has its prompts
// rendered by it (through ollama's template package) instead of by the
// chat template in its file. A Template renders one prompt at a time.
//
// A template is outside input, and Go templates can loop (over numbers,
// nested over the messages, through templates that call themselves) and
// grow strings (a variable printf'd into itself). A rendering is held to
// a budget: templateSteps loop turns and template calls, templateBytes of
// output and of strings its functions make, templateTime of time (and the
// request's context). Every loop body and template gets an empty text at
// its head, a write that counts a step; the functions that make strings
// (printf, print, println, js, html, urlquery, json) are owl's, which
// count what they make before making it. Templates of the older form
// (.Prompt and .Response, no .Messages) are rendered by ollama into a
// buffer of its own, out of the writer's reach: they may not loop,
// define templates or call those functions, and their output is bounded
// before they run.
type Template struct {
	t       *ollamatemplate.Template
	legacy  bool
	actions int     // the older form's actions: each writes at most one message's text
	b       *budget // the rendering's
}

// The most a template may do in one rendering.
const (
	templateSteps = 1 << 20
	templateBytes = 16 << 20
	templateTime  = 2 * time.Second
	templateSize  = 1 << 20 // the template's own text
	formatWidth   = 1000    // a printf verb's width or precision
)

// ErrTemplateBudget: a template looped, wrote or ran past the limits.
var ErrTemplateBudget = errors.New("the template runs too long (it loops past a million turns, makes over 16 MiB of text or runs past 2 s)")

// budget counts a rendering's steps and bytes.
type budget struct {
	ctx          context.Context
	deadline     time.Time
	steps, bytes int
}

// add counts a step that makes n bytes.
func (b *budget) add(n int) error {
	if b == nil {
		return errors.New("template: not rendering")
	}
	b.steps++
	b.bytes += n
	if b.steps > templateSteps || b.bytes > templateBytes {
		return ErrTemplateBudget
	}
	if b.steps%256 == 0 {
		if err := b.ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(b.deadline) {
			return ErrTemplateBudget
		}
	}
	return nil
}

// stringMakers are the functions (text/template's and ollama's) whose
// results can outgrow their arguments: owl's own count them.
var stringMakers = []string{"printf", "print", "println", "js", "html", "urlquery", "json"}

// ParseTemplate compiles an ollama chat template.
func ParseTemplate(s string) (*Template, error) {
	if len(s) > templateSize {
		return nil, fmt.Errorf("template: %d bytes (at most %d)", len(s), templateSize)
	}
	t, err := ollamatemplate.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	vars, err := t.Vars()
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	out := &Template{t: t, legacy: !slices.Contains(vars, "messages")}
	for _, tt := range t.Templates() {
		if tt.Tree == nil || tt.Tree.Root == nil {
			continue
		}
		if out.legacy {
			if tt.Name() != t.Name() {
				return nil, errors.New("template: a template without .Messages may not define templates")
			}
			var refused error
			walkTemplate(tt.Tree.Root, func(n parse.Node) {
				switch n := n.(type) {
				case *parse.RangeNode, *parse.TemplateNode:
					refused = errors.New("template: a template without .Messages may not loop")
				case *parse.IdentifierNode:
					if slices.Contains(stringMakers, n.Ident) {
						refused = fmt.Errorf("template: a template without .Messages may not call %s", n.Ident)
					}
				case *parse.ActionNode:
					out.actions++
				}
			})
			if refused != nil {
				return nil, refused
			}
		}
		count(tt.Tree.Root)
	}
	t.Funcs(out.funcs())
	return out, nil
}

// funcs are owl's string makers, counted against the rendering's budget.
func (t *Template) funcs() template.FuncMap {
	// each formats its arguments one at a time, counting before it grows
	joined := func(spaces func(prev, next any) bool, newline bool) func(...any) (string, error) {
		return func(args ...any) (string, error) {
			var sb strings.Builder
			for i, a := range args {
				if i > 0 && spaces(args[i-1], a) {
					sb.WriteByte(' ')
				}
				s := fmt.Sprint(a)
				if err := t.b.add(len(s)); err != nil {
					return "", err
				}
				sb.WriteString(s)
			}
			if newline {
				sb.WriteByte('\n')
			}
			return sb.String(), nil
		}
	}
	isString := func(v any) bool { _, ok := v.(string); return ok }
	sprint := joined(func(a, b any) bool { return !isString(a) && !isString(b) }, false)
	sprintln := joined(func(any, any) bool { return true }, true)
	// escape grows its input at most grow times; the bound is counted first
	escape := func(grow int, esc func(...any) string) func(...any) (string, error) {
		return func(args ...any) (string, error) {
			in, err := sprint(args...)
			if err != nil {
				return "", err
			}
			if err := t.b.add(grow * len(in)); err != nil {
				return "", err
			}
			return esc(in), nil
		}
	}
	return template.FuncMap{
		"printf":   t.printf,
		"print":    sprint,
		"println":  sprintln,
		"html":     escape(6, template.HTMLEscaper),
		"js":       escape(6, template.JSEscaper),
		"urlquery": escape(3, template.URLQueryEscaper),
		"json": func(v any) (string, error) {
			if s, ok := v.(string); ok { // a string's JSON: at most 6 bytes a byte, and quotes
				if err := t.b.add(6*len(s) + 2); err != nil {
					return "", err
				}
			}
			b, _ := json.Marshal(v) // as ollama's json: an error gives ""
			if err := t.b.add(len(b)); err != nil {
				return "", err
			}
			return string(b), nil
		},
	}
}

// printf is fmt.Sprintf a verb at a time, counting each verb's text
// before the next; widths and precisions past formatWidth, '*' and
// explicit argument indexes are refused.
func (t *Template) printf(format string, args ...any) (string, error) {
	var sb strings.Builder
	next := 0
	for len(format) > 0 {
		i := strings.IndexByte(format, '%')
		if i < 0 {
			i = len(format)
		}
		if err := t.b.add(i); err != nil {
			return "", err
		}
		sb.WriteString(format[:i])
		format = format[i:]
		if format == "" {
			break
		}
		// %[flags][width][.precision]verb
		j := 1
		for j < len(format) && strings.IndexByte("+-# 0", format[j]) >= 0 {
			j++
		}
		for _, part := range []bool{false, true} {
			if part {
				if j >= len(format) || format[j] != '.' {
					break
				}
				j++
			}
			k := j
			for j < len(format) && format[j] >= '0' && format[j] <= '9' {
				j++
			}
			if n, _ := strconv.Atoi(format[k:j]); n > formatWidth {
				return "", fmt.Errorf("printf: a width or precision of %d (at most %d)", n, formatWidth)
			}
		}
		if j >= len(format) {
			return "", errors.New("printf: a format ends inside a verb")
		}
		verb, size := utf8.DecodeRuneInString(format[j:])
		spec := format[:j+size]
		format = format[j+size:]
		switch verb {
		case '%':
			sb.WriteByte('%')
			continue
		case '*', '[':
			return "", errors.New("printf: '*' and argument indexes are not taken")
		}
		if next >= len(args) {
			return "", errors.New("printf: more verbs than arguments")
		}
		s := fmt.Sprintf(spec, args[next])
		next++
		if err := t.b.add(len(s)); err != nil {
			return "", err
		}
		sb.WriteString(s)
	}
	if next < len(args) {
		return "", errors.New("printf: more arguments than verbs")
	}
	return sb.String(), nil
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
	case *parse.ActionNode:
		walkPipe(n.Pipe, fn)
		return
	case *parse.IfNode:
		branch = &n.BranchNode
	case *parse.RangeNode:
		branch = &n.BranchNode
	case *parse.WithNode:
		branch = &n.BranchNode
	case *parse.TemplateNode:
		walkPipe(n.Pipe, fn)
		return
	default:
		return
	}
	walkPipe(branch.Pipe, fn)
	if branch.List != nil {
		walkTemplate(branch.List, fn)
	}
	if branch.ElseList != nil {
		walkTemplate(branch.ElseList, fn)
	}
}

// walkPipe calls fn on the commands' arguments of a pipeline (and of the
// pipelines inside them).
func walkPipe(p *parse.PipeNode, fn func(parse.Node)) {
	if p == nil {
		return
	}
	for _, c := range p.Cmds {
		for _, a := range c.Args {
			fn(a)
			switch a := a.(type) {
			case *parse.PipeNode:
				walkPipe(a, fn)
			case *parse.ChainNode:
				if inner, ok := a.Node.(*parse.PipeNode); ok {
					walkPipe(inner, fn)
				}
			}
		}
	}
}

// budgetWriter is a rendering's output, counted against its budget.
type budgetWriter struct {
	w io.Writer
	b *budget
}

func (w budgetWriter) Write(p []byte) (int, error) {
	if err := w.b.add(len(p)); err != nil {
		return 0, err
	}
	return w.w.Write(p)
}

// String is the template's text.
func (t *Template) String() string { return t.t.String() }

// TakesTools reports whether the template renders tool definitions.
func (t *Template) TakesTools() bool { return t.t.Contains(".Tools") }

// FormatTemplate renders msgs and tools with t, which ends the prompt with
// the opening of the assistant's reply when the last message is not the
// assistant's. think is the request's choice (nil when it made none: the
// template's .IsThinkSet is false). Contents are defused as FormatChat
// does. The rendering stops when ctx ends.
func (m *Model) FormatTemplate(ctx context.Context, t *Template, msgs []Message, tools []Tool, think *bool) (string, error) {
	if len(tools) > 0 && !t.TakesTools() {
		return "", ErrNoToolTemplate
	}
	am := make([]api.Message, len(msgs))
	longest, run := 0, 0 // the longest run of one role's messages (ollama joins them)
	for i, msg := range msgs {
		if err := checkRole(i, msg.Role); err != nil {
			return "", err
		}
		am[i] = api.Message{Role: msg.Role, Content: m.Defuse(strings.ReplaceAll(msg.Content, "\x00", "")),
			ToolCalls: msg.ToolCalls, ToolName: msg.ToolName, ToolCallID: msg.ToolCallID}
		if i > 0 && msgs[i-1].Role != msg.Role {
			run = 0
		}
		run += len(am[i].Content) + 2
		longest = max(longest, run)
	}
	// The older form runs once per turn, each run writing the template's
	// text and at most one run of messages per action.
	if t.legacy && (len(msgs)+1)*(len(t.t.String())+t.actions*longest) > templateBytes {
		return "", ErrTemplateBudget
	}
	t.b = &budget{ctx: ctx, deadline: time.Now().Add(templateTime)}
	defer func() { t.b = nil }()
	v := ollamatemplate.Values{Messages: am, Tools: api.Tools(tools), IsThinkSet: think != nil}
	v.Think = think != nil && *think
	var sb strings.Builder
	if err := t.t.Execute(budgetWriter{w: &sb, b: t.b}, v); err != nil {
		switch {
		case errors.Is(err, ErrTemplateBudget):
			return "", ErrTemplateBudget
		case ctx.Err() != nil:
			return "", ctx.Err()
		}
		return "", fmt.Errorf("template: %w", err)
	}
	if sb.Len() == 0 {
		return "", errors.New("the template renders an empty prompt")
	}
	return sb.String(), nil
}
