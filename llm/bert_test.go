package llm

import (
	"context"
	"encoding/binary"
	"fmt"
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
// tokens (or of its "nomic-bert" form: rotary positions, fused QKV,
// SwiGLU, no biases), pooled (1 mean, 2 the first token's state).
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
			s := 0.0
			if b != nil {
				s = b[o]
			}
			for i, v := range x {
				s += W[o*len(x)+i] * v
			}
			y[o] = s
		}
		return y
	}
	nomic := c.Arch == "nomic-bert"
	xs := make([][]float64, n)
	for t, tok := range tokens {
		x := make([]float64, d)
		for i := range d {
			x[i] = w["token_embd.weight"][int(tok)*d+i] + w["token_types.weight"][i]
			if !nomic {
				x[i] += w["position_embd.weight"][t*d+i]
			}
		}
		xs[t] = norm(x, w["token_embd_norm.weight"], w["token_embd_norm.bias"])
	}
	heads := c.Heads
	for l := range c.Layers {
		p := "blk." + string(rune('0'+l)) + "."
		q, k, v := make([][]float64, n), make([][]float64, n), make([][]float64, n)
		for t := range n {
			if nomic {
				qkv := lin(p+"attn_qkv", xs[t], 3*d)
				q[t], k[t], v[t] = ropeNeox(qkv[:d], heads, t, float64(c.RopeBase)), ropeNeox(qkv[d:2*d], heads, t, float64(c.RopeBase)), qkv[2*d:]
				continue
			}
			q[t], k[t], v[t] = lin(p+"attn_q", xs[t], d), lin(p+"attn_k", xs[t], d), lin(p+"attn_v", xs[t], d)
		}
		atts := attend(q, k, v, heads, heads, nil)
		next := make([][]float64, n)
		for t := range n {
			o := lin(p+"attn_output", atts[t], d)
			for i := range o {
				o[i] += xs[t][i]
			}
			h1 := norm(o, w[p+"attn_output_norm.weight"], w[p+"attn_output_norm.bias"])
			up := lin(p+"ffn_up", h1, c.FF)
			if nomic {
				gate := lin(p+"ffn_gate", h1, c.FF)
				for i := range up {
					up[i] *= gate[i] / (1 + math.Exp(-gate[i]))
				}
			} else {
				for i := range up {
					up[i] = gelu(up[i])
				}
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

// loadEmbedder loads the model at path and an embedder of it.
func loadEmbedder(t *testing.T, path string) (*Model, *Embedder) {
	t.Helper()
	m, err := Load(path, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	emb, err := m.NewEmbedder(1, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emb.Close() })
	return m, emb
}

// matchOracle checks the embeddings of texts, batched and each alone,
// against oracle over the tokens llama.cpp gives them (check, when set,
// sees those tokens first). f32 arithmetic against float64 over layers of
// unit-scale activations: a few 1e-5 apart, so the cosine must be at
// least 0.99999 and no component more than 1e-3 off; alone and batched
// within 1e-5.
func matchOracle(t *testing.T, name string, m *Model, emb *Embedder, texts []string, oracle func([]Token) []float64, check func(i int, toks []Token)) {
	t.Helper()
	got, _, err := emb.Embed(context.Background(), texts, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, text := range texts {
		toks, err := m.Tokenize(text, true, false)
		if err != nil {
			t.Fatal(err)
		}
		if check != nil {
			check(i, toks)
		}
		var dot, ng, nw, worst float64
		for j, v := range oracle(toks) {
			g := float64(got[i][j])
			dot, ng, nw = dot+g*v, ng+g*g, nw+v*v
			worst = math.Max(worst, math.Abs(g-v))
		}
		cos := dot / math.Sqrt(ng*nw)
		if cos < 0.99999 || worst > 1e-3 {
			t.Fatalf("%s, %q (%d tokens): cosine %v, largest difference %v", name, text, len(toks), cos, worst)
		}
		alone, _, err := emb.Embed(context.Background(), []string{text}, false)
		if err != nil {
			t.Fatal(err)
		}
		for j := range alone[0] {
			if d := math.Abs(float64(alone[0][j] - got[i][j])); d > 1e-5 {
				t.Fatalf("%s, %q: alone and batched differ by %v", name, text, d)
			}
		}
		t.Logf("%s, %q: %d tokens, cosine %.8f, largest difference %.2g", name, text, len(toks), cos, worst)
	}
}

// A generated BERT-family embedding model (WordPiece vocabulary, learned
// positions, post-norm layers; and nomic-bert's rotary, SwiGLU form): its
// embeddings, mean- and CLS-pooled as the GGUF says, equal the float64
// forward pass of its weights over the tokens llama.cpp gives (CLS …
// SEP), texts batched or alone.
func TestBertEmbeddingsMatchOracle(t *testing.T) {
	for _, run := range []struct {
		c       testmodel.BertConfig
		pooling uint32
	}{{testmodel.TinyBert(), 1}, {testmodel.TinyBert(), 2}, {testmodel.TinyNomicBert(), 1}, {testmodel.TinyNomicBert(), 2}} {
		c, pooling := run.c, run.pooling
		c.Pooling = pooling
		path := filepath.Join(t.TempDir(), "bert.gguf")
		if err := testmodel.WriteBertFile(path, c); err != nil {
			t.Fatal(err)
		}
		m, emb := loadEmbedder(t, path)
		w := bertWeights(t, path)
		texts := []string{"hello owl world", "The cat sat, quietly!", "x"}
		matchOracle(t, fmt.Sprintf("%s, pooling %d", c.Name, pooling), m, emb, texts,
			func(toks []Token) []float64 { return bertOracle(c, w, toks, pooling) },
			func(i int, toks []Token) {
				if toks[0] != 2 || toks[len(toks)-1] != 3 {
					t.Fatalf("%q: tokens %v, want CLS … SEP", texts[i], toks)
				}
				// WordPiece: whole words, else a word start and continuations.
				if i == 0 && !slices.Equal(toks, []Token{2, 5, 7, 6, 3}) {
					t.Fatalf("%q: tokens %v, want [CLS ▁hello ▁owl ▁world SEP]", texts[i], toks)
				}
			})
	}
}

// gelu is GELU in its tanh form, as ggml computes it.
func gelu(x float64) float64 {
	return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
}

// attend is softmax attention of each token's query over the keys and
// values of the tokens visible to it (all when visible is nil), scaled by
// 1/sqrt(head width), query head h reading key-value head h/(heads/kvHeads).
func attend(q, k, v [][]float64, heads, kvHeads int, visible func(t, s int) bool) [][]float64 {
	n, dh := len(q), len(q[0])/heads
	out := make([][]float64, n)
	for t := range n {
		out[t] = make([]float64, len(q[0]))
		for h := range heads {
			kh := h / (heads / kvHeads)
			scores := make([]float64, n)
			top := math.Inf(-1)
			for s := range n {
				scores[s] = math.Inf(-1)
				if visible != nil && !visible(t, s) {
					continue
				}
				dot := 0.0
				for i := range dh {
					dot += q[t][h*dh+i] * k[s][kh*dh+i]
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
					out[t][h*dh+i] += scores[s] / sum * v[s][kh*dh+i]
				}
			}
		}
	}
	return out
}

// ropeNeox rotates each head of x (heads of equal width) by position pos
// the way llama.cpp's NEOX rope does: dimension i pairs with i + width/2,
// at frequency base^(-2i/width).
func ropeNeox(x []float64, heads, pos int, base float64) []float64 {
	out := slices.Clone(x)
	dh := len(x) / heads
	for h := range heads {
		for i := range dh / 2 {
			theta := float64(pos) * math.Pow(base, -2*float64(i)/float64(dh))
			a, b := x[h*dh+i], x[h*dh+i+dh/2]
			out[h*dh+i] = a*math.Cos(theta) - b*math.Sin(theta)
			out[h*dh+i+dh/2] = a*math.Sin(theta) + b*math.Cos(theta)
		}
	}
	return out
}

// gemmaEmbeddingOracle is the float64 forward pass of llama.cpp's
// "gemma-embedding" graph over tokens, mean-pooled: embeddings scaled by
// sqrt(n_embd); per layer RMS norm, Q and K with per-head RMS norms and
// NEOX rope (base 10000 on the windowed layers, the model's on every
// sixth), bidirectional attention within the symmetric window, a norm
// after attention and after the GELU-gated feed-forward; a last norm.
func gemmaEmbeddingOracle(c testmodel.LlamaConfig, w map[string][]float64, tokens []Token) []float64 {
	d, n, dh := c.Embd, len(tokens), c.Embd/c.Heads
	kvDim := dh * c.HeadsKV
	rms := func(x, g []float64) []float64 {
		ss := 0.0
		for _, v := range x {
			ss += v * v
		}
		s := 1 / math.Sqrt(ss/float64(len(x))+1e-5)
		out := make([]float64, len(x))
		for i, v := range x {
			out[i] = v * s * g[i]
		}
		return out
	}
	lin := func(name string, x []float64, out int) []float64 {
		W := w[name+".weight"]
		y := make([]float64, out)
		for o := range out {
			for i, v := range x {
				y[o] += W[o*len(x)+i] * v
			}
		}
		return y
	}
	perHead := func(x, g []float64) []float64 {
		out := make([]float64, 0, len(x))
		for h := 0; h < len(x); h += dh {
			out = append(out, rms(x[h:h+dh], g)...)
		}
		return out
	}
	add := func(a, b []float64) []float64 {
		out := slices.Clone(a)
		for i := range out {
			out[i] += b[i]
		}
		return out
	}
	xs := make([][]float64, n)
	for t, tok := range tokens {
		xs[t] = make([]float64, d)
		for i := range d {
			xs[t][i] = w["token_embd.weight"][int(tok)*d+i] * math.Sqrt(float64(d))
		}
	}
	for l := range c.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		windowed := l%6 < 5
		base := float64(c.RopeBase)
		if windowed {
			base = 10000
		}
		q, k, v := make([][]float64, n), make([][]float64, n), make([][]float64, n)
		for t := range n {
			h := rms(xs[t], w[p+"attn_norm.weight"])
			q[t] = ropeNeox(perHead(lin(p+"attn_q", h, d), w[p+"attn_q_norm.weight"]), c.Heads, t, base)
			k[t] = ropeNeox(perHead(lin(p+"attn_k", h, kvDim), w[p+"attn_k_norm.weight"]), c.HeadsKV, t, base)
			v[t] = lin(p+"attn_v", h, kvDim)
		}
		visible := func(t, s int) bool { return !windowed || (s-t <= c.SlidingWindow/2 && t-s <= c.SlidingWindow/2) }
		atts := attend(q, k, v, c.Heads, c.HeadsKV, visible)
		next := make([][]float64, n)
		for t := range n {
			att := atts[t]
			sa := add(rms(lin(p+"attn_output", att, d), w[p+"post_attention_norm.weight"]), xs[t])
			f := rms(sa, w[p+"ffn_norm.weight"])
			gate, up := lin(p+"ffn_gate", f, c.FF), lin(p+"ffn_up", f, c.FF)
			for i := range up {
				up[i] *= gelu(gate[i])
			}
			next[t] = add(rms(lin(p+"ffn_down", up, d), w[p+"post_ffw_norm.weight"]), sa)
		}
		xs = next
	}
	out := make([]float64, d)
	for _, x := range xs {
		x = rms(x, w["output_norm.weight"])
		for i := range d {
			out[i] += x[i] / float64(n)
		}
	}
	return out
}

// A generated gemma-embedding model (EmbeddingGemma's architecture, six
// layers, a window of two tokens each side): its mean-pooled embeddings
// equal the float64 forward pass of its weights, for texts shorter and
// longer than the window, batched or alone.
func TestGemmaEmbeddingMatchesOracle(t *testing.T) {
	c := testmodel.TinyGemmaEmbedding()
	path := filepath.Join(t.TempDir(), "gemma-embedding.gguf")
	if err := testmodel.WriteLlamaFile(path, c); err != nil {
		t.Fatal(err)
	}
	m, emb := loadEmbedder(t, path)
	w := bertWeights(t, path)
	texts := []string{"hello owl", "The quick brown fox jumps over the lazy dog, twice.", "x"}
	matchOracle(t, c.Name, m, emb, texts, func(toks []Token) []float64 { return gemmaEmbeddingOracle(c, w, toks) }, nil)
}
