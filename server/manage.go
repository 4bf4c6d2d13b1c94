package server

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	ollama "github.com/ollama/ollama/api"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/hub"
	"github.com/owlengine/owl/models/store"
)

// ollama's model management, as its command line and front-ends call it:
// POST /api/pull downloads into the models folder with streamed progress,
// DELETE /api/delete removes a model (and unloads it).

// pullError is the API error of a failed pull.
func pullError(name string, err error) error {
	switch {
	case errors.Is(err, store.ErrBadName), errors.Is(err, hub.ErrBadRef), errors.Is(err, store.ErrNoChoice), errors.Is(err, store.ErrWrongKind):
		return badRequest("model", "%v", err)
	case errors.Is(err, hub.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Type: typeNotFound, Param: "model", Code: "model_not_found", Message: err.Error()}
	case errors.Is(err, hub.ErrNetwork), errors.Is(err, hub.ErrServer), errors.Is(err, hub.ErrAccess), errors.Is(err, hub.ErrProtocol):
		return &apiError{Status: http.StatusBadGateway, Type: typeServer, Code: "hub_error", Message: err.Error()}
	}
	return err
}

func (s *Server) handleOllamaPull(w http.ResponseWriter, r *http.Request) error {
	if err := requireOllamaJSON(r); err != nil {
		return err
	}
	var req ollama.PullRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	name := cmp.Or(req.Model, req.Name)
	if name == "" {
		return badRequest("model", "model is missing: name what to pull (whisper:base.en, or hf.co/ORG/REPO:FILE)")
	}
	if s.cfg.Hub == nil {
		return &apiError{Status: http.StatusForbidden, Type: typeInvalidRequest, Code: "pull_disabled",
			Message: "this server does not download models (it was started offline): owl pull them where it runs"}
	}
	stream := req.Stream == nil || *req.Stream
	ev := newNDJSON(w)
	var mu sync.Mutex // the progress callback runs on the download's goroutine
	var last time.Time
	var sendErr error
	emit := func(p ollama.ProgressResponse, force bool) {
		mu.Lock()
		defer mu.Unlock()
		if !stream || sendErr != nil || (!force && time.Since(last) < 100*time.Millisecond) {
			return
		}
		last = time.Now()
		sendErr = ev.send(p)
	}
	emit(ollama.ProgressResponse{Status: "pulling manifest"}, true)
	opts := store.PullOptions{Progress: func(p store.PullProgress) {
		total := p.Total
		if total < 0 {
			total = 0
		}
		emit(ollama.ProgressResponse{Status: "pulling " + p.Name, Digest: p.File, Total: total, Completed: p.Done}, p.Done == p.Total)
	}}
	pulled, err := s.models.store.Pull(r.Context(), s.cfg.Hub, name, opts)
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		return s.streamError(ev, apiOllama, pullError(name, err))
	}
	if stream {
		for _, st := range []string{"verifying sha256 digest", "writing manifest"} {
			ev.send(ollama.ProgressResponse{Status: st})
		}
	}
	s.log.Info("server: pulled", "model", name, "installed", len(pulled))
	return ev.send(ollama.ProgressResponse{Status: "success"})
}

func (s *Server) handleOllamaDelete(w http.ResponseWriter, r *http.Request) error {
	if err := requireOllamaJSON(r); err != nil {
		return err
	}
	var req ollama.DeleteRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	name := cmp.Or(req.Model, req.Name)
	if name == "" {
		return badRequest("model", "model is missing: name the model to delete")
	}
	m, err := s.models.resolve(name)
	if err != nil {
		return err
	}
	if !s.models.store.Has(m.Name) {
		return badRequest("model", "%s is a file in the models folder, not a store entry: remove the file itself", m.Name)
	}
	files, err := s.models.store.Remove(m.Name)
	if err != nil {
		return err
	}
	s.be.Unload(m.Path)
	s.log.Info("server: deleted", "model", m.Name, "files", len(files))
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) handleOllamaCopy(w http.ResponseWriter, r *http.Request) error {
	if err := requireOllamaJSON(r); err != nil {
		return err
	}
	var req ollama.CopyRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Source == "" || req.Destination == "" {
		return badRequest("source", "copy needs a source and a destination")
	}
	m, err := s.models.resolve(req.Source)
	if err != nil {
		return err
	}
	if !s.models.store.Has(m.Name) {
		return badRequest("source", "%s is a file in the models folder, not a store entry: copy the file itself", m.Name)
	}
	switch err := s.models.store.Copy(m.Name, req.Destination); {
	case errors.Is(err, store.ErrBadName):
		return badRequest("destination", "%v", err)
	case errors.Is(err, store.ErrExists):
		return &apiError{Status: http.StatusConflict, Type: typeInvalidRequest, Param: "destination", Code: "model_exists", Message: err.Error()}
	case err != nil:
		return err
	}
	s.log.Info("server: copied", "model", m.Name, "to", req.Destination)
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleOllamaPush refuses in words: there is no registry to push to.
func (s *Server) handleOllamaPush(w http.ResponseWriter, r *http.Request) error {
	return &apiError{Status: http.StatusNotImplemented, Type: typeInvalidRequest, Code: "push_unsupported",
		Message: "owl does not push models: it pulls them from the Hugging Face hub (or a mirror), and there is no registry to push to"}
}

// handleOllamaCreate makes a model from one the server holds, as ollama's
// create (a Modelfile's FROM, SYSTEM, TEMPLATE, PARAMETER and MESSAGE): a
// store entry for the same file with a default system prompt, a chat
// template, default options and opening messages. It answers ollama's status lines (streamed
// unless stream is false).
func (s *Server) handleOllamaCreate(w http.ResponseWriter, r *http.Request) error {
	if err := requireOllamaJSON(r); err != nil {
		return err
	}
	var req ollama.CreateRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	name := cmp.Or(req.Model, req.Name)
	switch {
	case name == "":
		return badRequest("model", "create needs the new model's name in model")
	case req.From == "" && len(req.Files) > 1:
		return &apiError{Status: http.StatusNotImplemented, Type: typeInvalidRequest, Param: "files", Code: "create_from_files_unsupported",
			Message: "owl creates a model from one file (a GGUF uploaded to /api/blobs); put a projector beside it in the models folder"}
	case req.From == "" && len(req.Files) == 0:
		return badRequest("from", "create needs from: the model to build on (a Modelfile's FROM)")
	case len(req.Adapters) > 0:
		return &apiError{Status: http.StatusNotImplemented, Type: typeInvalidRequest, Param: "adapters", Code: "adapters_unsupported", Message: "owl does not apply LoRA adapters"}
	case req.Quantize != "":
		return &apiError{Status: http.StatusNotImplemented, Type: typeInvalidRequest, Param: "quantize", Code: "quantize_unsupported",
			Message: "owl does not quantize models: pull the quantization you want (owl pull NAME:Q4_K_M)"}
	}
	var base model
	var err error
	if req.From != "" {
		base, err = s.models.textModel(req.From)
	} else {
		base, err = s.uploadedModel(req.Files)
	}
	if err != nil {
		return err
	}
	if req.Template != "" {
		if _, err := engine.ParseTemplate(req.Template); err != nil {
			return badRequest("template", "%v", err)
		}
	}
	cfg := store.ModelConfig{System: req.System, Template: req.Template, Parameters: req.Parameters, From: base.Name}
	if base.Config != nil { // created from a created model: its settings under the new ones
		cfg.System = cmp.Or(cfg.System, base.Config.System)
		cfg.Template = cmp.Or(cfg.Template, base.Config.Template)
		cfg.Messages = base.Config.Messages
		params := maps.Clone(base.Config.Parameters)
		if params == nil {
			params = map[string]any{}
		}
		maps.Copy(params, req.Parameters)
		cfg.Parameters = params
	}
	for i, m := range req.Messages {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return badRequest(fmt.Sprintf("messages[%d].role", i), "messages[%d]: role %q (want system, user or assistant)", i, truncate(m.Role, 40))
		}
		cfg.Messages = append(cfg.Messages, store.ConfigMessage{Role: m.Role, Content: m.Content})
	}
	// The parameters must be options a request could give.
	if len(cfg.Parameters) > 0 {
		if _, err := modelOptions(&cfg, nil); err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				ae.Param = strings.Replace(ae.Param, "options.", "parameters.", 1)
				ae.Message = strings.Replace(ae.Message, "options.", "parameters.", 1)
			}
			return err
		}
	}
	if err := s.models.store.Create(name, base, cfg); err != nil {
		if errors.Is(err, store.ErrBadName) {
			return badRequest("model", "%v", err)
		}
		return err
	}
	s.log.Info("server: created", "model", name, "from", base.Name)
	status := []ollama.ProgressResponse{{Status: "using existing layer sha256:" + strings.TrimPrefix(s.models.digest(base), "sha256:")},
		{Status: "writing manifest"}, {Status: "success"}}
	if req.Stream != nil && !*req.Stream {
		writeJSON(w, http.StatusOK, status[len(status)-1])
		return nil
	}
	ev := newNDJSON(w)
	for _, st := range status {
		ev.send(st)
	}
	return nil
}

// uploadedModel is the text model of a create's one file, uploaded to
// /api/blobs before.
func (s *Server) uploadedModel(files map[string]string) (model, error) {
	for name, digest := range files {
		sha := strings.TrimPrefix(digest, "sha256:")
		if !s.models.store.HasBlob(sha) {
			return model{}, badRequest("files", "file %s: no blob %s (POST /api/blobs/%s uploads it)", truncate(name, 80), truncate(digest, 80), truncate(digest, 80))
		}
		path := s.models.store.BlobPath(sha)
		kind, err := store.DetectKind(path)
		if err != nil {
			return model{}, badRequest("files", "file %s: %v", truncate(name, 80), strings.TrimPrefix(err.Error(), path+": "))
		}
		if kind != store.KindLLM {
			return model{}, badRequest("files", "file %s is a %s, not a text model", truncate(name, 80), kind.Describe())
		}
		return model{Name: store.NameFromFile(name), Kind: kind, Path: path, Digest: "sha256:" + sha}, nil
	}
	return model{}, badRequest("files", "no file")
}

// handleOllamaBlob answers ollama's blob calls: HEAD says whether the
// store holds the blob, POST uploads it (its sha256 checked).
func (s *Server) handleOllamaBlob(w http.ResponseWriter, r *http.Request) error {
	digest := r.PathValue("digest")
	sha, ok := strings.CutPrefix(digest, "sha256:")
	if !ok {
		sha, ok = strings.CutPrefix(digest, "sha256-")
	}
	if !ok {
		return badRequest("digest", "digest %s: want sha256:HEX", truncate(digest, 80))
	}
	switch r.Method {
	case http.MethodHead:
		if !s.models.store.HasBlob(sha) {
			w.WriteHeader(http.StatusNotFound)
			return nil
		}
		w.WriteHeader(http.StatusOK)
		return nil
	case http.MethodPost:
		switch err := s.models.store.PutBlob(sha, r.Body, r.ContentLength); {
		case errors.Is(err, store.ErrBadName):
			return badRequest("digest", "%v", err)
		case errors.Is(err, store.ErrDigestMismatch):
			return badRequest("digest", "%v", err)
		case errors.Is(err, store.ErrNoSpace):
			return &apiError{Status: http.StatusInsufficientStorage, Type: typeServer, Code: "no_space", Message: err.Error()}
		case err != nil:
			return err
		}
		w.WriteHeader(http.StatusCreated)
		return nil
	}
	w.Header().Set("Allow", "HEAD, POST")
	return &apiError{Status: http.StatusMethodNotAllowed, Type: typeInvalidRequest, Message: r.Method + " " + r.URL.Path + ": method not allowed (use HEAD or POST)"}
}

// modelOptions is a created model's parameters with a request's options
// over them (req nil: the parameters alone).
func modelOptions(cfg *store.ModelConfig, req *ollamaOptions) (*ollamaOptions, error) {
	if cfg == nil || len(cfg.Parameters) == 0 {
		return req, nil
	}
	merged := maps.Clone(cfg.Parameters)
	if req != nil {
		raw, err := json.Marshal(req)
		if err != nil {
			return nil, err
		}
		var set map[string]any
		json.Unmarshal(raw, &set)
		for k, v := range set {
			if v != nil {
				merged[k] = v
			}
		}
	}
	raw, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	var out ollamaOptions
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		return nil, badRequest("options", "options: %v", err)
	}
	if err := out.check(); err != nil {
		return nil, err
	}
	return &out, nil
}

// modelTemplate is a created model's chat template ("" for the file's own).
func modelTemplate(cfg *store.ModelConfig) string {
	if cfg == nil {
		return ""
	}
	return cfg.Template
}

// withModelMessages puts a created model's system prompt (unless the
// conversation has one) and opening messages before msgs.
func withModelMessages(cfg *store.ModelConfig, msgs []engine.Message) []engine.Message {
	if cfg == nil {
		return msgs
	}
	var out []engine.Message
	hasSystem := slices.ContainsFunc(msgs, func(m engine.Message) bool { return m.Role == "system" })
	if cfg.System != "" && !hasSystem {
		out = append(out, engine.Message{Role: "system", Content: cfg.System})
	}
	for _, m := range cfg.Messages {
		out = append(out, engine.Message{Role: m.Role, Content: m.Content})
	}
	return append(out, msgs...)
}
