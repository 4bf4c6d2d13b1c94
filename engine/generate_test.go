package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/owlengine/owl/llm"
)

// freshRunner is the runner of a text model loaded by an engine of its
// own (nothing cached from another test), with one slot of perSeq cells.
func freshRunner(t *testing.T, perSeq int) *textRunner {
	t.Helper()
	e, path, _ := tinyEngine(t, Options{NumCtx: perSeq, Parallel: 1, NumBatch: 64})
	return runnerOf(t, e, path)
}

func run(t *testing.T, r *textRunner, req llm.Request) llm.Result {
	t.Helper()
	res, err := r.generate(context.Background(), req, nil, PriorityNormal, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestGreedyDeterministic(t *testing.T) {
	a, b := freshRunner(t, 512), freshRunner(t, 512)
	prompt := testPrompts(t, a, "The owl sat in")[0]
	x, y := run(t, a, ignoreEOS(prompt, 40)), run(t, b, ignoreEOS(prompt, 40))
	if len(x.Tokens) != 40 {
		t.Fatalf("generated %d tokens, want 40", len(x.Tokens))
	}
	if !slices.Equal(x.Tokens, y.Tokens) || x.Text != y.Text {
		t.Fatalf("two greedy runs differ:\n%v\n%v", x.Tokens, y.Tokens)
	}
	if x.FinishReason != llm.FinishLength {
		t.Fatalf("finish reason %q, want %q", x.FinishReason, llm.FinishLength)
	}
	if x.Text != a.model.Detokenize(x.Tokens) {
		t.Fatalf("streamed text %q differs from the detokenized tokens %q", x.Text, a.model.Detokenize(x.Tokens))
	}
}

func TestSeededSamplingDeterministic(t *testing.T) {
	r := freshRunner(t, 256)
	prompt := testPrompts(t, r, "Hello")[0]
	req := ignoreEOS(prompt, 30)
	req.Sampling = llm.DefaultSampling()
	req.Sampling.Seed, req.Sampling.Temperature = 42, 1.5
	a := run(t, r, req)
	b := run(t, freshRunner(t, 256), req)
	if !slices.Equal(a.Tokens, b.Tokens) {
		t.Fatalf("same seed, different tokens:\n%v\n%v", a.Tokens, b.Tokens)
	}
	req.Sampling.Seed = 43
	if c := run(t, r, req); slices.Equal(a.Tokens, c.Tokens) {
		t.Fatalf("seeds 42 and 43 gave the same 30 tokens %v", a.Tokens)
	}
}

func TestPrefixCacheEqualsUncached(t *testing.T) {
	r := freshRunner(t, 512)
	ps := testPrompts(t, r, "The owl sat in the old oak tree. The more it saw", "The owl sat in the old oak tree. A model that hears")
	first, second := ps[0], ps[1]
	run(t, r, ignoreEOS(first, 20))
	cached := run(t, r, ignoreEOS(second, 20))
	uncached := run(t, freshRunner(t, 512), ignoreEOS(second, 20))
	if shared := llm.CommonPrefix(first, second); cached.CachedTokens != shared {
		t.Fatalf("reused %d tokens, want the %d shared ones", cached.CachedTokens, shared)
	}
	if uncached.CachedTokens != 0 {
		t.Fatalf("a fresh model reused %d tokens", uncached.CachedTokens)
	}
	if !slices.Equal(cached.Tokens, uncached.Tokens) {
		t.Fatalf("cached run differs from uncached:\n%v\n%v", cached.Tokens, uncached.Tokens)
	}
	// The same prompt again: all but the last token come from the cache.
	again := run(t, r, ignoreEOS(second, 20))
	if again.CachedTokens != len(second)-1 || !slices.Equal(again.Tokens, uncached.Tokens) {
		t.Fatalf("repeat: reused %d of %d tokens, tokens equal: %v", again.CachedTokens, len(second), slices.Equal(again.Tokens, uncached.Tokens))
	}
}

func TestStopString(t *testing.T) {
	r := freshRunner(t, 256)
	prompt := testPrompts(t, r, "The owl")[0]
	full := run(t, r, ignoreEOS(prompt, 40))
	if len(full.Text) < 8 {
		t.Skipf("generated text %q too short to pick a stop string", full.Text)
	}
	// Stop at a string taken from the middle of the unconstrained output.
	runes := []rune(full.Text)
	stop := string(runes[len(runes)/2 : len(runes)/2+2])
	want := full.Text[:strings.Index(full.Text, stop)]
	var streamed strings.Builder
	req := ignoreEOS(prompt, 40)
	req.Stop = []string{stop}
	res, err := freshRunner(t, 256).generate(context.Background(), req, nil, PriorityNormal,
		func(c llm.Chunk) error { streamed.WriteString(c.Text); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Text != want || streamed.String() != want {
		t.Fatalf("stop %q: got %q (streamed %q), want %q", stop, res.Text, streamed.String(), want)
	}
	if res.FinishReason != llm.FinishStop {
		t.Fatalf("finish reason %q, want stop", res.FinishReason)
	}
}

// Cancelling between tokens ends the request at the loop's next step; the
// model serves the next.
func TestCancelBetweenTokens(t *testing.T) {
	r := freshRunner(t, 256)
	prompt := testPrompts(t, r, "Hello")[0]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	res, err := r.generate(ctx, ignoreEOS(prompt, 100), nil, PriorityNormal, func(c llm.Chunk) error {
		n += len(c.Tokens)
		if n == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// The loop notices at its next step; the callback may lag the loop on
	// a busy machine, so the bound is that generation stopped well short
	// of the 100 asked, not how many steps ran meanwhile.
	if len(res.Tokens) < 3 || len(res.Tokens) >= 50 {
		t.Fatalf("generated %d tokens after cancelling at 3", len(res.Tokens))
	}
	if _, err := r.generate(context.Background(), llm.Request{Prompt: prompt, MaxTokens: 2}, nil, PriorityNormal, nil); err != nil {
		t.Fatalf("after cancel: %v", err)
	}
}

func TestCallbackErrorStops(t *testing.T) {
	r := freshRunner(t, 256)
	boom := errors.New("client went away")
	_, err := r.generate(context.Background(), ignoreEOS(testPrompts(t, r, "Hello")[0], 50), nil, PriorityNormal,
		func(llm.Chunk) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the callback's error", err)
	}
}

func TestContextLimits(t *testing.T) {
	r := freshRunner(t, 64)
	long := testPrompts(t, r, strings.Repeat("the owl ", 100))[0]
	_, err := r.generate(context.Background(), llm.Request{Prompt: long, MaxTokens: 4}, nil, PriorityNormal, nil)
	if !errors.Is(err, ErrContextFull) {
		t.Fatalf("err = %v, want ErrContextFull", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprint(r.perSeq)) {
		t.Fatalf("error %q does not give the context size", err)
	}
	// A prompt that fits stops with "length" when the context fills up.
	res := run(t, r, llm.Request{Prompt: testPrompts(t, r, "Hello")[0], IgnoreEOS: true})
	if res.FinishReason != llm.FinishLength || len(res.Tokens)+res.PromptTokens != r.perSeq {
		t.Fatalf("finish %q after %d+%d tokens in a %d-token context", res.FinishReason, res.PromptTokens, len(res.Tokens), r.perSeq)
	}
}

func TestBadRequests(t *testing.T) {
	r := freshRunner(t, 128)
	for name, req := range map[string]llm.Request{
		"empty prompt":   {},
		"negative max":   {Prompt: []llm.Token{1}, MaxTokens: -1},
		"top-p above 1":  {Prompt: []llm.Token{1}, Sampling: llm.Sampling{Temperature: 1, TopP: 2}},
		"negative min-p": {Prompt: []llm.Token{1}, Sampling: llm.Sampling{Temperature: 1, MinP: -0.1}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := r.generate(context.Background(), req, nil, PriorityNormal, nil); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// A random model constrained by a schema's grammar still writes JSON that
// the schema accepts, at every temperature; the same model unconstrained
// writes text that is not.
func TestGrammarConstrainsToSchema(t *testing.T) {
	e, path, _ := tinyEngine(t, Options{NumCtx: 512, Parallel: 1})
	schema := []byte(`{"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":"integer"},"tag":{"enum":["owl","bat"]}},"required":["ok","n","tag"],"additionalProperties":false}`)
	for _, temp := range []float32{0, 0.8, 1.5} {
		s := llm.DefaultSampling()
		s.Temperature, s.Seed = temp, 7
		res, err := e.Generate(context.Background(), GenerateRequest{Model: path, Prompt: "Answer in JSON:",
			GenerateOptions: GenerateOptions{Sampling: s, MaxTokens: 300, JSONSchema: schema}}, nil)
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
		if res.FinishReason != llm.FinishStop {
			t.Fatalf("temperature %v: finish %q, want stop once the object is complete", temp, res.FinishReason)
		}
	}
	r := runnerOf(t, e, path)
	if res := run(t, r, ignoreEOS(testPrompts(t, r, "Answer in JSON:")[0], 40)); json.Valid([]byte(res.Text)) {
		t.Fatalf("the unconstrained model wrote JSON by chance (%q): the test proves nothing", res.Text)
	}
}
