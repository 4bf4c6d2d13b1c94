package llama

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"

	ollama "github.com/ollama/ollama/llama"
)

// ErrGrammar is returned for a grammar or JSON schema llama.cpp cannot use.
var ErrGrammar = errors.New("invalid grammar")

// SchemaToGrammar converts a JSON Schema into a GBNF grammar with
// llama.cpp's json-schema-to-grammar, which supports the common subset of
// JSON Schema (types, properties, required, enum, const, arrays with item
// counts, string lengths and formats, patterns, $ref within the schema).
func SchemaToGrammar(schema []byte) (string, error) {
	Init()
	if len(schema) == 0 {
		return "", fmt.Errorf("%w: empty JSON schema", ErrGrammar)
	}
	var g []byte
	loadMu.Lock()
	lines := captureErrors(func() { g = ollama.SchemaToGrammar(schema) })
	loadMu.Unlock()
	if len(g) == 0 {
		return "", fmt.Errorf("%w: llama.cpp cannot convert the JSON schema to a grammar%s", ErrGrammar, reasonSuffix(lines))
	}
	return string(g), nil
}

func reasonSuffix(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return ": " + strings.TrimSpace(strings.Join(lines, " "))
}

// Grammar constrains generation to the strings a GBNF grammar accepts, over
// one model's vocabulary. It holds native memory: Close frees it (Close is
// idempotent). Its methods may be called from any goroutine, one at a time.
type Grammar struct {
	mu   sync.Mutex // guards g and buf
	g    *ollama.Grammar
	buf  []ollama.TokenData
	eogs []bool
}

// NewGrammar parses gbnf (root rule "root") for the model's vocabulary.
func (m *Model) NewGrammar(gbnf string) (*Grammar, error) {
	Init()
	ids := make([]uint32, m.nVocab)
	var eogs []int32
	isEOG := make([]bool, m.nVocab)
	for i := range ids {
		ids[i] = uint32(i)
		if m.IsEOG(Token(i)) {
			eogs = append(eogs, int32(i))
			isEOG[i] = true
		}
	}
	var g *ollama.Grammar
	loadMu.Lock()
	lines := captureErrors(func() { g = ollama.NewGrammar(gbnf, ids, m.pieces, eogs) })
	loadMu.Unlock()
	if g == nil {
		return nil, fmt.Errorf("%w%s", ErrGrammar, reasonSuffix(lines))
	}
	return &Grammar{g: g, buf: make([]ollama.TokenData, m.nVocab), eogs: isEOG}, nil
}

// Apply sets the logit of every token the grammar does not allow next to
// -Inf, and reports how many tokens remain allowed. logits holds one value
// per vocabulary entry.
func (g *Grammar) Apply(logits []float32) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.g == nil || len(logits) == 0 {
		return len(logits)
	}
	n := min(len(logits), len(g.buf))
	for i := range n {
		g.buf[i] = ollama.TokenData{ID: int32(i), Logit: logits[i]}
	}
	g.g.Apply(g.buf[:n])
	allowed := 0
	for i := range n {
		logits[i] = g.buf[i].Logit
		if !math.IsInf(float64(logits[i]), -1) {
			allowed++
		}
	}
	return allowed
}

// Accept advances the grammar past token t, which Apply allowed. An
// end-of-generation token ends the text and needs no Accept.
func (g *Grammar) Accept(t Token) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.g == nil || t < 0 || int(t) >= len(g.eogs) || g.eogs[t] {
		return
	}
	g.g.Accept(t)
}

// Close frees the grammar's native memory. It is safe to call more than
// once.
func (g *Grammar) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.g != nil {
		g.g.Free()
		g.g = nil
	}
	return nil
}
