package llm

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
)

// A random model constrained by a schema's grammar still writes JSON that
// the schema accepts, at every temperature; the same model unconstrained
// writes text that is not.
func TestGrammarConstrainsToSchema(t *testing.T) {
	m := tinyModel(t)
	gbnf, err := JSONSchemaGrammar([]byte(`{"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":"integer"},"tag":{"enum":["owl","bat"]}},"required":["ok","n","tag"],"additionalProperties":false}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, temp := range []float32{0, 0.8, 1.5} {
		g, err := m.NewGrammar(gbnf)
		if err != nil {
			t.Fatal(err)
		}
		s := DefaultSampling()
		s.Temperature, s.Seed = temp, 7
		res, err := newSession(t, m, 512).Generate(context.Background(), Request{Prompt: mustTokenize(t, m, "Answer in JSON:"), Sampling: s, MaxTokens: 300, Grammar: g}, nil)
		g.Close()
		g.Close() // idempotent
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			OK  *bool   `json:"ok"`
			N   *int64  `json:"n"`
			Tag *string `json:"tag"`
		}
		if err := json.Unmarshal([]byte(res.Text), &v); err != nil || v.OK == nil || v.N == nil || v.Tag == nil || (*v.Tag != "owl" && *v.Tag != "bat") {
			t.Fatalf("temperature %v: %q (finish %s) does not match the schema: %v", temp, res.Text, res.FinishReason, err)
		}
		if res.FinishReason != FinishStop {
			t.Fatalf("temperature %v: finish %q, want stop once the object is complete", temp, res.FinishReason)
		}
	}
	res, err := newSession(t, m, 512).Generate(context.Background(), Request{Prompt: mustTokenize(t, m, "Answer in JSON:"), MaxTokens: 40, IgnoreEOS: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if json.Valid([]byte(res.Text)) {
		t.Fatalf("the unconstrained model wrote JSON by chance (%q): the test proves nothing", res.Text)
	}
}

func TestGrammarErrors(t *testing.T) {
	m := tinyModel(t)
	if _, err := JSONSchemaGrammar([]byte(`{"type":`)); !errors.Is(err, ErrGrammar) {
		t.Fatalf("broken schema: %v", err)
	}
	if _, err := m.NewGrammar(`root ::= (`); !errors.Is(err, ErrGrammar) {
		t.Fatalf("broken grammar: %v", err)
	}
}
