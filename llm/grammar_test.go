package llm

import (
	"errors"
	"testing"
)

func TestGrammarErrors(t *testing.T) {
	m := tinyModel(t)
	if _, err := JSONSchemaGrammar([]byte(`{"type":`)); !errors.Is(err, ErrGrammar) {
		t.Fatalf("broken schema: %v", err)
	}
	if _, err := m.NewGrammar(`root ::= (`); !errors.Is(err, ErrGrammar) {
		t.Fatalf("broken grammar: %v", err)
	}
}
