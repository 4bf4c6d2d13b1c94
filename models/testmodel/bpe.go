package testmodel

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// Token types as llama.cpp reads them from tokenizer.ggml.token_type.
const (
	tokenNormal  = 1
	tokenControl = 3
)

// The special tokens every generated text model has, in vocabulary order
// after the ordinary tokens.
const (
	TokenBOS      = "<|begin_of_text|>"
	TokenEOS      = "<|end_of_text|>"
	TokenImStart  = "<|im_start|>"
	TokenImEnd    = "<|im_end|>"
	chatMLSpecial = 4
)

// ChatMLTemplate is the chat template of generated text models.
const ChatMLTemplate = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// vocab is a byte-level BPE vocabulary in GGUF's "gpt2" form: token texts are
// bytes mapped through the GPT-2 byte-to-unicode table, merges are "a b".
type vocab struct {
	tokens []string
	types  []int32
	merges []string
	bos    int32
	eos    int32
	eot    int32
}

// byteToUnicode is GPT-2's reversible map from bytes to printable runes.
func byteToUnicode() [256]rune {
	var m [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if printableByte(b) {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}

func printableByte(b int) bool {
	return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
}

// gpt2ByteOrder lists the bytes in the order GPT-2's vocabulary gives them
// ids 0 to 255: the printable ones first, then the rest; the space is 220.
func gpt2ByteOrder() []byte {
	var order []byte
	for b := 0; b < 256; b++ {
		if printableByte(b) {
			order = append(order, byte(b))
		}
	}
	for b := 0; b < 256; b++ {
		if !printableByte(b) {
			order = append(order, byte(b))
		}
	}
	return order
}

// trainingText is the corpus the tokenizer's merges are learned from: enough
// ordinary English for common words to become single tokens.
const trainingText = `The owl sat in the old oak tree. The more it saw, the less it spoke; the less it spoke, the more it heard.
A model that hears speech turns sound into text. A model that sees turns an image into words. A model that answers
reads a question and writes the answer one token at a time. The engine runs on your own computer, without a network,
and it keeps the models in memory only while they are needed. When two people ask at the same time, both are served:
their requests share the machine, and neither waits for the other to finish. Hello, world! How are you today?
I am fine, thank you. What is in this picture? There is a cat on the table and a dog under the chair.
Please transcribe this recording and translate it into English. The quick brown fox jumps over the lazy dog.
One, two, three, four, five, six, seven, eight, nine, ten. Monday, Tuesday, Wednesday, Thursday, Friday.
The system prompt says that the assistant is helpful, honest and brief. The user asks; the assistant answers.`

// pretokenize splits text into words the way byte-level BPE tokenizers do:
// a word is an optional leading space and a run of letters, of digits, or
// of other non-space characters.
func pretokenize(text string) []string {
	var words []string
	rs := []rune(text)
	class := func(r rune) int {
		switch {
		case unicode.IsLetter(r):
			return 1
		case unicode.IsDigit(r):
			return 2
		case unicode.IsSpace(r):
			return 3
		}
		return 4
	}
	for i := 0; i < len(rs); {
		start := i
		if rs[i] == ' ' && i+1 < len(rs) && class(rs[i+1]) != 3 {
			i++
		}
		c := class(rs[i])
		for i < len(rs) && class(rs[i]) == c {
			i++
			if c == 3 {
				break
			}
		}
		words = append(words, string(rs[start:i]))
	}
	return words
}

// buildVocab builds a vocabulary of exactly size tokens: 256 byte tokens
// (in GPT-2's order),
// merges learned from trainingText, filler merges of existing tokens up to
// the size, the extra control tokens, then the ChatML special tokens (so
// that those keep the last four ids whatever the extras).
func buildVocab(size int, extra ...string) (vocab, error) {
	if size < 256+chatMLSpecial+len(extra) {
		return vocab{}, fmt.Errorf("vocabulary of %d tokens is smaller than the %d byte and special tokens", size, 256+chatMLSpecial+len(extra))
	}
	b2u := byteToUnicode()
	var v vocab
	known := map[string]bool{}
	add := func(s string) {
		v.tokens = append(v.tokens, s)
		v.types = append(v.types, tokenNormal)
		known[s] = true
	}
	for _, b := range gpt2ByteOrder() {
		add(string(b2u[b]))
	}
	want := size - chatMLSpecial - len(extra)

	// Learn merges from the corpus: words as symbol lists, weighted by count.
	counts := map[string]int{}
	for _, w := range pretokenize(trainingText) {
		var sb strings.Builder
		for _, b := range []byte(w) {
			sb.WriteRune(b2u[b])
		}
		counts[sb.String()]++
	}
	type word struct {
		syms  []string
		count int
	}
	var words []word
	for w, c := range counts {
		var syms []string
		for _, r := range w {
			syms = append(syms, string(r))
		}
		words = append(words, word{syms, c})
	}
	slices.SortFunc(words, func(a, b word) int { return strings.Compare(strings.Join(a.syms, ""), strings.Join(b.syms, "")) })
	for len(v.tokens) < want {
		pairs := map[[2]string]int{}
		for _, w := range words {
			for i := 0; i+1 < len(w.syms); i++ {
				pairs[[2]string{w.syms[i], w.syms[i+1]}] += w.count
			}
		}
		var best [2]string
		bestN := 1
		for p, n := range pairs {
			if n > bestN || (n == bestN && bestN > 1 && p[0]+" "+p[1] < best[0]+" "+best[1]) {
				best, bestN = p, n
			}
		}
		if bestN < 2 {
			break
		}
		merged := best[0] + best[1]
		v.merges = append(v.merges, best[0]+" "+best[1])
		if !known[merged] {
			add(merged)
		}
		for i := range words {
			s := words[i].syms
			out := s[:0:0]
			for j := 0; j < len(s); j++ {
				if j+1 < len(s) && s[j] == best[0] && s[j+1] == best[1] {
					out = append(out, merged)
					j++
				} else {
					out = append(out, s[j])
				}
			}
			words[i].syms = out
		}
	}

	// Fill up with merges of existing tokens and lowercase letters.
	for base := 0; len(v.tokens) < want; base++ {
		if base >= len(v.tokens) {
			return vocab{}, fmt.Errorf("cannot fill a vocabulary of %d tokens", size)
		}
		a := v.tokens[base]
		for c := 'a'; c <= 'z' && len(v.tokens) < want; c++ {
			merged := a + string(c)
			if known[merged] {
				continue
			}
			v.merges = append(v.merges, a+" "+string(c))
			add(merged)
		}
	}

	for _, s := range extra {
		if known[s] || s == TokenBOS || s == TokenEOS || s == TokenImStart || s == TokenImEnd {
			return vocab{}, fmt.Errorf("extra token %q is already in the vocabulary", s)
		}
		v.tokens = append(v.tokens, s)
		v.types = append(v.types, tokenControl)
		known[s] = true
	}
	for _, s := range []string{TokenBOS, TokenEOS, TokenImStart, TokenImEnd} {
		v.tokens = append(v.tokens, s)
		v.types = append(v.types, tokenControl)
	}
	v.bos = int32(size - 4)
	v.eos = int32(size - 3)
	v.eot = int32(size - 1)
	return v, nil
}
