package llm

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

// bertWeights reads a generated BERT's f32 tensors by name.
func bertWeights(t *testing.T, path string) map[string][]float64 {
	t.Helper()
	g, err := models.ReadGGUF(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float64{}
	for _, ti := range g.Tensors {
		b := raw[uint64(g.DataOffset)+ti.Offset:][:ti.Bytes]
		v := make([]float64, ti.Elements())
		for i := range v {
			v[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		}
		out[ti.Name] = v
	}
	return out
}

// bertOracle is the float64 forward pass of llama.cpp's "bert" graph over
// tokens, pooled (1 mean, 2 the first token's state).
func bertOracle(c testmodel.BertConfig, w map[string][]float64, tokens []Token, pooling uint32) []float64 {
	d, n := c.Embd, len(tokens)
	norm := func(x []float64, g, b []float64) []float64 {
		mean, vr := 0.0, 0.0
		for _, v := range x {
			mean += v
		}
		mean /= float64(len(x))
		for _, v := range x {
			vr += (v - mean) * (v - mean)
		}
		vr /= float64(len(x))
		out := make([]float64, len(x))
		for i, v := range x {
			out[i] = (v-mean)/math.Sqrt(vr+1e-12)*g[i] + b[i]
		}
		return out
	}
	// lin is W·x + b for W stored with dims {in, out}: out rows of in.
	lin := func(name string, x []float64, out int) []float64 {
		W, b := w[name+".weight"], w[name+".bias"]
		y := make([]float64, out)
		for o := range out {
			s := b[o]
			for i, v := range x {
				s += W[o*len(x)+i] * v
			}
			y[o] = s
		}
		return y
	}
	gelu := func(x float64) float64 {
		return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
	}
	xs := make([][]float64, n)
	for t, tok := range tokens {
		x := make([]float64, d)
		for i := range d {
			x[i] = w["token_embd.weight"][int(tok)*d+i] + w["token_types.weight"][i] + w["position_embd.weight"][t*d+i]
		}
		xs[t] = norm(x, w["token_embd_norm.weight"], w["token_embd_norm.bias"])
	}
	heads, dh := c.Heads, d/c.Heads
	for l := range c.Layers {
		p := "blk." + string(rune('0'+l)) + "."
		q, k, v := make([][]float64, n), make([][]float64, n), make([][]float64, n)
		for t := range n {
			q[t], k[t], v[t] = lin(p+"attn_q", xs[t], d), lin(p+"attn_k", xs[t], d), lin(p+"attn_v", xs[t], d)
		}
		next := make([][]float64, n)
		for t := range n {
			att := make([]float64, d)
			for h := range heads {
				scores := make([]float64, n)
				top := math.Inf(-1)
				for s := range n {
					dot := 0.0
					for i := range dh {
						dot += q[t][h*dh+i] * k[s][h*dh+i]
					}
					scores[s] = dot / math.Sqrt(float64(dh))
					top = math.Max(top, scores[s])
				}
				sum := 0.0
				for s := range n {
					scores[s] = math.Exp(scores[s] - top)
					sum += scores[s]
				}
				for s := range n {
					for i := range dh {
						att[h*dh+i] += scores[s] / sum * v[s][h*dh+i]
					}
				}
			}
			o := lin(p+"attn_output", att, d)
			for i := range o {
				o[i] += xs[t][i]
			}
			h1 := norm(o, w[p+"attn_output_norm.weight"], w[p+"attn_output_norm.bias"])
			up := lin(p+"ffn_up", h1, c.FF)
			for i := range up {
				up[i] = gelu(up[i])
			}
			down := lin(p+"ffn_down", up, d)
			for i := range down {
				down[i] += h1[i]
			}
			next[t] = norm(down, w[p+"layer_output_norm.weight"], w[p+"layer_output_norm.bias"])
		}
		xs = next
	}
	if pooling == 2 {
		return xs[0]
	}
	out := make([]float64, d)
	for _, x := range xs {
		for i := range d {
			out[i] += x[i] / float64(n)
		}
	}
	return out
}

// A generated BERT-family embedding model (WordPiece vocabulary, learned
// positions, post-norm layers): its embeddings, mean- and CLS-pooled as
// the GGUF says, equal the float64 forward pass of its weights over the
// tokens llama.cpp gives (CLS … SEP), texts batched or alone.
func TestBertEmbeddingsMatchOracle(t *testing.T) {
	for _, pooling := range []uint32{1, 2} {
		c := testmodel.TinyBert()
		c.Pooling = pooling
		path := filepath.Join(t.TempDir(), "bert.gguf")
		if err := testmodel.WriteBertFile(path, c); err != nil {
			t.Fatal(err)
		}
		m, err := Load(path, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		emb, err := m.NewEmbedder(1, 64)
		if err != nil {
			t.Fatal(err)
		}
		defer emb.Close()
		w := bertWeights(t, path)
		texts := []string{"hello owl world", "The cat sat, quietly!", "x"}
		got, _, err := emb.Embed(context.Background(), texts, false)
		if err != nil {
			t.Fatal(err)
		}
		for i, text := range texts {
			toks, err := m.Tokenize(text, true, false)
			if err != nil {
				t.Fatal(err)
			}
			if toks[0] != 2 || toks[len(toks)-1] != 3 {
				t.Fatalf("%q: tokens %v, want CLS … SEP", text, toks)
			}
			// WordPiece: whole words, else a word start and continuations.
			if i == 0 && !slices.Equal(toks, []Token{2, 5, 7, 6, 3}) {
				t.Fatalf("%q: tokens %v, want [CLS ▁hello ▁owl ▁world SEP]", text, toks)
			}
			want := bertOracle(c, w, toks, pooling)
			var dot, ng, nw, worst float64
			for j, v := range want {
				g := float64(got[i][j])
				dot, ng, nw = dot+g*v, ng+g*g, nw+v*v
				worst = math.Max(worst, math.Abs(g-v))
			}
			cos := dot / math.Sqrt(ng*nw)
			// f32 arithmetic against float64 over two layers of unit-scale
			// activations: a few 1e-5 apart.
			if cos < 0.99999 || worst > 1e-3 {
				t.Fatalf("pooling %d, %q (%d tokens): cosine %v, largest difference %v", pooling, text, len(toks), cos, worst)
			}
			alone, _, err := emb.Embed(context.Background(), []string{text}, false)
			if err != nil {
				t.Fatal(err)
			}
			for j := range alone[0] {
				if d := math.Abs(float64(alone[0][j] - got[i][j])); d > 1e-5 {
					t.Fatalf("pooling %d, %q: alone and batched differ by %v", pooling, text, d)
				}
			}
			t.Logf("pooling %d, %q: %d tokens, cosine %.8f, largest difference %.2g", pooling, text, len(toks), cos, worst)
		}
	}
}
