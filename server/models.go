package server

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/owlengine/owl/models/store"
)

// model is a model the server can serve, as the store resolves names.
type model = store.Model

// modelIndex resolves the model names requests give through the store
// of the models folder (its entries, and the model files lying in it),
// and turns what the store says into the API's errors. It never opens a
// file outside that folder.
type modelIndex struct{ store *store.Store }

func newModelIndex(dir string) *modelIndex { return &modelIndex{store: store.Open(dir)} }

// resolve finds the model a request names (see store.Resolve; paths must
// lie inside the models folder).
func (c *modelIndex) resolve(name string) (model, error) {
	m, err := c.store.Resolve(name, store.ResolveOptions{})
	switch {
	case err == nil:
		return m, nil
	case errors.Is(err, store.ErrNoName):
		return m, errNoModel
	case errors.Is(err, store.ErrNotFound):
		return m, notFoundModel(name)
	case errors.Is(err, store.ErrOutside):
		return m, badRequest("model", "model %q is outside the models folder; name a model it holds", truncate(name, 200))
	case errors.Is(err, store.ErrBadName):
		return m, badRequest("model", "model name %q is not valid", truncate(name, 64))
	case errors.Is(err, store.ErrDamaged):
		return m, err
	}
	return m, badRequest("model", "%s is not a model file owl recognizes", truncate(name, 200))
}

// list returns every model the folder serves.
func (c *modelIndex) list() ([]model, error) { return c.store.Models() }

// digest is m's "sha256:HEX" ("" when its file cannot be read).
func (c *modelIndex) digest(m model) string { return c.store.Digest(m) }

// info is what m's file header says.
func (c *modelIndex) info(m model) (store.Info, error) { return c.store.Info(m) }

// errNoModel is the 400 for a request without a model.
var errNoModel = badRequest("model", "no model: name one (GET /v1/models lists them)")

func notFoundModel(name string) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Param: "model", Code: "model_not_found",
		Message: fmt.Sprintf("model %q not found: GET /v1/models (or /api/tags) lists the models served", name)}
}

// within reports whether path lies inside dir (both clean and absolute).
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// realDir resolves dir to an absolute path without symbolic links.
func realDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s is not a folder", dir)
	}
	return real, nil
}

// textModel resolves name and checks that it generates text.
func (c *modelIndex) textModel(name string) (model, error) {
	return c.modelOfKind(name, "model", store.KindLLM, "a text model")
}

// speechModel resolves name and checks that it recognizes speech.
func (c *modelIndex) speechModel(name string) (model, error) {
	return c.modelOfKind(name, "model", store.KindWhisper, "a speech model")
}

// vadModel resolves name, the request's param, and checks that it is a
// voice activity model.
func (c *modelIndex) vadModel(name, param string) (model, error) {
	if name == "" {
		return model{}, badRequest(param, "%s is missing: name a Silero VAD model (owl pull silero-vad)", param)
	}
	return c.modelOfKind(name, param, store.KindVAD, "a voice activity model")
}

// modelOfKind resolves name and checks that it is of kind (described by
// what); param is the request field that named it.
func (c *modelIndex) modelOfKind(name, param string, kind store.Kind, what string) (model, error) {
	m, err := c.resolve(name)
	if err != nil {
		return m, err
	}
	if m.Kind != kind {
		return m, badRequest(param, "model %q is a %s, not %s; use it with %s", name, m.Kind.Describe(), what, useFor(m.Kind))
	}
	return m, nil
}

func useFor(k store.Kind) string {
	switch k {
	case store.KindLLM:
		return "/v1/chat/completions or /api/chat"
	case store.KindWhisper:
		return "/v1/audio/transcriptions"
	case store.KindMMProj:
		return "its text model, which uses it for images"
	case store.KindVoice:
		return "/v1/audio/speech"
	}
	return "the vad field of live transcription"
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
