package server

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	ollama "github.com/ollama/ollama/api"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

const testKey = "owl-test-key-7f3a"

// send makes a request with headers (name, value pairs) and returns the
// status, headers and body.
func send(t testing.TB, method, url string, body []byte, headers ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func TestAPIKey(t *testing.T) {
	ts := testServer(t, Config{APIKey: testKey})
	chat := []byte(`{"model":"tiny","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`)
	ochat := []byte(`{"model":"tiny","stream":false,"options":{"num_predict":2},"messages":[{"role":"user","content":"hi"}]}`)
	type endpoint struct {
		method, path string
		body         []byte
	}
	endpoints := []endpoint{
		{"POST", "/v1/chat/completions", chat},
		{"GET", "/v1/models", nil},
		{"GET", "/v1/models/tiny", nil},
		{"POST", "/api/chat", ochat},
		{"GET", "/api/tags", nil},
		{"GET", "/api/ps", nil},
		{"GET", "/api/version", nil},
		{"GET", "/metrics", nil},
	}

	// Without the key, or with a wrong one, every endpoint but /health is
	// refused before anything else is looked at, in its API's shape.
	refusals := []struct {
		name    string
		headers []string
	}{
		{"no key", nil},
		{"wrong bearer", []string{"Authorization", "Bearer not-the-key"}},
		{"wrong X-API-Key", []string{"X-API-Key", "not-the-key"}},
		{"prefix of the key", []string{"Authorization", "Bearer " + testKey[:len(testKey)-1]}},
		{"key and more", []string{"X-API-Key", testKey + "x"}},
		{"empty bearer", []string{"Authorization", "Bearer "}},
		{"bearer without a space", []string{"Authorization", "Bearer" + testKey}},
		{"basic scheme", []string{"Authorization", "Basic " + testKey}},
		{"key in the query", nil},
	}
	for _, r := range refusals {
		for _, ep := range endpoints {
			path := ep.path
			if r.name == "key in the query" {
				path += "?api_key=" + testKey // only live transcription takes it there
			}
			code, h, b := send(t, ep.method, ts.URL+path, ep.body, r.headers...)
			if code != http.StatusUnauthorized {
				t.Errorf("%s, %s %s: %d %s", r.name, ep.method, ep.path, code, b)
				continue
			}
			if h.Get("WWW-Authenticate") == "" {
				t.Errorf("%s, %s %s: 401 without WWW-Authenticate", r.name, ep.method, ep.path)
			}
			if strings.HasPrefix(ep.path, "/api/") {
				if msg := checkOllamaError(t, b); !strings.Contains(msg, "API key") {
					t.Errorf("%s, %s %s: %q", r.name, ep.method, ep.path, msg)
				}
				continue
			}
			if msg, typ, code, _ := checkOpenAIError(t, b); typ != "authentication_error" || code == nil || *code != "invalid_api_key" || !strings.Contains(msg, "API key") {
				t.Errorf("%s, %s %s: %s", r.name, ep.method, ep.path, b)
			}
		}
	}
	// Paths that do not exist are refused too: an unauthenticated client
	// learns nothing about the routes.
	if code, _, _ := send(t, "GET", ts.URL+"/v1/secret", nil); code != http.StatusUnauthorized {
		t.Errorf("unknown path without a key: %d", code)
	}

	// With the key, as a bearer token (any case of "Bearer") or in
	// X-API-Key, every endpoint answers.
	for _, headers := range [][]string{
		{"Authorization", "Bearer " + testKey},
		{"Authorization", "bearer " + testKey},
		{"X-API-Key", testKey},
	} {
		for _, ep := range endpoints {
			if code, _, b := send(t, ep.method, ts.URL+ep.path, ep.body, headers...); code != http.StatusOK {
				t.Errorf("%s %s with %s: %d %s", ep.method, ep.path, headers[0], code, b)
			}
		}
	}

	// /health needs no key, so that probes need no secret; it tells
	// nothing beyond the server being up.
	code, _, b := send(t, "GET", ts.URL+"/health", nil)
	if code != http.StatusOK || !strings.Contains(string(b), `"status":"ok"`) || strings.Contains(string(b), testKey) {
		t.Fatalf("/health without a key: %d %s", code, b)
	}
}

func TestAPIKeyClients(t *testing.T) {
	ts := testServer(t, Config{APIKey: testKey})
	ctx := t.Context()

	// The OpenAI SDK sends its key as a bearer token.
	keyed := openAIClient(ts.URL, option.WithAPIKey(testKey))
	res, err := keyed.Chat.Completions.New(ctx, chatParams("tiny", "hi", 2))
	if err != nil || len(res.Choices) != 1 {
		t.Fatalf("with the key: %+v %v", res, err)
	}
	if page, err := keyed.Models.List(ctx); err != nil || len(page.Data) == 0 {
		t.Fatalf("models with the key: %+v %v", page, err)
	}
	wrongKey := openAIClient(ts.URL, option.WithAPIKey("wrong"))
	_, err = wrongKey.Chat.Completions.New(ctx, chatParams("tiny", "hi", 2))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || apiErr.Code != "invalid_api_key" {
		t.Fatalf("with a wrong key: %v", err)
	}

	// ollama's client sends no key of its own; a transport adds it.
	u, _ := url.Parse(ts.URL)
	okeyed := ollama.NewClient(u, &http.Client{Timeout: 30 * time.Second, Transport: headerTransport{"Authorization", "Bearer " + testKey}})
	if list, err := okeyed.List(ctx); err != nil || len(list.Models) == 0 {
		t.Fatalf("ollama client with the key: %+v %v", list, err)
	}
	_, err = ollama.NewClient(u, http.DefaultClient).List(ctx)
	var authErr ollama.AuthorizationError
	if !errors.As(err, &authErr) || authErr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("ollama client without the key: %v (%T)", err, err)
	}

	// Live transcription takes the key in a header or, as browsers cannot
	// set headers on a WebSocket, in the query.
	q := url.Values{"model": {"ggml-micro.en"}}
	_, resp, err := websocket.Dial(ctx, liveURL(ts.URL, q), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("live transcription without the key: %v %+v", err, resp)
	}
	for name, opts := range map[string]struct {
		q    url.Values
		dial *websocket.DialOptions
	}{
		"header": {q, &websocket.DialOptions{HTTPHeader: http.Header{"X-Api-Key": {testKey}}}},
		"query":  {url.Values{"model": {"ggml-micro.en"}, "api_key": {testKey}}, nil},
	} {
		c, _, err := websocket.Dial(ctx, liveURL(ts.URL, opts.q), opts.dial)
		if err != nil {
			t.Fatalf("live transcription with the key in the %s: %v", name, err)
		}
		if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"ready"`) {
			t.Fatalf("live transcription with the key in the %s: %s %v", name, b, err)
		}
		c.Close(websocket.StatusNormalClosure, "")
	}
	wrong := url.Values{"model": {"ggml-micro.en"}, "api_key": {"wrong"}}
	if _, resp, err := websocket.Dial(ctx, liveURL(ts.URL, wrong), nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("live transcription with a wrong key in the query: %v", err)
	}
}

// headerTransport adds a header to every request.
type headerTransport struct{ name, value string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.name, h.value)
	return http.DefaultTransport.RoundTrip(r)
}

// Without a key configured, requests need none and keys sent are ignored.
func TestNoAPIKeyConfigured(t *testing.T) {
	ts := testServer(t, Config{})
	for _, headers := range [][]string{nil, {"Authorization", "Bearer anything"}, {"X-API-Key", "anything"}} {
		if code, _, b := send(t, "GET", ts.URL+"/v1/models", nil, headers...); code != http.StatusOK {
			t.Fatalf("%v: %d %s", headers, code, b)
		}
	}
}
