package engine

import (
	"fmt"

	"github.com/owlengine/owl/llm"
)

// ErrBadGrammar is returned for a grammar or JSON schema that cannot
// constrain generation.
var ErrBadGrammar = llm.ErrGrammar

// grammar builds the constraint o asks for, or nil for none. The caller
// closes it after the generation.
func (m *textModel) grammar(o GenerateOptions) (*llm.Grammar, error) {
	gbnf := o.Grammar
	if len(o.JSONSchema) > 0 {
		if gbnf != "" {
			return nil, fmt.Errorf("%w: a grammar and a JSON schema together", ErrBadGrammar)
		}
		var err error
		if gbnf, err = llm.JSONSchemaGrammar(o.JSONSchema); err != nil {
			return nil, err
		}
	}
	if gbnf == "" {
		return nil, nil
	}
	return m.model.NewGrammar(gbnf)
}
