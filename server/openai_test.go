package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ollama "github.com/ollama/ollama/api"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
)

// openAIClient is the official SDK pointed at ts, without retries so that
// every status shows.
func openAIClient(ts string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{option.WithBaseURL(ts + "/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0)}, opts...)...)
}

func chatParams(model, prompt string, maxTokens int64) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:       model,
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("You are brief."), openai.UserMessage(prompt)},
		MaxTokens:   openai.Int(maxTokens),
		Temperature: openai.Float(0),
		Seed:        openai.Int(42),
	}
}

func TestOpenAIModels(t *testing.T) {
	ts := testServer(t, Config{})
	c := openAIClient(ts.URL)
	page, err := c.Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
		if m.Object != "model" || m.OwnedBy != "owl" || m.Created == 0 {
			t.Errorf("model %+v", m)
		}
	}
	want := "espeak ggml-micro ggml-micro.en seer tiny" // the built-in voice first; projectors are not listed
	if got := strings.Join(ids, " "); got != want {
		t.Fatalf("models %q, want %q", got, want)
	}
	m, err := c.Models.Get(context.Background(), "tiny")
	if err != nil || m.ID != "tiny" {
		t.Fatalf("get tiny: %+v %v", m, err)
	}
	_, err = c.Models.Get(context.Background(), "missing")
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Fatalf("get missing: %v", err)
	}
}

func TestOpenAIChat(t *testing.T) {
	ts := testServer(t, Config{})
	c := openAIClient(ts.URL)
	ctx := context.Background()
	res, err := c.Chat.Completions.New(ctx, chatParams("tiny", "Say hi", 12))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Choices) != 1 || res.Choices[0].Message.Role != "assistant" || res.Object != "chat.completion" || !strings.HasPrefix(res.ID, "chatcmpl-") {
		t.Fatalf("response %+v", res)
	}
	u := res.Usage
	if u.PromptTokens <= 0 || u.CompletionTokens <= 0 || u.CompletionTokens > 12 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Fatalf("usage %+v", u)
	}
	if fr := res.Choices[0].FinishReason; (fr == "length") != (u.CompletionTokens == 12) || (fr != "length" && fr != "stop") {
		t.Fatalf("finish %q after %d tokens", fr, u.CompletionTokens)
	}
	// Greedy is deterministic, and a repeated prompt comes from the cache.
	again, err := c.Chat.Completions.New(ctx, chatParams("tiny", "Say hi", 12))
	if err != nil {
		t.Fatal(err)
	}
	if again.Choices[0].Message.Content != res.Choices[0].Message.Content {
		t.Fatalf("greedy answers differ: %q then %q", res.Choices[0].Message.Content, again.Choices[0].Message.Content)
	}
	if again.Usage.PromptTokensDetails.CachedTokens == 0 {
		t.Fatalf("the repeated prompt reused no cached tokens: %+v", again.Usage)
	}

	// The same request streamed gives the same text, piece by piece.
	params := chatParams("tiny", "Say hi", 12)
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		ch := stream.Current()
		acc.AddChunk(ch)
		if len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
			chunks++
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := acc.Choices[0].Message.Content; got != res.Choices[0].Message.Content {
		t.Fatalf("streamed %q, whole %q", got, res.Choices[0].Message.Content)
	}
	if chunks < 2 || acc.Choices[0].FinishReason != res.Choices[0].FinishReason {
		t.Fatalf("%d content chunks, finish %q", chunks, acc.Choices[0].FinishReason)
	}
	if acc.Usage.CompletionTokens != res.Usage.CompletionTokens || acc.Usage.PromptTokens != res.Usage.PromptTokens {
		t.Fatalf("streamed usage %+v, whole %+v", acc.Usage, res.Usage)
	}

	// A stop string ends the text before it.
	whole := res.Choices[0].Message.Content
	if len(whole) > 4 {
		stop := whole[2:4]
		p := chatParams("tiny", "Say hi", 12)
		p.Stop = openai.ChatCompletionNewParamsStopUnion{OfString: openai.String(stop)}
		r, err := c.Chat.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(r.Choices[0].Message.Content, stop) || r.Choices[0].FinishReason != "stop" {
			t.Fatalf("stop %q: %q (%s)", stop, r.Choices[0].Message.Content, r.Choices[0].FinishReason)
		}
	}
}

func TestOpenAIChatJSONSchema(t *testing.T) {
	ts := testServer(t, Config{})
	c := openAIClient(ts.URL)
	schema := map[string]any{
		"type": "object",
		"properties": map[string]any{
			"answer":     map[string]any{"type": "boolean"},
			"confidence": map[string]any{"type": "integer"},
			"animal":     map[string]any{"enum": []string{"owl", "cat"}},
		},
		"required":             []string{"answer", "confidence", "animal"},
		"additionalProperties": false,
	}
	for _, temp := range []float64{0, 1} {
		p := chatParams("tiny", "Is an owl a bird? Answer in JSON.", 400)
		p.Temperature = openai.Float(temp)
		p.ResponseFormat = openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "verdict", Schema: schema, Strict: openai.Bool(true)}}}
		res, err := c.Chat.Completions.New(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Answer     *bool   `json:"answer"`
			Confidence *int64  `json:"confidence"`
			Animal     *string `json:"animal"`
		}
		text := res.Choices[0].Message.Content
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil || v.Answer == nil || v.Confidence == nil || v.Animal == nil || (*v.Animal != "owl" && *v.Animal != "cat") {
			t.Fatalf("temperature %v: %q does not follow the schema (%v)", temp, text, err)
		}
	}
	// json_object: any object.
	p := chatParams("tiny", "JSON please", 200)
	p.ResponseFormat = openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}}
	res, err := c.Chat.Completions.New(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if text := res.Choices[0].Message.Content; res.Choices[0].FinishReason == "stop" && json.Unmarshal([]byte(text), &obj) != nil {
		t.Fatalf("json_object: %q is not an object", text)
	}
	// A schema llama.cpp cannot use is the client's error.
	p.ResponseFormat = openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
		JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "bad", Schema: map[string]any{"type": "no-such-type"}}}}
	_, err = c.Chat.Completions.New(context.Background(), p)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "response_format" {
		t.Fatalf("bad schema: %v", err)
	}
}

func TestOpenAIChatImage(t *testing.T) {
	rec := &recording{Backend: sharedEngine}
	ts := testServer(t, Config{Engine: rec})
	c := openAIClient(ts.URL)
	img := pngImage(t, 32, 24)
	uri := "data:image/png;base64," + base64.StdEncoding.EncodeToString(img)
	params := func(model string) openai.ChatCompletionNewParams {
		return openai.ChatCompletionNewParams{Model: model, MaxTokens: openai.Int(4), Temperature: openai.Float(0), Messages: []openai.ChatCompletionMessageParamUnion{
			openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
				openai.TextContentPart("What is in this picture?"),
				openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: uri}),
			})}}
	}
	// A text-only model refuses images with a clear 400.
	_, err := c.Chat.Completions.New(context.Background(), params("tiny"))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Code != "model_cannot_see" || !strings.Contains(apiErr.Message, "projector") {
		t.Fatalf("image for a text-only model: %v", err)
	}
	// A model with a projector gets the image's bytes and its projector.
	res, err := c.Chat.Completions.New(context.Background(), params("seer"))
	got, engineErr := rec.last()
	if got.Projector != filepath.Join(modelsDir, "mmproj-seer.gguf") || len(got.Messages) != 1 || len(got.Messages[0].Images) != 1 ||
		!bytes.Equal(got.Messages[0].Images[0], img) || got.Messages[0].Content != "What is in this picture?" {
		t.Fatalf("the engine got %+v", got)
	}
	if err != nil || engineErr != nil {
		t.Fatalf("chat with an image: %v (engine: %v)", err, engineErr)
	}
	if len(res.Choices) != 1 || res.Usage.CompletionTokens == 0 || res.Usage.PromptTokens <= 20 {
		t.Fatalf("response %+v", res)
	}
	// The image's cells count as prompt tokens; the same request again is
	// answered the same (greedy) without encoding the image again.
	before := imagesEncoded()
	again, err := c.Chat.Completions.New(context.Background(), params("seer"))
	if err != nil {
		t.Fatal(err)
	}
	if again.Choices[0].Message.Content != res.Choices[0].Message.Content {
		t.Fatalf("same image, different answers: %q, %q", res.Choices[0].Message.Content, again.Choices[0].Message.Content)
	}
	if n := imagesEncoded() - before; n != 0 {
		t.Fatalf("the same image was encoded %d more times", n)
	}
}

func TestOpenAICompletions(t *testing.T) {
	ts := testServer(t, Config{})
	c := openAIClient(ts.URL)
	p := openai.CompletionNewParams{Model: "tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens: openai.Int(10), Temperature: openai.Float(0)}
	res, err := c.Completions.New(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Choices) != 1 || res.Object != "text_completion" || res.Usage.CompletionTokens == 0 || res.Usage.CompletionTokens > 10 {
		t.Fatalf("completion %+v", res)
	}
	stream := c.Completions.NewStreaming(context.Background(), p)
	var text strings.Builder
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) > 0 {
			text.WriteString(ch.Choices[0].Text)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != res.Choices[0].Text {
		t.Fatalf("streamed %q, whole %q", text.String(), res.Choices[0].Text)
	}
}

func TestOpenAITranscriptions(t *testing.T) {
	ts := testServer(t, Config{})
	c := openAIClient(ts.URL)
	ctx := context.Background()
	// Temperature 1 samples once, without beam search or the fallback
	// ladder that random weights would climb, to keep the test short.
	params := func(format openai.AudioResponseFormat, granularities ...string) openai.AudioTranscriptionNewParams {
		return openai.AudioTranscriptionNewParams{File: openai.File(bytes.NewReader(jfkShort), "jfk.wav", "audio/wav"), Model: "ggml-micro.en",
			Language: openai.String("en"), ResponseFormat: format, TimestampGranularities: granularities, Temperature: openai.Float(1)}
	}
	// json, on the whole sample with the default decoding.
	whole := openai.AudioTranscriptionNewParams{File: openai.File(bytes.NewReader(jfkWAV), "jfk.wav", "audio/wav"), Model: "ggml-micro.en"}
	res, err := c.Audio.Transcriptions.New(ctx, whole)
	if err != nil {
		t.Fatal(err)
	}
	if tr := res.AsTranscription(); !tr.JSON.Text.Valid() || tr.Usage.Seconds != 11 {
		t.Fatalf("json: %s", res.RawJSON())
	}
	res, err = c.Audio.Transcriptions.New(ctx, params(openai.AudioResponseFormatJSON))
	if err != nil {
		t.Fatal(err)
	}
	tr := res.AsTranscription()
	if !tr.JSON.Text.Valid() || tr.Usage.Seconds != 3 {
		t.Fatalf("json: %s", res.RawJSON())
	}
	// verbose_json with segments and words
	res, err = c.Audio.Transcriptions.New(ctx, params(openai.AudioResponseFormatVerboseJSON, "word", "segment"))
	if err != nil {
		t.Fatal(err)
	}
	v := res.AsTranscriptionVerbose()
	if v.Language != "english" || v.Duration != 3 || v.Text != tr.Text || !v.JSON.Segments.Valid() || !v.JSON.Words.Valid() {
		t.Fatalf("verbose_json: %s", res.RawJSON())
	}
	for i, s := range v.Segments {
		if s.ID != int64(i) || s.Start < 0 || s.End < s.Start || s.End > 3 {
			t.Fatalf("segment %d: %+v", i, s)
		}
	}
	for _, w := range v.Words {
		if w.End < w.Start || w.End > 3.01 {
			t.Fatalf("word %+v", w)
		}
	}
	// text, srt and vtt come back as text.
	for _, f := range []openai.AudioResponseFormat{openai.AudioResponseFormatText, openai.AudioResponseFormatSRT, openai.AudioResponseFormatVTT} {
		var out string
		if err := c.Post(ctx, "audio/transcriptions", params(f), &out); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		switch f {
		case openai.AudioResponseFormatText:
			if out != strings.ToValidUTF8(tr.Text, "\uFFFD")+"\n" {
				t.Fatalf("text %q, json text %q", out, tr.Text)
			}
		case openai.AudioResponseFormatSRT:
			if len(v.Segments) > 0 && !strings.HasPrefix(out, "1\n00:00:") {
				t.Fatalf("srt %q", out)
			}
		case openai.AudioResponseFormatVTT:
			if !strings.HasPrefix(out, "WEBVTT") {
				t.Fatalf("vtt %q", out)
			}
		}
	}
	// Word timestamps need verbose_json, as OpenAI's API says.
	_, err = c.Audio.Transcriptions.New(ctx, params(openai.AudioResponseFormatJSON, "word"))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "timestamp_granularities" {
		t.Fatalf("word granularity with json: %v", err)
	}
	// Streaming: deltas, then the whole text.
	stream := c.Audio.Transcriptions.NewStreaming(ctx, params(openai.AudioResponseFormatJSON))
	var deltas strings.Builder
	var done string
	var types []string
	for stream.Next() {
		ev := stream.Current()
		types = append(types, ev.Type)
		switch ev.Type {
		case "transcript.text.delta":
			deltas.WriteString(ev.Delta)
		case "transcript.text.done":
			done = ev.Text
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(types) == 0 || types[len(types)-1] != "transcript.text.done" || done != tr.Text || strings.TrimSpace(deltas.String()) != tr.Text {
		t.Fatalf("stream events %v, deltas %q, done %q, want %q", types, deltas.String(), done, tr.Text)
	}
}

func TestOpenAITranslations(t *testing.T) {
	ts := testServer(t, Config{})
	c := openAIClient(ts.URL)
	res, err := c.Audio.Translations.New(context.Background(), openai.AudioTranslationNewParams{
		File: openai.File(bytes.NewReader(jfkShort), "jfk.wav", "audio/wav"), Model: "ggml-micro", Temperature: openai.Float(1)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.JSON.Text.Valid() {
		t.Fatalf("translation %s", res.RawJSON())
	}
	// An English-only model cannot translate.
	_, err = c.Audio.Translations.New(context.Background(), openai.AudioTranslationNewParams{
		File: openai.File(bytes.NewReader(jfkShort), "jfk.wav", "audio/wav"), Model: "ggml-micro.en"})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest {
		t.Fatalf("translating with an English-only model: %v", err)
	}
}

// imagesEncoded is the shared engine's count of image encodings.
func imagesEncoded() int64 {
	var n int64
	for _, m := range sharedEngine.Metrics().Models {
		n += m.ImagesEncoded
	}
	return n
}

// A file named like a model that owl cannot read is not served, and both
// listings say why; ollama's client still reads its listing.
func TestUnusableModelsListed(t *testing.T) {
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(modelsDir, "tiny.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "tiny.gguf"), raw, 0o644)
	os.WriteFile(filepath.Join(dir, "cut.gguf"), raw[:64], 0o644)
	ts := testServer(t, Config{ModelsDir: dir})
	for _, path := range []string{"/v1/models", "/api/tags"} {
		code, body := get(t, ts.URL+path)
		var v struct {
			Unusable []struct{ Name, File, Error string } `json:"unusable"`
		}
		if err := json.Unmarshal(body, &v); code != 200 || err != nil {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		if len(v.Unusable) != 1 || v.Unusable[0].Name != "cut" || v.Unusable[0].File != "cut.gguf" || !strings.Contains(v.Unusable[0].Error, "corrupt") ||
			strings.Contains(v.Unusable[0].Error, dir) {
			t.Fatalf("%s: unusable %+v", path, v.Unusable)
		}
		if strings.Contains(string(body), `"id":"cut"`) || strings.Contains(string(body), `"name":"cut","model"`) {
			t.Fatalf("%s lists the unusable file as a model: %s", path, body)
		}
	}
	u, _ := url.Parse(ts.URL)
	list, err := ollama.NewClient(u, http.DefaultClient).List(t.Context())
	if err != nil || len(list.Models) != 1 || list.Models[0].Name != "tiny" {
		t.Fatalf("ollama client: %+v %v", list, err)
	}
}
