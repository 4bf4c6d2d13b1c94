package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/store"
)

// OpenAI request bodies. Fields owl does not use are ignored, as clients
// send many; fields whose meaning owl cannot honor are refused.

// chatCompletionRequest is the body of POST /v1/chat/completions.
type chatCompletionRequest struct {
	Model               string          `json:"model"`
	Messages            []chatMessage   `json:"messages"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Seed                *int64          `json:"seed"`
	Stop                stopList        `json:"stop"`
	N                   *int            `json:"n"`
	ResponseFormat      *responseFormat `json:"response_format"`
	Tools               json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"` // false: at most one call an answer
	// ReasoningEffort turns a thinking model's reasoning off ("none",
	// "minimal") or on ("low", "medium", "high"); the reasoning comes back
	// as reasoning_content.
	ReasoningEffort string `json:"reasoning_effort"`
}

// think is what reasoning_effort asks of a thinking model (nil: its own way).
func (r *chatCompletionRequest) think() (*bool, error) {
	on, off := true, false
	switch r.ReasoningEffort {
	case "":
		return nil, nil
	case "none", "minimal":
		return &off, nil
	case "low", "medium", "high":
		return &on, nil
	}
	return nil, badRequest("reasoning_effort", "reasoning_effort %s: want none, minimal, low, medium or high", quoteShort(r.ReasoningEffort))
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// chatMessage is one message; its content is a string, an array of parts,
// or null.
type chatMessage struct {
	Role       string           `json:"role"`
	Content    messageContent   `json:"content"`
	ToolCalls  []openAIToolCall `json:"tool_calls"`
	ToolCallID string           `json:"tool_call_id"`
	Name       string           `json:"name"`
}

type messageContent struct {
	Text  string
	Parts []contentPart
}

// UnmarshalJSON takes a string, an array of parts, or null.
func (c *messageContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		return nil
	case b[0] == '"':
		return json.Unmarshal(b, &c.Text)
	case b[0] == '[':
		return json.Unmarshal(b, &c.Parts)
	}
	return badRequest("messages", "message content must be a string or an array of parts")
}

// contentPart is {"type":"text","text":...} or {"type":"image_url",
// "image_url":{"url":...}} (or "image_url":"..." as some clients send).
type contentPart struct {
	Type     string          `json:"type"`
	Text     string          `json:"text"`
	ImageURL json.RawMessage `json:"image_url"`
}

func (p contentPart) imageURL() (string, error) {
	b := bytes.TrimSpace(p.ImageURL)
	if len(b) > 0 && b[0] == '"' {
		var s string
		err := json.Unmarshal(b, &s)
		return s, err
	}
	var o struct {
		URL string `json:"url"`
	}
	if len(b) == 0 || string(b) == "null" {
		return "", nil
	}
	err := json.Unmarshal(b, &o)
	return o.URL, err
}

// stopList is a string, an array of strings, or null.
type stopList []string

// UnmarshalJSON takes a string, an array of strings, or null.
func (s *stopList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		*s = nil
		return nil
	case b[0] == '"':
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = stopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return badRequest("stop", "stop must be a string or an array of strings")
	}
	*s = many
	return nil
}

// responseFormat is {"type": "text" | "json_object" | "json_schema",
// "json_schema": {"name", "schema", "strict"}}.
type responseFormat struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name   string          `json:"name"`
		Schema json.RawMessage `json:"schema"`
		Strict *bool           `json:"strict"`
	} `json:"json_schema"`
}

// anyObjectSchema is the schema of json_object: any JSON object.
var anyObjectSchema = []byte(`{"type":"object"}`)

// schema returns the JSON schema the format asks for, nil for free text.
func (f *responseFormat) schema() ([]byte, error) {
	if f == nil {
		return nil, nil
	}
	switch f.Type {
	case "", "text":
		return nil, nil
	case "json_object":
		return anyObjectSchema, nil
	case "json_schema":
		if f.JSONSchema == nil || len(bytes.TrimSpace(f.JSONSchema.Schema)) == 0 || string(f.JSONSchema.Schema) == "null" {
			return anyObjectSchema, nil
		}
		if !json.Valid(f.JSONSchema.Schema) || bytes.TrimSpace(f.JSONSchema.Schema)[0] != '{' {
			return nil, badRequest("response_format", "response_format.json_schema.schema must be a JSON object")
		}
		return f.JSONSchema.Schema, nil
	}
	return nil, badRequest("response_format", "response_format type %q is not supported (want text, json_object or json_schema)", truncate(f.Type, 40))
}

// samplingParams are the OpenAI sampling fields shared by chat and
// completions.
type samplingParams struct {
	maxTokens   *int
	temperature *float64
	topP        *float64
	seed        *int64
	stop        stopList
	n           *int
}

// withModel fills the fields the client left out from a created model's
// parameters (temperature, top_p, seed, stop, num_predict).
func (p samplingParams) withModel(cfg *store.ModelConfig) samplingParams {
	if cfg == nil || len(cfg.Parameters) == 0 {
		return p
	}
	o, err := modelOptions(cfg, nil)
	if err != nil || o == nil {
		return p // checked when the model was created
	}
	if p.temperature == nil {
		p.temperature = o.Temperature
	}
	if p.topP == nil {
		p.topP = o.TopP
	}
	if p.seed == nil {
		p.seed = o.Seed
	}
	if p.stop == nil {
		p.stop = o.Stop
	}
	if p.maxTokens == nil && o.NumPredict != nil && *o.NumPredict > 0 {
		p.maxTokens = o.NumPredict
	}
	return p
}

// generateOptions checks p and turns it into engine options, starting from
// llama.cpp's defaults for the fields the client left out.
func (p samplingParams) generateOptions() (engine.GenerateOptions, error) {
	o := engine.GenerateOptions{Sampling: engine.DefaultSampling()}
	if p.n != nil && *p.n != 1 {
		return o, badRequest("n", "n=%d: owl returns one choice per request (n=1)", *p.n)
	}
	if p.maxTokens != nil {
		if *p.maxTokens < 0 {
			return o, badRequest("max_tokens", "max_tokens %d must not be negative", *p.maxTokens)
		}
		o.MaxTokens = *p.maxTokens
	}
	if t := p.temperature; t != nil {
		if math.IsNaN(*t) || *t < 0 || *t > 2 {
			return o, badRequest("temperature", "temperature %v out of range [0, 2]", *t)
		}
		o.Sampling.Temperature = float32(*t)
	}
	if t := p.topP; t != nil {
		if math.IsNaN(*t) || *t < 0 || *t > 1 {
			return o, badRequest("top_p", "top_p %v out of range [0, 1]", *t)
		}
		o.Sampling.TopP = float32(*t)
	}
	if p.seed != nil {
		o.Sampling.Seed = *p.seed & math.MaxInt64 // any seed given is a fixed one
	}
	if len(p.stop) > 16 {
		return o, badRequest("stop", "%d stop strings, at most 16", len(p.stop))
	}
	for _, s := range p.stop {
		if s == "" {
			return o, badRequest("stop", "stop strings must not be empty")
		}
	}
	o.Stop = p.stop
	if err := o.Sampling.Validate(); err != nil {
		return o, badRequest("", "%v", err)
	}
	return o, nil
}

// chatMessages converts OpenAI messages to the engine's, decoding images.
func (s *Server) chatMessages(in []chatMessage) ([]engine.Message, error) {
	if len(in) == 0 {
		return nil, badRequest("messages", "messages must hold at least one message")
	}
	out := make([]engine.Message, 0, len(in))
	images := 0
	callNames := map[string]string{} // tool call ids → the functions called
	var err error
	for i, m := range in {
		role := m.Role
		switch role {
		case "developer":
			role = "system"
		case "system", "user", "assistant", "tool":
		case "":
			return nil, badRequest(fmt.Sprintf("messages[%d].role", i), "messages[%d] has no role", i)
		default:
			return nil, badRequest(fmt.Sprintf("messages[%d].role", i), "messages[%d]: unknown role %q (want system, developer, user, assistant or tool)", i, truncate(role, 40))
		}
		msg := engine.Message{Role: role, Content: m.Content.Text}
		var text strings.Builder
		text.WriteString(m.Content.Text)
		for j, p := range m.Content.Parts {
			param := fmt.Sprintf("messages[%d].content[%d]", i, j)
			switch p.Type {
			case "text", "input_text":
				text.WriteString(p.Text)
			case "image_url":
				u, err := p.imageURL()
				if err != nil {
					return nil, badRequest(param, "%s: image_url must be {\"url\": \"data:...\"}", param)
				}
				images++
				if images > s.lim.MaxImages {
					return nil, badRequest(param, "more than %d images in one request", s.lim.MaxImages)
				}
				img, err := s.imageFromURL(u, param)
				if err != nil {
					return nil, err
				}
				msg.Images = append(msg.Images, img)
			default:
				return nil, badRequest(param, "%s: content part type %q is not supported (want text or image_url)", param, truncate(p.Type, 40))
			}
		}
		msg.Content = text.String()
		if len(m.ToolCalls) > 0 {
			if msg.ToolCalls, err = engineCalls(m.ToolCalls, fmt.Sprintf("messages[%d].tool_calls", i)); err != nil {
				return nil, err
			}
			for _, c := range msg.ToolCalls {
				callNames[c.ID] = c.Function.Name
			}
		}
		if role == "tool" {
			msg.ToolCallID, msg.ToolName = m.ToolCallID, m.Name
			if msg.ToolName == "" {
				msg.ToolName = callNames[m.ToolCallID]
			}
		}
		out = append(out, msg)
	}
	return out, nil
}

func (s *Server) handleChatCompletions(w http.ResponseWriter, r *http.Request) error {
	if err := requireContentType(r, "application/json", ""); err != nil {
		return err
	}
	var req chatCompletionRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	m, err := s.models.textModel(req.Model)
	if err != nil {
		return err
	}
	tools, err := parseTools(req.Tools)
	if err != nil {
		return err
	}
	choice, err := parseToolChoice(req.ToolChoice, tools)
	if err != nil {
		return err
	}
	maxTokens := req.MaxTokens
	if req.MaxCompletionTokens != nil {
		maxTokens = req.MaxCompletionTokens
	}
	opts, err := samplingParams{maxTokens, req.Temperature, req.TopP, req.Seed, req.Stop, req.N}.withModel(m.Config).generateOptions()
	if err != nil {
		return err
	}
	if opts.JSONSchema, err = req.ResponseFormat.schema(); err != nil {
		return err
	}
	msgs, err := s.chatMessages(req.Messages)
	if err != nil {
		return err
	}
	opts.Priority = priority(r)
	think, err := req.think()
	if err != nil {
		return err
	}
	creq := engine.ChatRequest{Model: m.Path, Projector: m.ProjectorPath, Messages: withModelMessages(m.Config, msgs), GenerateOptions: opts, Think: think, Tools: tools, ToolChoice: choice,
		SingleToolCall: req.ParallelToolCalls != nil && !*req.ParallelToolCalls, Template: modelTemplate(m.Config)}
	id, created := newID("chatcmpl-"), time.Now().Unix()
	if !req.Stream {
		res, err := s.be.Chat(r.Context(), creq, nil)
		if err != nil {
			return err
		}
		u := usage(res)
		writeJSON(w, http.StatusOK, chatCompletion{ID: id, Object: "chat.completion", Created: created, Model: req.Model, SystemFingerprint: s.fingerprint(),
			Choices: []chatChoice{{Message: &chatMessageOut{Role: "assistant", Content: res.Text, ReasoningContent: res.Thinking,
				ToolCalls: toOpenAICalls(res.ToolCalls, false)}, FinishReason: &res.FinishReason}}, Usage: &u})
		return nil
	}
	ev := newSSE(w)
	chunk := func(delta chatDelta, finish *string) chatCompletion {
		return chatCompletion{ID: id, Object: "chat.completion.chunk", Created: created, Model: req.Model, SystemFingerprint: s.fingerprint(),
			Choices: []chatChoice{{Delta: &delta, FinishReason: finish}}}
	}
	empty := ""
	opening := chatDelta{Role: "assistant", Content: &empty}
	res, err := s.be.Chat(r.Context(), creq, func(c engine.Chunk) error {
		if !ev.started {
			if err := ev.send(chunk(opening, nil)); err != nil {
				return err
			}
		}
		if c.Thinking != "" {
			if err := ev.send(chunk(chatDelta{ReasoningContent: &c.Thinking}, nil)); err != nil {
				return err
			}
		}
		if len(c.ToolCalls) > 0 {
			if err := ev.send(chunk(chatDelta{ToolCalls: toOpenAICalls(c.ToolCalls, true)}, nil)); err != nil {
				return err
			}
		}
		if c.Text == "" {
			return nil
		}
		return ev.send(chunk(chatDelta{Content: &c.Text}, nil))
	})
	if err != nil {
		return s.streamError(ev, apiOpenAI, err)
	}
	if !ev.started {
		ev.send(chunk(opening, nil))
	}
	ev.send(chunk(chatDelta{}, &res.FinishReason))
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		u := usage(res)
		ev.send(chatCompletion{ID: id, Object: "chat.completion.chunk", Created: created, Model: req.Model, Choices: []chatChoice{}, Usage: &u})
	}
	ev.done()
	return nil
}

// OpenAI response bodies.

// chatCompletion is a chat completion, a chunk of one (Object
// "chat.completion.chunk") or a text completion ("text_completion").
type chatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint,omitempty"`
	Choices           []chatChoice `json:"choices"`
	Usage             *openAIUsage `json:"usage,omitempty"`
}

// chatChoice is the one choice of a completion: a message (chat), a
// delta (a chunk) or a text (a text completion).
type chatChoice struct {
	Index        int             `json:"index"`
	Message      *chatMessageOut `json:"message,omitempty"`
	Delta        *chatDelta      `json:"delta,omitempty"`
	Text         *string         `json:"text,omitempty"`
	FinishReason *string         `json:"finish_reason"`
	Logprobs     *struct{}       `json:"logprobs"` // always null: not reported
}

type chatMessageOut struct {
	Role             string           `json:"role"`
	Content          string           `json:"content"`
	ReasoningContent string           `json:"reasoning_content,omitempty"` // a thinking model's reasoning
	ToolCalls        []openAIToolCall `json:"tool_calls,omitempty"`
}

// chatDelta is what a chunk adds to the message; the last chunk's is
// empty.
type chatDelta struct {
	Role             string           `json:"role,omitempty"`
	Content          *string          `json:"content,omitempty"`
	ReasoningContent *string          `json:"reasoning_content,omitempty"`
	ToolCalls        []openAIToolCall `json:"tool_calls,omitempty"`
}

type openAIUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

// openAIModelEntry is a model in OpenAI's listing shape, with the kind and
// size owl adds.
type openAIModelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	Kind    string `json:"kind"`
	Size    int64  `json:"size"`
}

type openAIModelList struct {
	Object string             `json:"object"`
	Data   []openAIModelEntry `json:"data"`
	// Unusable (owl's extension): files named like models that owl
	// cannot read, and why, instead of their leaving the list in silence.
	Unusable []store.Unusable `json:"unusable,omitempty"`
}

func usage(res engine.Result) openAIUsage {
	u := openAIUsage{PromptTokens: res.PromptTokens, CompletionTokens: len(res.Tokens), TotalTokens: res.PromptTokens + len(res.Tokens)}
	u.PromptTokensDetails.CachedTokens = res.CachedTokens
	return u
}

// fingerprint names the server build in OpenAI's system_fingerprint.
func (s *Server) fingerprint() string {
	if s.cfg.Version == "" {
		return "owl"
	}
	return "owl-" + s.cfg.Version
}

// completionRequest is the body of POST /v1/completions.
type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	MaxTokens     *int            `json:"max_tokens"`
	Temperature   *float64        `json:"temperature"`
	TopP          *float64        `json:"top_p"`
	Seed          *int64          `json:"seed"`
	Stop          stopList        `json:"stop"`
	N             *int            `json:"n"`
	Echo          bool            `json:"echo"`
	Suffix        *string         `json:"suffix"`
}

// prompt returns the one prompt: a string, or an array of one string.
func (c completionRequest) prompt() (string, error) {
	b := bytes.TrimSpace(c.Prompt)
	if len(b) == 0 || string(b) == "null" {
		return "", badRequest("prompt", "no prompt")
	}
	var s string
	if json.Unmarshal(b, &s) == nil {
		return s, nil
	}
	var many []string
	if json.Unmarshal(b, &many) == nil {
		if len(many) != 1 {
			return "", badRequest("prompt", "%d prompts: owl completes one prompt per request", len(many))
		}
		return many[0], nil
	}
	return "", badRequest("prompt", "prompt must be a string (token arrays are not supported)")
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) error {
	if err := requireContentType(r, "application/json", ""); err != nil {
		return err
	}
	var req completionRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	m, err := s.models.textModel(req.Model)
	if err != nil {
		return err
	}
	prompt, err := req.prompt()
	if err != nil {
		return err
	}
	if req.Echo {
		return badRequest("echo", "echo is not supported")
	}
	if req.Suffix != nil && *req.Suffix != "" {
		return badRequest("suffix", "suffix (fill in the middle) is not supported")
	}
	opts, err := samplingParams{req.MaxTokens, req.Temperature, req.TopP, req.Seed, req.Stop, req.N}.generateOptions()
	if err != nil {
		return err
	}
	opts.Priority = priority(r)
	greq := engine.GenerateRequest{Model: m.Path, Prompt: prompt, GenerateOptions: opts}
	id, created := newID("cmpl-"), time.Now().Unix()
	choice := func(text string, finish *string) chatCompletion {
		return chatCompletion{ID: id, Object: "text_completion", Created: created, Model: req.Model, SystemFingerprint: s.fingerprint(),
			Choices: []chatChoice{{Text: &text, FinishReason: finish}}}
	}
	if !req.Stream {
		res, err := s.be.Generate(r.Context(), greq, nil)
		if err != nil {
			return err
		}
		out := choice(res.Text, &res.FinishReason)
		u := usage(res)
		out.Usage = &u
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	ev := newSSE(w)
	res, err := s.be.Generate(r.Context(), greq, func(c engine.Chunk) error {
		if c.Text == "" {
			return nil
		}
		return ev.send(choice(c.Text, nil))
	})
	if err != nil {
		return s.streamError(ev, apiOpenAI, err)
	}
	ev.send(choice("", &res.FinishReason))
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		u := usage(res)
		ev.send(chatCompletion{ID: id, Object: "text_completion", Created: created, Model: req.Model, Choices: []chatChoice{}, Usage: &u})
	}
	ev.done()
	return nil
}

// openAIModel is a model in OpenAI's listing shape.
func openAIModel(m model) openAIModelEntry {
	return openAIModelEntry{ID: m.Name, Object: "model", Created: m.Modified.Unix(), OwnedBy: "owl", Kind: string(m.Kind), Size: m.Size}
}

// servable says whether a model is listed: text and speech models are;
// projectors and voice activity models are used through them.
func servable(m model) bool {
	return m.Kind == store.KindLLM || m.Kind == store.KindWhisper || m.Kind == store.KindVoice
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) error {
	all, err := s.models.list()
	if err != nil {
		s.log.Warn("server: model store", "err", err)
	}
	out := openAIModelList{Object: "list", Data: []openAIModelEntry{
		{ID: engine.BuiltinVoice, Object: "model", Created: s.started.Unix(), OwnedBy: "owl", Kind: "voice"}}}
	for _, m := range all {
		if servable(m) {
			out.Data = append(out.Data, openAIModel(m))
		}
	}
	out.Unusable = s.models.store.Unusable()
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) error {
	m, err := s.models.resolve(r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, openAIModel(m))
	return nil
}
