package server

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"

	ollama "github.com/ollama/ollama/api"

	"github.com/owlengine/owl/engine"
)

// Embeddings: OpenAI's POST /v1/embeddings, ollama's /api/embed and its
// older /api/embeddings, all through the engine's Embed.

// maxEmbedInputs bounds the texts of one request, as OpenAI does.
const maxEmbedInputs = 2048

// parseInputs reads an input field: a string or an array of strings.
func parseInputs(raw json.RawMessage, param string) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	var one string
	if json.Unmarshal(raw, &one) == nil {
		if one == "" {
			return nil, badRequest(param, "%s is empty", param)
		}
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, badRequest(param, "%s must be a string or an array of strings (token arrays are not taken)", param)
	}
	switch {
	case len(many) == 0:
		return nil, badRequest(param, "%s holds no text", param)
	case len(many) > maxEmbedInputs:
		return nil, badRequest(param, "%s holds %d texts, over the limit of %d", param, len(many), maxEmbedInputs)
	}
	for i, s := range many {
		if s == "" {
			return nil, badRequest(fmt.Sprintf("%s[%d]", param, i), "%s[%d] is empty", param, i)
		}
	}
	return many, nil
}

func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Model          string          `json:"model"`
		Input          json.RawMessage `json:"input"`
		EncodingFormat string          `json:"encoding_format"`
		Dimensions     *int            `json:"dimensions"`
		User           string          `json:"user"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	m, err := s.models.textModel(req.Model)
	if err != nil {
		return err
	}
	inputs, err := parseInputs(req.Input, "input")
	if err != nil {
		return err
	}
	if req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64" {
		return badRequest("encoding_format", "encoding_format %s: want float or base64", quoteShort(req.EncodingFormat))
	}
	dims := 0
	if req.Dimensions != nil {
		if *req.Dimensions < 1 {
			return badRequest("dimensions", "dimensions must be 1 or more")
		}
		dims = *req.Dimensions
	}
	res, err := s.be.Embed(r.Context(), engine.EmbedRequest{Model: m.Path, Inputs: inputs, Truncate: false, Normalize: true, Dimensions: dims, Priority: priority(r)})
	if err != nil {
		return err
	}
	type item struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"`
	}
	data := make([]item, len(res.Embeddings))
	for i, v := range res.Embeddings {
		data[i] = item{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			b := make([]byte, 4*len(v))
			for j, x := range v {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(x))
			}
			data[i].Embedding = base64.StdEncoding.EncodeToString(b)
		}
	}
	writeJSON(w, http.StatusOK, struct {
		Object string `json:"object"`
		Data   []item `json:"data"`
		Model  string `json:"model"`
		Usage  struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}{Object: "list", Data: data, Model: req.Model, Usage: struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	}{res.PromptTokens, res.PromptTokens}})
	return nil
}

func (s *Server) handleOllamaEmbed(w http.ResponseWriter, r *http.Request) error {
	if err := requireOllamaJSON(r); err != nil {
		return err
	}
	var req struct {
		Model      string          `json:"model"`
		Input      json.RawMessage `json:"input"`
		Truncate   *bool           `json:"truncate"`
		Dimensions int             `json:"dimensions"`
		Options    *ollamaOptions  `json:"options"`
		KeepAlive  *keepAlive      `json:"keep_alive"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	m, err := s.models.textModel(req.Model)
	if err != nil {
		return err
	}
	inputs, err := parseInputs(req.Input, "input")
	if err != nil {
		return err
	}
	if req.Options != nil {
		if err := req.Options.check(); err != nil {
			return err
		}
	}
	res, err := s.be.Embed(r.Context(), engine.EmbedRequest{Model: m.Path, Inputs: inputs, Truncate: req.Truncate == nil || *req.Truncate,
		Normalize: true, Dimensions: req.Dimensions, Priority: priority(r), KeepAlive: req.KeepAlive.duration()})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ollama.EmbedResponse{Model: req.Model, Embeddings: res.Embeddings, TotalDuration: res.Duration, PromptEvalCount: res.PromptTokens})
	return nil
}

// handleOllamaEmbeddings is ollama's older endpoint: one prompt, its
// embedding not normalized.
func (s *Server) handleOllamaEmbeddings(w http.ResponseWriter, r *http.Request) error {
	if err := requireOllamaJSON(r); err != nil {
		return err
	}
	var req struct {
		Model     string     `json:"model"`
		Prompt    string     `json:"prompt"`
		KeepAlive *keepAlive `json:"keep_alive"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	m, err := s.models.textModel(req.Model)
	if err != nil {
		return err
	}
	if req.Prompt == "" {
		return badRequest("prompt", "prompt is empty")
	}
	res, err := s.be.Embed(r.Context(), engine.EmbedRequest{Model: m.Path, Inputs: []string{req.Prompt}, Truncate: true, Priority: priority(r), KeepAlive: req.KeepAlive.duration()})
	if err != nil {
		return err
	}
	out := make([]float64, len(res.Embeddings[0]))
	for i, x := range res.Embeddings[0] {
		out[i] = float64(x)
	}
	writeJSON(w, http.StatusOK, ollama.EmbeddingResponse{Embedding: out})
	return nil
}
