package server

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ollama "github.com/ollama/ollama/api"
	ollamamodel "github.com/ollama/ollama/types/model"
	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/testmodel"
)

func norm(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}

func maxDiff(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		d = max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

// Embeddings of the tiny generative model (mean-pooled) through OpenAI's
// SDK and ollama's client: unit vectors, float and base64 the same, texts
// batched equal to texts alone, the same text twice the same vector,
// dimensions cut and renormalized.
func TestEmbeddingsOverBothAPIs(t *testing.T) {
	ts := testServer(t, Config{})
	ctx := context.Background()
	c := openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0))
	texts := []string{"The owl sees at night.", "Owls hunt mice.", "A completely different sentence about boats.", "The owl sees at night."}
	batch, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "tiny", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: texts}})
	if err != nil {
		t.Fatal(err)
	}
	if len(batch.Data) != 4 || batch.Usage.PromptTokens < 8 {
		t.Fatalf("batch: %d embeddings, %d tokens", len(batch.Data), batch.Usage.PromptTokens)
	}
	for i, d := range batch.Data {
		if d.Index != int64(i) || math.Abs(norm(d.Embedding)-1) > 1e-4 || len(d.Embedding) != 64 {
			t.Fatalf("embedding %d: index %d, norm %v, width %d", i, d.Index, norm(d.Embedding), len(d.Embedding))
		}
		alone, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "tiny", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(texts[i])}})
		if err != nil {
			t.Fatal(err)
		}
		if d := maxDiff(alone.Data[0].Embedding, d.Embedding); d > 1e-4 {
			t.Fatalf("text %d: batched and alone differ by %v", i, d)
		}
	}
	if d := maxDiff(batch.Data[0].Embedding, batch.Data[3].Embedding); d > 1e-5 {
		t.Fatalf("the same text twice differs by %v", d)
	}
	if d := maxDiff(batch.Data[0].Embedding, batch.Data[2].Embedding); d < 1e-3 {
		t.Fatalf("different texts give the same vector (%v)", d)
	}
	b64, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "tiny", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(texts[0])},
		EncodingFormat: openai.EmbeddingNewParamsEncodingFormatBase64})
	if err != nil {
		t.Fatal(err)
	}
	// The SDK decodes base64 itself; decode the raw field too.
	var raw string
	if f, ok := b64.Data[0].JSON.ExtraFields["embedding"]; ok {
		raw = f.Raw()
	} else {
		raw = b64.Data[0].JSON.Embedding.Raw()
	}
	if len(raw) > 2 && raw[0] == '"' {
		bytes, err := base64.StdEncoding.DecodeString(raw[1 : len(raw)-1])
		if err != nil || len(bytes) != 4*64 {
			t.Fatalf("base64: %d bytes %v", len(bytes), err)
		}
		for j := range 64 {
			if x := float64(math.Float32frombits(binary.LittleEndian.Uint32(bytes[4*j:]))); math.Abs(x-batch.Data[0].Embedding[j]) > 1e-4 {
				t.Fatalf("base64 value %d: %v, float %v", j, x, batch.Data[0].Embedding[j])
			}
		}
	} else if d := maxDiff(b64.Data[0].Embedding, batch.Data[0].Embedding); d > 1e-4 {
		t.Fatalf("base64 and float differ by %v (%s)", d, raw)
	}
	cut, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "tiny", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(texts[0])}, Dimensions: openai.Int(16)})
	if err != nil || len(cut.Data[0].Embedding) != 16 || math.Abs(norm(cut.Data[0].Embedding)-1) > 1e-4 {
		t.Fatalf("dimensions 16: %v", err)
	}
	code, _, body := post(t, ts.URL+"/v1/embeddings", "application/json", []byte(`{"model":"tiny","input":[]}`))
	if code != http.StatusBadRequest {
		t.Fatalf("no input: %d %s", code, body)
	}
	code, _, body = post(t, ts.URL+"/v1/embeddings", "application/json", []byte(`{"model":"tiny","input":"x","dimensions":100000}`))
	if code != http.StatusBadRequest {
		t.Fatalf("too many dimensions: %d %s", code, body)
	}

	u, _ := url.Parse(ts.URL)
	cl := ollama.NewClient(u, http.DefaultClient)
	er, err := cl.Embed(ctx, &ollama.EmbedRequest{Model: "tiny", Input: []string{texts[0], texts[1]}})
	if err != nil || len(er.Embeddings) != 2 || er.PromptEvalCount < 4 {
		t.Fatalf("ollama embed: %+v %v", er, err)
	}
	for i := range 2 {
		v := make([]float64, len(er.Embeddings[i]))
		for j, x := range er.Embeddings[i] {
			v[j] = float64(x)
		}
		if d := maxDiff(v, batch.Data[i].Embedding); d > 1e-4 {
			t.Fatalf("ollama and OpenAI differ by %v", d)
		}
	}
	old, err := cl.Embeddings(ctx, &ollama.EmbeddingRequest{Model: "tiny", Prompt: texts[0]})
	if err != nil || len(old.Embedding) != 64 {
		t.Fatalf("ollama embeddings: %v", err)
	}
	if n := norm(old.Embedding); n == 0 {
		t.Fatal("a zero embedding")
	}
	// The old endpoint's vector, normalized, is the new one's.
	n := norm(old.Embedding)
	for j := range old.Embedding {
		old.Embedding[j] /= n
	}
	if d := maxDiff(old.Embedding, batch.Data[0].Embedding); d > 1e-4 {
		t.Fatalf("the old endpoint differs by %v once normalized", d)
	}
	var se ollama.StatusError
	if _, err := cl.Embed(ctx, &ollama.EmbedRequest{Model: "ggml-micro.en", Input: "x"}); !errors.As(err, &se) || se.StatusCode != http.StatusBadRequest {
		t.Fatalf("a speech model's embeddings: %v", err)
	}
}

// Embedding models of three families (generated: BERT and nomic-bert
// with a WordPiece vocabulary, gemma-embedding with a BPE one; mean
// pooling) through both APIs: unit vectors of their width, batched equal
// to alone, the same over both; show says they embed (and not complete).
func TestEmbeddingsBertModel(t *testing.T) {
	dir := t.TempDir()
	if err := testmodel.WriteBertFile(filepath.Join(dir, "bert.gguf"), testmodel.TinyBert()); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteBertFile(filepath.Join(dir, "nomic.gguf"), testmodel.TinyNomicBert()); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteLlamaFile(filepath.Join(dir, "gemma-embedding.gguf"), testmodel.TinyGemmaEmbedding()); err != nil {
		t.Fatal(err)
	}
	// A generative model converted to pool its last token, its chat
	// template (one that takes tools and thinks) kept: it embeds only.
	qwenTpl, err := os.ReadFile(filepath.Join("..", "llm", "testdata", "templates", "qwen3.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	qe := testmodel.TinyLlama()
	qe.Embd, qe.Name, qe.ChatTpl, qe.Pooling = 32, "owl-test-qwen-embedding", string(qwenTpl), 3
	if err := testmodel.WriteLlamaFile(filepath.Join(dir, "qwen-embedding.gguf"), qe); err != nil {
		t.Fatal(err)
	}
	e := engine.New(engine.Options{Threads: 1, NumCtx: 256, Parallel: 1, CacheDir: filepath.Join(t.TempDir(), "cache")})
	t.Cleanup(func() { e.Close() })
	ts := testServer(t, Config{ModelsDir: dir, Engine: e})
	ctx := t.Context()
	c := openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0))
	u, _ := url.Parse(ts.URL)
	oc := ollama.NewClient(u, http.DefaultClient)
	texts := []string{"hello owl world", "the owl hunts at night.", "x"}
	for _, model := range []string{"bert", "nomic", "gemma-embedding", "qwen-embedding"} {
		batch, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: model, Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: texts}})
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		for i, d := range batch.Data {
			if len(d.Embedding) != 32 || math.Abs(norm(d.Embedding)-1) > 1e-4 {
				t.Fatalf("%s: embedding %d: width %d, norm %v", model, i, len(d.Embedding), norm(d.Embedding))
			}
			alone, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: model, Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(texts[i])}})
			if err != nil {
				t.Fatal(err)
			}
			for j := range d.Embedding {
				if math.Abs(d.Embedding[j]-alone.Data[0].Embedding[j]) > 1e-5 {
					t.Fatalf("%s: %q: batched and alone differ at %d", model, texts[i], j)
				}
			}
		}
		res, err := oc.Embed(ctx, &ollama.EmbedRequest{Model: model, Input: texts[0]})
		if err != nil || len(res.Embeddings) != 1 || len(res.Embeddings[0]) != 32 {
			t.Fatalf("%s: ollama embed: %+v %v", model, res, err)
		}
		for j, v := range res.Embeddings[0] {
			if math.Abs(float64(v)-batch.Data[0].Embedding[j]) > 1e-5 {
				t.Fatalf("%s: ollama's and OpenAI's embeddings differ at %d", model, j)
			}
		}
		show, err := oc.Show(ctx, &ollama.ShowRequest{Model: model})
		if err != nil || !slices.Equal(show.Capabilities, []ollamamodel.Capability{"embedding"}) {
			t.Fatalf("%s: show: %v %+v", model, err, show.Capabilities)
		}
		// It does not chat: a clear 400, not a stream of nonsense.
		no := false
		var se ollama.StatusError
		err = oc.Chat(ctx, &ollama.ChatRequest{Model: model, Stream: &no, Messages: []ollama.Message{{Role: "user", Content: "hi"}}}, func(ollama.ChatResponse) error { return nil })
		if !errors.As(err, &se) || se.StatusCode != http.StatusBadRequest || !strings.Contains(se.ErrorMessage, "embedding model") {
			t.Fatalf("%s: chat: %v", model, err)
		}
	}
}
