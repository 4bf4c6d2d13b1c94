package llm

import (
	"math"

	"github.com/owlengine/owl/bindings/llama"
)

// ErrGrammar is returned for a grammar or JSON schema that cannot constrain
// generation.
var ErrGrammar = llama.ErrGrammar

// Grammar constrains a generation's tokens to a GBNF grammar. It belongs to
// one generation: whoever creates it passes it in Request.Grammar and closes
// it once the generation has returned.
type Grammar struct {
	g *llama.Grammar
}

// NewGrammar parses gbnf (root rule "root") for m's vocabulary.
func (m *Model) NewGrammar(gbnf string) (*Grammar, error) {
	g, err := m.m.NewGrammar(gbnf)
	if err != nil {
		return nil, err
	}
	return &Grammar{g: g}, nil
}

// JSONSchemaGrammar converts a JSON Schema into a GBNF grammar whose
// strings are JSON texts valid against the schema.
func JSONSchemaGrammar(schema []byte) (string, error) {
	return llama.SchemaToGrammar(schema)
}

// Close frees the grammar. It is idempotent.
func (g *Grammar) Close() error { return g.g.Close() }

// constrain masks the tokens the grammar forbids next (their logits become
// -Inf) and reports whether any token is still allowed.
func (g *Grammar) constrain(logits []float32) bool {
	return g.g.Apply(logits) > 0
}

// allowed reports whether tok survived constrain.
func allowed(logits []float32, tok Token) bool {
	return int(tok) < len(logits) && !math.IsInf(float64(logits[tok]), -1)
}

func (g *Grammar) accept(tok Token) { g.g.Accept(tok) }
