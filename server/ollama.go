package server

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	ollama "github.com/ollama/ollama/api"
	"github.com/ollama/ollama/parser"
	ollamamodel "github.com/ollama/ollama/types/model"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/store"
)

// ollama request bodies.

// ollamaChatRequest is the body of POST /api/chat.
type ollamaChatRequest struct {
	Model     string             `json:"model"`
	Messages  []ollamaMessage    `json:"messages"`
	Stream    *bool              `json:"stream"`
	Format    json.RawMessage    `json:"format"`
	Options   *ollamaOptions     `json:"options"`
	KeepAlive *keepAlive         `json:"keep_alive"`
	Tools     json.RawMessage    `json:"tools"`
	Think     *ollama.ThinkValue `json:"think"`
}

// ollamaThink is what think asks of a thinking model: true, false, or a
// level ("low", "medium", "high": on); nil for the model's own way.
func ollamaThink(t *ollama.ThinkValue) (*bool, error) {
	if t == nil || t.Value == nil {
		return nil, nil
	}
	if !t.IsValid() {
		return nil, badRequest("think", "think must be true, false, or low, medium or high")
	}
	v := t.Bool()
	return &v, nil
}

// ollamaMessage carries images as base64 strings.
type ollamaMessage struct {
	Role       string            `json:"role"`
	Content    string            `json:"content"`
	Images     []string          `json:"images"`
	ToolCalls  []ollama.ToolCall `json:"tool_calls"`
	ToolName   string            `json:"tool_name"`
	ToolCallID string            `json:"tool_call_id"`
}

// ollamaGenerateRequest is the body of POST /api/generate.
type ollamaGenerateRequest struct {
	Model     string             `json:"model"`
	Prompt    string             `json:"prompt"`
	Suffix    string             `json:"suffix"`
	System    string             `json:"system"`
	Template  string             `json:"template"`
	Raw       bool               `json:"raw"`
	Images    []string           `json:"images"`
	Stream    *bool              `json:"stream"`
	Format    json.RawMessage    `json:"format"`
	Options   *ollamaOptions     `json:"options"`
	KeepAlive *keepAlive         `json:"keep_alive"`
	Think     *ollama.ThinkValue `json:"think"`
}

// ollamaOptions are the model options owl honors; others are accepted and
// ignored, as ollama does with options a runner does not know.
type ollamaOptions struct {
	Temperature   *float64 `json:"temperature"`
	TopK          *int     `json:"top_k"`
	TopP          *float64 `json:"top_p"`
	MinP          *float64 `json:"min_p"`
	NumPredict    *int     `json:"num_predict"`
	Stop          stopList `json:"stop"`
	Seed          *int64   `json:"seed"`
	RepeatPenalty *float64 `json:"repeat_penalty"`
	RepeatLastN   *int     `json:"repeat_last_n"`
	// Checked, then left to the server's settings: the context, batch
	// and threads are the engine's, shared by every request.
	NumCtx    *int `json:"num_ctx"`
	NumBatch  *int `json:"num_batch"`
	NumThread *int `json:"num_thread"`
	// The layers on a GPU the model is loaded with (-1: all that fit).
	NumGPU           *int     `json:"num_gpu"`
	NumKeep          *int     `json:"num_keep"`
	TypicalP         *float64 `json:"typical_p"`
	PresencePenalty  *float64 `json:"presence_penalty"`
	FrequencyPenalty *float64 `json:"frequency_penalty"`
}

// check refuses options out of the range ollama gives them.
func (o *ollamaOptions) check() error {
	ints := []struct {
		name string
		v    *int
		min  int
	}{{"top_k", o.TopK, 0}, {"num_ctx", o.NumCtx, 1}, {"num_batch", o.NumBatch, 1}, {"num_thread", o.NumThread, 0},
		{"num_gpu", o.NumGPU, -1}, {"num_keep", o.NumKeep, -1}, {"num_predict", o.NumPredict, -2}, {"repeat_last_n", o.RepeatLastN, -1}}
	for _, c := range ints {
		if c.v != nil && *c.v < c.min {
			return badRequest("options."+c.name, "options.%s %d: want %d or more", c.name, *c.v, c.min)
		}
	}
	floats := []struct {
		name     string
		v        *float64
		min, max float64
	}{{"top_p", o.TopP, 0, 1}, {"min_p", o.MinP, 0, 1}, {"typical_p", o.TypicalP, 0, 1}, {"repeat_penalty", o.RepeatPenalty, 0, 100},
		{"presence_penalty", o.PresencePenalty, -2, 2}, {"frequency_penalty", o.FrequencyPenalty, -2, 2}}
	for _, c := range floats {
		if c.v != nil && (math.IsNaN(*c.v) || *c.v < c.min || *c.v > c.max) {
			return badRequest("options."+c.name, "options.%s %v out of range [%v, %v]", c.name, *c.v, c.min, c.max)
		}
	}
	return nil
}

// keepAlive is a duration string ("5m", "1h30m", "-1") or a number of
// seconds; negative means keep loaded forever.
type keepAlive struct{ d time.Duration }

// UnmarshalJSON takes a duration string or a number of seconds.
func (k *keepAlive) UnmarshalJSON(b []byte) error {
	bad := badRequest("keep_alive", "keep_alive must be a duration such as \"5m\" or a number of seconds (negative: forever)")
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return bad
	}
	switch t := v.(type) {
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) || math.Abs(t) > 1e9 {
			return bad
		}
		k.d = time.Duration(t * float64(time.Second))
	case string:
		if n, err := strconv.ParseFloat(t, 64); err == nil && math.Abs(n) <= 1e9 {
			k.d = time.Duration(n * float64(time.Second))
			break
		}
		d, err := time.ParseDuration(t)
		if err != nil {
			return bad
		}
		k.d = d
	default:
		return bad
	}
	if k.d < 0 {
		k.d = -1
	}
	return nil
}

func (k *keepAlive) duration() *time.Duration {
	if k == nil {
		return nil
	}
	d := k.d
	return &d
}

// generateOptions checks o and turns it into engine options.
func (o *ollamaOptions) generateOptions() (engine.GenerateOptions, error) {
	g := engine.GenerateOptions{Sampling: engine.DefaultSampling()}
	if o == nil {
		return g, nil
	}
	if err := o.check(); err != nil {
		return g, err
	}
	if o.NumPredict != nil && *o.NumPredict > 0 {
		g.MaxTokens = *o.NumPredict // ollama: negative means no limit
	}
	if o.Temperature != nil {
		if math.IsNaN(*o.Temperature) || *o.Temperature < 0 || *o.Temperature > 100 {
			return g, badRequest("options.temperature", "options.temperature %v out of range [0, 100]", *o.Temperature)
		}
		g.Sampling.Temperature = float32(*o.Temperature)
	}
	if o.TopK != nil {
		g.Sampling.TopK = *o.TopK
	}
	if o.TopP != nil {
		g.Sampling.TopP = float32(*o.TopP)
	}
	if o.MinP != nil {
		g.Sampling.MinP = float32(*o.MinP)
	}
	if o.RepeatPenalty != nil {
		g.Sampling.RepeatPenalty = float32(*o.RepeatPenalty)
	}
	if o.RepeatLastN != nil {
		g.Sampling.RepeatLastN = *o.RepeatLastN
		if *o.RepeatLastN < 0 { // ollama: -1 is the context; owl's window is bounded
			g.Sampling.RepeatLastN = 64
		}
	}
	if o.Seed != nil {
		g.Sampling.Seed = *o.Seed
	}
	g.GPULayers = o.NumGPU
	for _, s := range o.Stop {
		if s == "" {
			return g, badRequest("options.stop", "stop strings must not be empty")
		}
	}
	g.Stop = o.Stop
	if err := g.Sampling.Validate(); err != nil {
		return g, badRequest("options", "options: %v", err)
	}
	return g, nil
}

// formatSchema turns ollama's format ("json" or a JSON schema) into a schema.
func formatSchema(f json.RawMessage) ([]byte, error) {
	b := bytes.TrimSpace(f)
	if len(b) == 0 || string(b) == "null" || string(b) == `""` {
		return nil, nil
	}
	var s string
	if json.Unmarshal(b, &s) == nil {
		if s == "json" {
			return []byte(`{}`), nil
		}
		return nil, badRequest("format", "format %q: want \"json\" or a JSON schema object", truncate(s, 40))
	}
	if b[0] != '{' || !json.Valid(b) {
		return nil, badRequest("format", "format must be \"json\" or a JSON schema object")
	}
	return b, nil
}

// ollamaImages decodes base64 images.
func (s *Server) ollamaImages(in []string, param string, count *int) ([][]byte, error) {
	var out [][]byte
	for i, b64 := range in {
		p := fmt.Sprintf("%s[%d]", param, i)
		*count++
		if *count > s.lim.MaxImages {
			return nil, badRequest(p, "more than %d images in one request", s.lim.MaxImages)
		}
		img, err := decodeBase64(b64)
		if err != nil {
			return nil, badRequest(p, "%s: invalid base64: %v", p, err)
		}
		if err := s.checkImage(img, p); err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	return out, nil
}

// ollamaMetrics are the durations and counts ollama reports when done.
func ollamaMetrics(res engine.Result, total time.Duration) ollama.Metrics {
	return ollama.Metrics{TotalDuration: total, PromptEvalCount: res.PromptTokens - res.CachedTokens, PromptEvalDuration: res.PromptDuration,
		EvalCount: len(res.Tokens), EvalDuration: res.GenerateDuration}
}

// assistant is an assistant message of content, in ollama's shape.
func assistant(content string) ollama.Message {
	return ollama.Message{Role: "assistant", Content: content}
}

// requireOllamaJSON accepts what ollama's clients and curl -d send.
func requireOllamaJSON(r *http.Request) error {
	return requireContentType(r, "application/json", "", "application/x-www-form-urlencoded")
}

func (s *Server) handleOllamaChat(w http.ResponseWriter, r *http.Request) error {
	start := time.Now()
	if err := requireOllamaJSON(r); err != nil {
		return err
	}
	var req ollamaChatRequest
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
	o, err := modelOptions(m.Config, req.Options)
	if err != nil {
		return err
	}
	opts, err := requestOptions(o, req.Format, req.KeepAlive)
	if err != nil {
		return err
	}
	opts.Priority = priority(r)
	if len(req.Messages) == 0 {
		// ollama's way to load a model (or, with keep_alive 0, to unload
		// it): answer done without generating.
		reason, err := s.loadOrUnload(r.Context(), m, opts.KeepAlive)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, ollama.ChatResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Message: assistant(""), Done: true, DoneReason: reason})
		return nil
	}
	msgs := make([]engine.Message, 0, len(req.Messages))
	images := 0
	for i, msg := range req.Messages {
		switch msg.Role {
		case "system", "user", "assistant", "tool":
		default:
			return badRequest(fmt.Sprintf("messages[%d].role", i), "messages[%d]: unknown role %q (want system, user, assistant or tool)", i, truncate(msg.Role, 40))
		}
		imgs, err := s.ollamaImages(msg.Images, fmt.Sprintf("messages[%d].images", i), &images)
		if err != nil {
			return err
		}
		calls := msg.ToolCalls
		for j := range calls {
			calls[j].Function.Index = j
		}
		msgs = append(msgs, engine.Message{Role: msg.Role, Content: msg.Content, Images: imgs, ToolCalls: calls, ToolName: msg.ToolName, ToolCallID: msg.ToolCallID})
	}
	think, err := ollamaThink(req.Think)
	if err != nil {
		return err
	}
	creq := engine.ChatRequest{Model: m.Path, Projector: m.ProjectorPath, Messages: withModelMessages(m.Config, msgs), GenerateOptions: opts, Think: think, Tools: tools,
		Template: modelTemplate(m.Config)}
	stream := req.Stream == nil || *req.Stream
	if !stream {
		res, err := s.be.Chat(r.Context(), creq, nil)
		if err != nil {
			return err
		}
		msg := assistant(res.Text)
		msg.Thinking, msg.ToolCalls = res.Thinking, res.ToolCalls
		writeJSON(w, http.StatusOK, ollama.ChatResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Message: msg, Done: true,
			DoneReason: res.FinishReason, Metrics: ollamaMetrics(res, time.Since(start))})
		return nil
	}
	ev := newNDJSON(w)
	res, err := s.be.Chat(r.Context(), creq, func(c engine.Chunk) error {
		if c.Text == "" && c.Thinking == "" && len(c.ToolCalls) == 0 {
			return nil
		}
		msg := assistant(c.Text)
		msg.Thinking, msg.ToolCalls = c.Thinking, c.ToolCalls
		return ev.send(ollama.ChatResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Message: msg})
	})
	if err != nil {
		return s.streamError(ev, apiOllama, err)
	}
	ev.send(ollama.ChatResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Message: assistant(""), Done: true,
		DoneReason: res.FinishReason, Metrics: ollamaMetrics(res, time.Since(start))})
	return nil
}

func (s *Server) handleOllamaGenerate(w http.ResponseWriter, r *http.Request) error {
	start := time.Now()
	if err := requireOllamaJSON(r); err != nil {
		return err
	}
	var req ollamaGenerateRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	m, err := s.models.textModel(req.Model)
	if err != nil {
		return err
	}
	if req.Suffix != "" {
		return badRequest("suffix", "suffix (fill in the middle) is not supported")
	}
	tmpl := cmp.Or(req.Template, modelTemplate(m.Config))
	if req.Template != "" {
		if req.Raw {
			return badRequest("template", "template goes with a formatted prompt, not with raw")
		}
		if _, err := engine.ParseTemplate(req.Template); err != nil {
			return badRequest("template", "%v", err)
		}
	}
	o, err := modelOptions(m.Config, req.Options)
	if err != nil {
		return err
	}
	opts, err := requestOptions(o, req.Format, req.KeepAlive)
	if err != nil {
		return err
	}
	images := 0
	imgs, err := s.ollamaImages(req.Images, "images", &images)
	if err != nil {
		return err
	}
	think, err := ollamaThink(req.Think)
	if err != nil {
		return err
	}
	if think != nil && req.Raw {
		return badRequest("think", "think goes with the model's template, not with raw prompts")
	}
	if req.Prompt == "" && len(imgs) == 0 {
		reason, err := s.loadOrUnload(r.Context(), m, opts.KeepAlive)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, ollama.GenerateResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Done: true, DoneReason: reason})
		return nil
	}
	// Without raw, ollama formats the prompt with the model's template, as
	// one user turn after the system prompt.
	run := func(onChunk func(engine.Chunk) error) (engine.Result, error) {
		if req.Raw {
			return s.be.Generate(r.Context(), engine.GenerateRequest{Model: m.Path, Prompt: req.Prompt, Projector: m.ProjectorPath, Images: imgs, GenerateOptions: opts}, onChunk)
		}
		var msgs []engine.Message
		if req.System != "" {
			msgs = append(msgs, engine.Message{Role: "system", Content: req.System})
		}
		msgs = withModelMessages(m.Config, append(msgs, engine.Message{Role: "user", Content: req.Prompt, Images: imgs}))
		return s.be.Chat(r.Context(), engine.ChatRequest{Model: m.Path, Projector: m.ProjectorPath, Messages: msgs, GenerateOptions: opts, Think: think, Template: tmpl}, onChunk)
	}
	stream := req.Stream == nil || *req.Stream
	if !stream {
		res, err := run(nil)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, ollama.GenerateResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Response: res.Text, Thinking: res.Thinking, Done: true,
			DoneReason: res.FinishReason, Metrics: ollamaMetrics(res, time.Since(start))})
		return nil
	}
	ev := newNDJSON(w)
	res, err := run(func(c engine.Chunk) error {
		if c.Text == "" && c.Thinking == "" {
			return nil
		}
		return ev.send(ollama.GenerateResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Response: c.Text, Thinking: c.Thinking})
	})
	if err != nil {
		return s.streamError(ev, apiOllama, err)
	}
	ev.send(ollama.GenerateResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Done: true, DoneReason: res.FinishReason,
		Metrics: ollamaMetrics(res, time.Since(start))})
	return nil
}

// details describes a model the way ollama's listings do.
func (s *Server) details(m model) ollama.ModelDetails {
	d := ollama.ModelDetails{Format: "gguf", Family: string(m.Kind), Families: []string{string(m.Kind)}}
	switch m.Kind {
	case store.KindWhisper, store.KindVAD:
		d.Format = "ggml"
		return d
	}
	in, err := s.models.info(m)
	if err != nil || in.GGUF == nil {
		return d
	}
	info := in.GGUF
	d.Family, d.Families = info.Architecture, []string{info.Architecture}
	if m.Projector != "" {
		d.Families = []string{info.Architecture, "clip"}
	}
	d.ParameterSize = formatParams(info.Params)
	d.QuantizationLevel = strings.ToUpper(info.FileType)
	return d
}

// formatParams writes a parameter count as ollama does ("1.2B", "135M").
func formatParams(n uint64) string {
	switch {
	case n >= 1e9:
		return strconv.FormatFloat(float64(n)/1e9, 'f', 1, 64) + "B"
	case n >= 1e6:
		return strconv.FormatFloat(float64(n)/1e6, 'f', 0, 64) + "M"
	case n >= 1e3:
		return strconv.FormatFloat(float64(n)/1e3, 'f', 0, 64) + "K"
	}
	return strconv.FormatUint(n, 10)
}

func (s *Server) handleOllamaTags(w http.ResponseWriter, r *http.Request) error {
	all, err := s.models.list()
	if err != nil {
		s.log.Warn("server: model store", "err", err)
	}
	out := struct {
		ollama.ListResponse
		// owl's extension: files named like models that owl cannot read,
		// and why (ollama's clients ignore it).
		Unusable []store.Unusable `json:"unusable,omitempty"`
	}{ListResponse: ollama.ListResponse{Models: []ollama.ListModelResponse{}}, Unusable: s.models.store.Unusable()}
	for _, m := range all {
		if !servable(m) {
			continue
		}
		out.Models = append(out.Models, ollama.ListModelResponse{Name: m.Name, Model: m.Name, ModifiedAt: m.Modified.UTC(), Size: m.Size,
			Digest: strings.TrimPrefix(s.models.digest(m), "sha256:"), Details: s.details(m)})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleOllamaPS(w http.ResponseWriter, r *http.Request) error {
	met := s.be.Metrics()
	all, _ := s.models.list()
	byPath := map[string]model{}
	for _, m := range all {
		if real, err := filepath.EvalSymlinks(m.Path); err == nil {
			byPath[real] = m
		}
		byPath[m.Path] = m
	}
	out := ollama.ProcessResponse{Models: []ollama.ProcessModelResponse{}}
	for _, mm := range met.Models {
		m, ok := byPath[mm.Path]
		if !ok {
			if real, err := filepath.EvalSymlinks(mm.Path); err == nil {
				m, ok = byPath[real]
			}
		}
		if !ok {
			m = model{Name: filepath.Base(mm.Path), Path: mm.Path, Kind: store.KindLLM}
			switch mm.Kind {
			case "speech":
				m.Kind = store.KindWhisper
			case "voice":
				m.Kind = store.KindVoice
			}
		}
		var expires time.Time
		switch {
		case mm.InUse > 0 || mm.KeepAlive < 0:
			expires = time.Now().Add(100 * 365 * 24 * time.Hour) // while in use or kept forever
		default:
			expires = mm.LastUsed.Add(mm.KeepAlive)
		}
		// ollama's size is the whole model, size_vram the part on GPUs
		// (the CLI prints the split as "40%/60% CPU/GPU").
		out.Models = append(out.Models, ollama.ProcessModelResponse{Name: m.Name, Model: m.Name, Size: int64(mm.Bytes + mm.DeviceBytes),
			SizeVRAM: int64(mm.DeviceBytes), Digest: strings.TrimPrefix(s.models.digest(m), "sha256:"), Details: s.details(m), ExpiresAt: expires.UTC(), ContextLength: mm.Context})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleOllamaShow(w http.ResponseWriter, r *http.Request) error {
	if err := requireOllamaJSON(r); err != nil {
		return err
	}
	var req struct {
		Model string `json:"model"`
		Name  string `json:"name"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	name := cmp.Or(req.Model, req.Name)
	m, err := s.models.resolve(name)
	if err != nil {
		return err
	}
	out := ollama.ShowResponse{Details: s.details(m), ModifiedAt: m.Modified.UTC(), ModelInfo: map[string]any{}}
	info := out.ModelInfo
	switch m.Kind {
	case store.KindLLM:
		// An embedding model only embeds, as ollama shows it.
		completes := true
		if in, err := s.models.info(m); err == nil && in.GGUF != nil {
			gi := in.GGUF
			info["general.architecture"] = gi.Architecture
			info["general.name"] = gi.Name
			info["general.parameter_count"] = gi.Params
			info[gi.Architecture+".context_length"] = gi.ContextLength
			for k, v := range gi.Hyper {
				info[gi.Architecture+"."+k] = jsonScalar(v)
			}
			info["tokenizer.ggml.model"] = gi.Tokenizer
			out.Template = gi.ChatTemplate
			takesTools := engine.TakesTools(gi.ChatTemplate)
			if t := modelTemplate(m.Config); t != "" { // a created model's own
				out.Template = t
				ct, err := engine.ParseTemplate(t)
				takesTools = err == nil && ct.TakesTools()
			}
			if gi.Embedding { // (a converted generative model keeps its chat template)
				out.Capabilities, completes = append(out.Capabilities, "embedding"), false
			} else {
				if takesTools {
					out.Capabilities = append(out.Capabilities, "tools")
				}
				if _, _, thinks := engine.Thinks(out.Template); thinks {
					out.Capabilities = append(out.Capabilities, "thinking")
				}
			}
		}
		if completes {
			lead := []ollamamodel.Capability{"completion"}
			if m.Projector != "" {
				lead = append(lead, "vision")
			}
			out.Capabilities = append(lead, out.Capabilities...)
		}
		// The sampling a request gets without options, as ollama lists a
		// model's parameters.
		d := engine.DefaultSampling()
		params := [][2]string{{"temperature", fmt.Sprint(d.Temperature)}, {"top_k", fmt.Sprint(d.TopK)}, {"top_p", fmt.Sprint(d.TopP)},
			{"min_p", fmt.Sprint(d.MinP)}, {"repeat_last_n", fmt.Sprint(d.RepeatLastN)}, {"repeat_penalty", fmt.Sprint(d.RepeatPenalty)}}
		var pl strings.Builder
		// The Modelfile as ollama's parser reads it back (its quoting).
		mf := parser.Modelfile{Commands: []parser.Command{{Name: "model", Args: m.Path}}}
		if c := m.Config; c != nil {
			// A created model's own parameters replace the defaults.
			for _, k := range slices.Sorted(maps.Keys(c.Parameters)) {
				v := c.Parameters[k]
				i := slices.IndexFunc(params, func(p [2]string) bool { return p[0] == k })
				if i < 0 {
					params = append(params, [2]string{k, ""})
					i = len(params) - 1
				}
				params[i][1] = fmt.Sprint(v)
			}
			out.System = c.System
			if c.Template != "" {
				mf.Commands = append(mf.Commands, parser.Command{Name: "template", Args: c.Template})
			}
			if c.System != "" {
				mf.Commands = append(mf.Commands, parser.Command{Name: "system", Args: c.System})
			}
			for _, msg := range c.Messages {
				out.Messages = append(out.Messages, ollama.Message{Role: msg.Role, Content: msg.Content})
				mf.Commands = append(mf.Commands, parser.Command{Name: "message", Args: msg.Role + ": " + msg.Content})
			}
		}
		for _, p := range params {
			fmt.Fprintf(&pl, "%-30s %s\n", p[0], p[1])
			mf.Commands = append(mf.Commands, parser.Command{Name: p[0], Args: p[1]})
		}
		out.Parameters = strings.TrimRight(pl.String(), "\n")
		out.Modelfile = fmt.Sprintf("# Modelfile of %s, as owl serves it\n%s", m.Name, mf.String())
	case store.KindWhisper:
		out.Capabilities = append(out.Capabilities, "transcription")
		info["general.architecture"] = "whisper"
	}
	if m.Projector != "" {
		// The keys ollama's own show prints (it fails on any missing):
		// the projector's architecture, parameters, embedding length and
		// projection size.
		pi := map[string]any{"name": m.Projector, "general.architecture": "clip"}
		if in, err := store.Inspect(m.ProjectorPath, 0); err == nil && in.GGUF != nil {
			pi["general.parameter_count"] = in.GGUF.Params
			for k, v := range in.GGUF.Hyper {
				pi[in.GGUF.Architecture+"."+k] = jsonScalar(v)
			}
		}
		for _, k := range []string{"general.parameter_count", "clip.vision.embedding_length", "clip.vision.projection_dim"} {
			if _, ok := pi[k]; !ok {
				pi[k] = 0
			}
		}
		out.ProjectorInfo = pi
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// jsonScalar gives a GGUF value read as text its JSON type: a number when
// it is one (ollama's clients read model_info numbers as numbers), true or
// false, else the text.
func jsonScalar(v string) any {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return n
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
		return f
	}
	if b, err := strconv.ParseBool(v); err == nil {
		return b
	}
	return v
}

func (s *Server) handleOllamaVersion(w http.ResponseWriter, r *http.Request) error {
	v := s.cfg.Version
	if v == "" {
		v = "dev"
	}
	writeJSON(w, http.StatusOK, struct {
		Version string `json:"version"`
	}{v})
	return nil
}

// loadOrUnload answers a request without a prompt, ollama's way to load a
// model ahead of use or, with keep_alive 0 (what ollama stop sends), to
// unload it. It returns the done_reason ollama gives.
func (s *Server) loadOrUnload(ctx context.Context, m model, keepAlive *time.Duration) (string, error) {
	if keepAlive != nil && *keepAlive == 0 {
		s.be.Unload(m.Path)
		return "unload", nil
	}
	return "load", s.be.Load(ctx, engine.LoadRequest{Model: m.Path, Projector: m.ProjectorPath, KeepAlive: keepAlive})
}

// requestOptions turns the options, format and keep_alive of an ollama
// request into the engine's generation options.
func requestOptions(o *ollamaOptions, format json.RawMessage, keep *keepAlive) (engine.GenerateOptions, error) {
	opts, err := o.generateOptions()
	if err != nil {
		return opts, err
	}
	if opts.JSONSchema, err = formatSchema(format); err != nil {
		return opts, err
	}
	opts.KeepAlive = keep.duration()
	return opts, nil
}
