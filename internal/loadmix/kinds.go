package loadmix

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"mime/multipart"
	"strings"
	"time"
)

// sampling varies text requests: greedy or sampled with a seed, and a
// limit of 2 to maxTokens tokens.
func sampling(rng *rand.Rand, maxTokens int) (limit int, temperature float64, seed int) {
	limit = 2 + rng.IntN(max(maxTokens-1, 1))
	if rng.IntN(2) == 1 {
		temperature = 0.8
	}
	return limit, temperature, rng.IntN(1000)
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Prompt is client c's i-th question.
func Prompt(c, i int) string {
	topics := []string{"owls", "rivers", "the moon", "bread", "trains", "snow", "clocks", "maps"}
	return fmt.Sprintf("Client %d, question %d: tell me about %s.", c, i, topics[(c+i)%len(topics)])
}

type chatMessage struct {
	Role    string `json:"role"`
	Content any    `json:"content"`
}

type openAIChat struct {
	Model         string          `json:"model"`
	Messages      []chatMessage   `json:"messages"`
	MaxTokens     int             `json:"max_tokens,omitempty"`
	Temperature   float64         `json:"temperature"`
	Seed          int             `json:"seed"`
	Stream        bool            `json:"stream,omitempty"`
	StreamOptions map[string]bool `json:"stream_options,omitempty"`
}

// OpenAIChat is a chat completion of at most maxTokens tokens, streamed
// or not.
func OpenAIChat(model string, stream bool, maxTokens int) Kind {
	name := kindName("openai chat", stream)
	return Kind{Name: name, Build: func(rng *rand.Rand, c, i int) Request {
		limit, temp, seed := sampling(rng, maxTokens)
		r := openAIChat{Model: model, MaxTokens: limit, Temperature: temp, Seed: seed,
			Messages: []chatMessage{{Role: "system", Content: "You are brief."}, {Role: "user", Content: Prompt(c, i)}}}
		if stream {
			r.Stream, r.StreamOptions = true, map[string]bool{"include_usage": true}
		}
		return Request{Path: "/v1/chat/completions", ContentType: "application/json", Body: marshal(r), MaxTokens: limit}
	}, Check: pick(stream, CheckChatStream, CheckChatCompletion)}
}

// OpenAIVision is a chat completion about an image (a PNG or JPEG file),
// sent as a data URI.
func OpenAIVision(model string, image []byte, maxTokens int) Kind {
	uri := "data:image/png;base64," + base64.StdEncoding.EncodeToString(image)
	return Kind{Name: "openai chat image", Build: func(rng *rand.Rand, c, i int) Request {
		limit, temp, seed := sampling(rng, maxTokens)
		content := []map[string]any{{"type": "text", "text": "What is in this picture? " + Prompt(c, i)},
			{"type": "image_url", "image_url": map[string]string{"url": uri}}}
		r := openAIChat{Model: model, MaxTokens: limit, Temperature: temp, Seed: seed, Messages: []chatMessage{{Role: "user", Content: content}}}
		return Request{Path: "/v1/chat/completions", ContentType: "application/json", Body: marshal(r), MaxTokens: limit}
	}, Check: CheckChatCompletion}
}

// OpenAICompletion is a plain completion, streamed or not.
func OpenAICompletion(model string, stream bool, maxTokens int) Kind {
	name := kindName("openai completion", stream)
	return Kind{Name: name, Build: func(rng *rand.Rand, c, i int) Request {
		limit, temp, seed := sampling(rng, maxTokens)
		r := map[string]any{"model": model, "prompt": Prompt(c, i), "max_tokens": limit, "temperature": temp, "seed": seed, "stream": stream}
		return Request{Path: "/v1/completions", ContentType: "application/json", Body: marshal(r), MaxTokens: limit}
	}, Check: pick(stream, CheckCompletionStream, CheckCompletion)}
}

// Ollama is a request to ollama's /api/chat or /api/generate, streamed or
// not.
func Ollama(model, path string, stream bool, maxTokens int) Kind {
	name := kindName("ollama "+strings.TrimPrefix(path, "/api/"), stream)
	field := "response"
	if path == "/api/chat" {
		field = "message"
	}
	return Kind{Name: name, Ollama: true, Build: func(rng *rand.Rand, c, i int) Request {
		limit, temp, seed := sampling(rng, maxTokens)
		r := map[string]any{"model": model, "stream": stream, "options": map[string]any{"num_predict": limit, "temperature": temp, "seed": seed}}
		if path == "/api/chat" {
			r["messages"] = []chatMessage{{Role: "user", Content: Prompt(c, i)}}
		} else {
			r["prompt"] = Prompt(c, i)
		}
		return Request{Path: path, ContentType: "application/json", Body: marshal(r), MaxTokens: limit}
	}, Check: CheckOllama(model, stream, field)}
}

// Disconnect is a streamed chat without a token limit that the client
// abandons after its first event.
func Disconnect(model string) Kind {
	return Kind{Name: "disconnect", Abandon: true, Build: func(rng *rand.Rand, c, i int) Request {
		r := openAIChat{Model: model, Stream: true, Temperature: 1, Seed: i, Messages: []chatMessage{{Role: "user", Content: Prompt(c, i)}}}
		return Request{Path: "/v1/chat/completions", ContentType: "application/json", Body: marshal(r)}
	}}
}

// Cancel is a chat without a token limit that the client cancels after up
// to after.
func Cancel(model string, after time.Duration) Kind {
	return Kind{Name: "cancel", CancelAfter: after, Build: func(rng *rand.Rand, c, i int) Request {
		r := openAIChat{Model: model, Temperature: 1, Seed: i, Messages: []chatMessage{{Role: "user", Content: Prompt(c, i)}}}
		return Request{Path: "/v1/chat/completions", ContentType: "application/json", Body: marshal(r)}
	}, Check: CheckChatCompletion}
}

// Malformed is a chat whose JSON body is cut short; the server must
// answer 400.
func Malformed(model string) Kind {
	return Kind{Name: "malformed", Malformed: true, Build: func(rng *rand.Rand, c, i int) Request {
		body := `{"model":"` + model + `","messages":[{"role":"user","content":"` + Prompt(c, i)
		return Request{Path: "/v1/chat/completions", ContentType: "application/json", Body: []byte(body[:len(body)-rng.IntN(8)])}
	}}
}

// Transcription is an OpenAI transcription of a WAV file of the given
// length, with the form fields in fields (the default decoding when
// none: beam search of 5 and temperature fallback).
func Transcription(name, model string, wav []byte, seconds float64, fields map[string]string) Kind {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	f, _ := w.CreateFormFile("file", "speech.wav")
	f.Write(wav)
	w.WriteField("model", model)
	w.WriteField("response_format", "json")
	for k, v := range fields {
		w.WriteField(k, v)
	}
	w.Close()
	body, ct := b.Bytes(), w.FormDataContentType()
	return Kind{Name: name, Build: func(*rand.Rand, int, int) Request {
		return Request{Path: "/v1/audio/transcriptions", ContentType: ct, Body: body}
	}, Check: CheckTranscription(seconds)}
}

// kindName is base, with " stream" for streamed requests.
func kindName(base string, stream bool) string {
	if stream {
		return base + " stream"
	}
	return base
}

func pick(stream bool, streamed, whole func(io.Reader, int) error) func(io.Reader, int) error {
	if stream {
		return streamed
	}
	return whole
}

// Usage is OpenAI's usage object.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// checkFinish checks a finish reason and token counts against the limit.
func checkFinish(reason string, u Usage, maxTokens int) error {
	switch {
	case reason != "stop" && reason != "length":
		return fmt.Errorf("finish reason %q", reason)
	case u.PromptTokens <= 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens:
		return fmt.Errorf("usage %+v", u)
	case maxTokens > 0 && (u.CompletionTokens > maxTokens || (reason == "length") != (u.CompletionTokens == maxTokens)):
		return fmt.Errorf("finish %q after %d tokens, max_tokens %d", reason, u.CompletionTokens, maxTokens)
	}
	return nil
}

// CheckChatCompletion checks an OpenAI chat completion.
func CheckChatCompletion(body io.Reader, maxTokens int) error {
	var v struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Choices []struct {
			Message struct {
				Role    string  `json:"role"`
				Content *string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage Usage `json:"usage"`
	}
	if err := decodeOne(body, &v); err != nil {
		return err
	}
	if v.Object != "chat.completion" || !strings.HasPrefix(v.ID, "chatcmpl-") || len(v.Choices) != 1 ||
		v.Choices[0].Message.Role != "assistant" || v.Choices[0].Message.Content == nil {
		return fmt.Errorf("chat completion %+v", v)
	}
	return checkFinish(v.Choices[0].FinishReason, v.Usage, maxTokens)
}

// CheckCompletion checks an OpenAI completion.
func CheckCompletion(body io.Reader, maxTokens int) error {
	var v struct {
		Object  string `json:"object"`
		Choices []struct {
			Text         *string `json:"text"`
			FinishReason string  `json:"finish_reason"`
		} `json:"choices"`
		Usage Usage `json:"usage"`
	}
	if err := decodeOne(body, &v); err != nil {
		return err
	}
	if v.Object != "text_completion" || len(v.Choices) != 1 || v.Choices[0].Text == nil {
		return fmt.Errorf("completion %+v", v)
	}
	return checkFinish(v.Choices[0].FinishReason, v.Usage, maxTokens)
}

// decodeOne decodes one JSON value and requires nothing after it.
func decodeOne(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON body")
	}
	return nil
}

// ReadSSE reads a Server-Sent Events stream that must end with
// "data: [DONE]", returning the events' JSON.
func ReadSSE(body io.Reader) ([][]byte, error) {
	sc := bufio.NewScanner(body)
	var events [][]byte
	done := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
		case done:
			return nil, fmt.Errorf("%q after [DONE]", line)
		case line == "data: [DONE]":
			done = true
		case strings.HasPrefix(line, "data: "):
			events = append(events, []byte(strings.TrimPrefix(line, "data: ")))
		default:
			return nil, fmt.Errorf("not an SSE line: %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !done {
		return nil, fmt.Errorf("the stream ended without [DONE] after %d events", len(events))
	}
	return events, nil
}

// CheckChatStream checks a streamed OpenAI chat completion that asked for
// usage.
func CheckChatStream(body io.Reader, maxTokens int) error {
	events, err := ReadSSE(body)
	if err != nil {
		return err
	}
	finish, sawUsage := "", false
	var u Usage
	for n, ev := range events {
		var v struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct {
					Role    string  `json:"role"`
					Content *string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *Usage `json:"usage"`
			Error any    `json:"error"`
		}
		if err := json.Unmarshal(ev, &v); err != nil || v.Object != "chat.completion.chunk" || v.Error != nil {
			return fmt.Errorf("event %d: %s (%v)", n, ev, err)
		}
		switch {
		case v.Usage != nil:
			if len(v.Choices) != 0 || n != len(events)-1 {
				return fmt.Errorf("usage event %d of %d: %s", n, len(events), ev)
			}
			u, sawUsage = *v.Usage, true
		case len(v.Choices) != 1 || finish != "":
			return fmt.Errorf("event %d after the finish %q: %s", n, finish, ev)
		case n == 0 && v.Choices[0].Delta.Role != "assistant":
			return fmt.Errorf("first event %s", ev)
		case v.Choices[0].FinishReason != nil:
			finish = *v.Choices[0].FinishReason
		}
	}
	if !sawUsage {
		return fmt.Errorf("no usage event among %d", len(events))
	}
	return checkFinish(finish, u, maxTokens)
}

// CheckCompletionStream checks a streamed OpenAI completion.
func CheckCompletionStream(body io.Reader, _ int) error {
	events, err := ReadSSE(body)
	if err != nil {
		return err
	}
	if len(events) == 0 {
		return errors.New("no events")
	}
	for n, ev := range events {
		var v struct {
			Object  string `json:"object"`
			Choices []struct {
				Text         *string `json:"text"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(ev, &v); err != nil || v.Object != "text_completion" || len(v.Choices) != 1 || v.Choices[0].Text == nil {
			return fmt.Errorf("event %d: %s (%v)", n, ev, err)
		}
		last := n == len(events)-1
		if f := v.Choices[0].FinishReason; (f != nil) != last || (last && *f != "stop" && *f != "length") {
			return fmt.Errorf("event %d of %d: %s", n, len(events), ev)
		}
	}
	return nil
}

// CheckOllama checks an ollama answer of model, one object or an NDJSON
// stream, whose text is in field ("message" or "response").
func CheckOllama(model string, stream bool, field string) func(io.Reader, int) error {
	wantModel := marshal(model)
	return func(body io.Reader, maxTokens int) error {
		b, err := io.ReadAll(body)
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if !stream && len(lines) != 1 {
			return fmt.Errorf("%d lines in an answer not streamed", len(lines))
		}
		for n, line := range lines {
			var v map[string]json.RawMessage
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				return fmt.Errorf("line %d: %q: %v", n, line, err)
			}
			last := n == len(lines)-1
			if _, ok := v["error"]; ok {
				return fmt.Errorf("line %d: %s", n, line)
			}
			if !bytes.Equal(v["model"], wantModel) || string(v["done"]) != fmt.Sprint(last) || v[field] == nil {
				return fmt.Errorf("line %d of %d: %s", n, len(lines), line)
			}
			if last {
				var end struct {
					DoneReason string `json:"done_reason"`
					EvalCount  int    `json:"eval_count"`
				}
				json.Unmarshal([]byte(line), &end)
				if (end.DoneReason != "stop" && end.DoneReason != "length") || (maxTokens > 0 && end.EvalCount > maxTokens) {
					return fmt.Errorf("last line %s (num_predict %d)", line, maxTokens)
				}
			}
		}
		return nil
	}
}

// CheckTranscription checks an OpenAI JSON transcription of audio of the
// given length.
func CheckTranscription(seconds float64) func(io.Reader, int) error {
	return func(body io.Reader, _ int) error {
		var v struct {
			Text  *string `json:"text"`
			Usage struct {
				Type    string  `json:"type"`
				Seconds float64 `json:"seconds"`
			} `json:"usage"`
		}
		if err := decodeOne(body, &v); err != nil {
			return err
		}
		if v.Text == nil || v.Usage.Type != "duration" || math.Abs(v.Usage.Seconds-math.Ceil(seconds)) > 1 {
			return fmt.Errorf("transcription %+v of %.1f s", v, seconds)
		}
		return nil
	}
}
