package engine

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/owlengine/owl/llm"
	"github.com/owlengine/owl/models/testmodel"
)

// thinkTemplate is ChatML with Qwen 3's switch: enable_thinking false puts
// an empty reasoning after the assistant's opening.
const thinkTemplate = testmodel.ChatMLTemplate + "{% if add_generation_prompt and enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"

// A thinking model's reasoning comes apart from its answer, streamed and
// whole; Think false turns it off; Think true for a model that does not
// think is the request's error. The tiny model is made to think by a
// grammar, so that its output holds the markers.
func TestChatThinking(t *testing.T) {
	e := New(Options{Threads: 2, NumCtx: 512, Parallel: 1, CacheDir: t.TempDir()})
	t.Cleanup(func() { e.Close() })
	c := testmodel.TinyLlama()
	c.ChatTpl = thinkTemplate
	thinker := filepath.Join(t.TempDir(), "thinker.gguf")
	if err := testmodel.WriteLlamaFile(thinker, c); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(t.TempDir(), "plain.gguf")
	if err := testmodel.WriteLlamaFile(plain, testmodel.TinyLlama()); err != nil {
		t.Fatal(err)
	}
	if open, close, ok := Thinks(thinkTemplate); !ok || open != "<think>" || close != "</think>" {
		t.Fatalf("Thinks: %q %q %v", open, close, ok)
	}
	if _, _, ok := Thinks(testmodel.ChatMLTemplate); ok {
		t.Fatal("ChatML thinks")
	}
	msgs := []Message{{Role: "user", Content: "Why?"}}
	grammar := `root ::= "<think>" [a-z ]{4,12} "</think>" [a-z ]{3,10}`
	s := llm.DefaultSampling()
	s.Seed = 3
	opts := GenerateOptions{Sampling: s, MaxTokens: 60, Grammar: grammar}
	var streamed, streamedThought strings.Builder
	res, err := e.Chat(context.Background(), ChatRequest{Model: thinker, Messages: msgs, GenerateOptions: opts}, func(ch Chunk) error {
		streamed.WriteString(ch.Text)
		streamedThought.WriteString(ch.Thinking)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := e.Chat(context.Background(), ChatRequest{Model: plain, Messages: msgs, GenerateOptions: opts}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The same weights and sampling: the plain model's raw text is the
	// thinker's, markers and all.
	before, after, ok := strings.Cut(strings.TrimPrefix(raw.Text, "<think>"), "</think>")
	if !ok || strings.TrimSpace(res.Thinking) != strings.TrimSpace(before) || res.Text != strings.TrimLeft(after, " \n") || res.Thinking == "" {
		t.Fatalf("raw %q → thinking %q, text %q", raw.Text, res.Thinking, res.Text)
	}
	if streamed.String() != res.Text || streamedThought.String() != res.Thinking {
		t.Fatalf("streamed %q / %q, whole %q / %q", streamed.String(), streamedThought.String(), res.Text, res.Thinking)
	}
	// Off: the prompt carries the empty reasoning, and none comes back.
	off := false
	quiet, err := e.Chat(context.Background(), ChatRequest{Model: thinker, Messages: msgs, Think: &off, GenerateOptions: opts}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if quiet.Thinking != "" || quiet.PromptTokens <= res.PromptTokens {
		t.Fatalf("think off: thinking %q, prompt %d tokens (on: %d)", quiet.Thinking, quiet.PromptTokens, res.PromptTokens)
	}
	on := true
	if _, err := e.Chat(context.Background(), ChatRequest{Model: plain, Messages: msgs, Think: &on, GenerateOptions: opts}, nil); !errors.Is(err, ErrBadRequest) ||
		!strings.Contains(err.Error(), "does not think") {
		t.Fatalf("think on a model that does not: %v", err)
	}
}
