package server

import (
	"cmp"
	"errors"
	"net/http"
	"sync"
	"time"

	ollama "github.com/ollama/ollama/api"

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
