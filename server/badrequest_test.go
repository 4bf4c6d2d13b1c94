package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkOpenAIError checks that b is an OpenAI error object: message, type,
// code and param all present (code and param may be null), and returns it.
func checkOpenAIError(t testing.TB, b []byte) (message, typ string, code, param *string) {
	t.Helper()
	var body map[string]map[string]*string
	if err := json.Unmarshal(b, &body); err != nil || len(body) != 1 || body["error"] == nil {
		t.Fatalf("not an OpenAI error body: %s (%v)", b, err)
	}
	e := body["error"]
	for _, k := range []string{"message", "type", "code", "param"} {
		if _, ok := e[k]; !ok {
			t.Fatalf("OpenAI error without %q: %s", k, b)
		}
	}
	if e["message"] == nil || *e["message"] == "" || e["type"] == nil || *e["type"] == "" {
		t.Fatalf("OpenAI error without a message or a type: %s", b)
	}
	return *e["message"], *e["type"], e["code"], e["param"]
}

// checkOllamaError checks that b is an ollama error object, {"error": "..."}
// and nothing else, and returns its message.
func checkOllamaError(t testing.TB, b []byte) string {
	t.Helper()
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil || len(body) != 1 {
		t.Fatalf("not an ollama error body: %s (%v)", b, err)
	}
	msg, ok := body["error"].(string)
	if !ok || msg == "" {
		t.Fatalf("not an ollama error body: %s", b)
	}
	return msg
}

// multipartForm is a multipart body with the fields and, when file is not
// nil, a "file" part, and its content type.
func multipartForm(t testing.TB, fields map[string]string, fileName string, file []byte) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if file != nil {
		fw, err := mw.CreateFormFile("file", fileName)
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(file)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), mw.FormDataContentType()
}

// mustJSON encodes v.
func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openAIChat is a chat completion request body of one user message with
// content parts: text, then an image_url for each URL.
func openAIChat(model string, maxTokens int, urls ...string) map[string]any {
	parts := []any{map[string]any{"type": "text", "text": "What is this?"}}
	for _, u := range urls {
		parts = append(parts, map[string]any{"type": "image_url", "image_url": map[string]any{"url": u}})
	}
	return map[string]any{"model": model, "max_tokens": maxTokens, "temperature": 0,
		"messages": []any{map[string]any{"role": "user", "content": parts}}}
}

// ollamaChatBody is an /api/chat request body of one user message with
// base64 images, not streamed.
func ollamaChatBody(model string, images ...string) map[string]any {
	msg := map[string]any{"role": "user", "content": "What is this?"}
	if images != nil {
		msg["images"] = images
	}
	return map[string]any{"model": model, "stream": false, "options": map[string]any{"num_predict": 2, "temperature": 0},
		"messages": []any{msg}}
}

// chunkedReader hides its length, so that the client sends the body in
// chunks without a Content-Length.
type chunkedReader struct{ r io.Reader }

func (c chunkedReader) Read(p []byte) (int, error) { return c.r.Read(p) }

// Each malformed, refused or oversize request gets its status and an error
// in the shape of the API that was called, and the server keeps serving.
func TestBadRequests(t *testing.T) {
	plain := testServer(t, Config{})
	small := testServer(t, Config{Limits: Limits{MaxBodyBytes: 1024, MaxImages: 1, MaxImagePixels: 100}})

	// The media folder holds a picture and a link to one outside it.
	tmp, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	media, outside := filepath.Join(tmp, "media"), filepath.Join(tmp, "outside")
	for _, d := range []string{media, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pic := pngImage(t, 16, 12)
	for _, p := range []string{filepath.Join(media, "pic.png"), filepath.Join(outside, "secret.png")} {
		if err := os.WriteFile(p, pic, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(outside, "secret.png"), filepath.Join(media, "link.png")); err != nil {
		t.Fatal(err)
	}
	withMedia := testServer(t, Config{AllowedMediaDir: media})
	fileURL := func(p string) string { return "file://" + filepath.ToSlash(p) }

	b64 := base64.StdEncoding.EncodeToString
	png := b64(pngImage(t, 24, 16))
	dataURI := "data:image/png;base64," + png
	big := bytes.Repeat([]byte(" "), 4096)
	bigChat := append(mustJSON(t, openAIChat("tiny", 1)), big...)
	bigOllama := append(mustJSON(t, ollamaChatBody("tiny")), big...)
	textFile, textFileType := multipartForm(t, map[string]string{"model": "ggml-micro.en"}, "notes.wav", []byte("these are notes, not audio\n"))
	pngFile, pngFileType := multipartForm(t, map[string]string{"model": "ggml-micro.en"}, "pic.wav", pic)
	noFile, noFileType := multipartForm(t, map[string]string{"model": "ggml-micro.en"}, "", nil)
	bigAudio, bigAudioType := multipartForm(t, map[string]string{"model": "ggml-micro.en"}, "jfk.wav", jfkShort)
	tinyAudio, tinyAudioType := multipartForm(t, map[string]string{"model": "tiny"}, "jfk.wav", jfkShort[:1000])

	type badCase struct {
		name        string
		srv         *httptest.Server
		path        string
		contentType string
		body        []byte
		chunked     bool // send the body without a Content-Length
		status      int
		code, param string // OpenAI's, when they matter
		msg         string // in the error's message
	}
	chat, completions, transcriptions := "/v1/chat/completions", "/v1/completions", "/v1/audio/transcriptions"
	ochat, ogenerate, oshow := "/api/chat", "/api/generate", "/api/show"
	j := "application/json"
	cases := []badCase{
		// Malformed JSON.
		{name: "truncated JSON", path: chat, body: []byte(`{"model":"tiny","messages":[`), status: 400, msg: "malformed JSON"},
		{name: "JSON syntax error", path: chat, body: []byte(`{"model": tiny}`), status: 400, msg: "malformed JSON at byte"},
		{name: "empty body", path: chat, body: nil, status: 400, msg: "empty request body"},
		{name: "data after the JSON", path: chat, body: []byte(`{"model":"tiny"} {"model":"tiny"}`), status: 400, msg: "data after the JSON value"},
		{name: "closing brace after the JSON", path: chat, body: []byte(`{"model":"tiny","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}}`), status: 400, msg: "data after the JSON value"},
		{name: "ollama data after the JSON", path: ochat, body: []byte(`{"model":"tiny","messages":[{"role":"user","content":"hi"}]} x`), status: 400, msg: "data after the JSON value"},
		{name: "JSON of the wrong type", path: chat, body: []byte(`{"model": 7}`), status: 400, param: "model", msg: `"model"`},
		{name: "content neither string nor parts", path: chat, body: []byte(`{"model":"tiny","messages":[{"role":"user","content":7}]}`), status: 400, msg: "string or an array of parts"},
		{name: "ollama truncated JSON", path: ochat, body: []byte(`{"model":"tiny","messages":[`), status: 400, msg: "malformed JSON"},
		{name: "ollama JSON syntax error", path: ogenerate, body: []byte(`{"model":"tiny",}`), status: 400, msg: "malformed JSON"},
		{name: "ollama keep_alive not a duration", path: ochat, body: []byte(`{"model":"tiny","keep_alive":"soon","messages":[{"role":"user","content":"hi"}]}`), status: 400, msg: "keep_alive"},

		// Content types.
		{name: "chat as text/plain", path: chat, contentType: "text/plain", body: mustJSON(t, openAIChat("tiny", 1)), status: 415, msg: "Content-Type text/plain is not supported"},
		{name: "unparsable content type", path: chat, contentType: "application/json; =broken", body: mustJSON(t, openAIChat("tiny", 1)), status: 415, msg: "cannot be parsed"},
		{name: "ollama chat as text/plain", path: ochat, contentType: "text/plain", body: mustJSON(t, ollamaChatBody("tiny")), status: 415, msg: "application/json"},
		{name: "transcription as JSON", path: transcriptions, contentType: j, body: []byte(`{"model":"ggml-micro.en"}`), status: 415, msg: "multipart/form-data"},

		// Models.
		{name: "unknown model", path: chat, body: mustJSON(t, openAIChat("nope", 1)), status: 404, code: "model_not_found", param: "model", msg: `"nope" not found`},
		{name: "no model", path: chat, body: mustJSON(t, openAIChat("", 1)), status: 400, param: "model", msg: "no model"},
		{name: "ollama unknown model", path: ogenerate, body: []byte(`{"model":"nope","prompt":"hi"}`), status: 404, msg: `"nope" not found`},
		{name: "chat with a speech model", path: chat, body: mustJSON(t, openAIChat("ggml-micro.en", 1)), status: 400, param: "model", msg: "not a text model"},
		{name: "transcription with a text model", path: transcriptions, contentType: tinyAudioType, body: tinyAudio, status: 400, param: "model", msg: "not a speech model"},
		{name: "model ../x", path: chat, body: mustJSON(t, openAIChat("../x", 1)), status: 400, param: "model", msg: "outside the models folder"},
		{name: "model /etc/passwd", path: chat, body: mustJSON(t, openAIChat("/etc/passwd", 1)), status: 400, param: "model", msg: "outside the models folder"},
		{name: "model a/../../b", path: chat, body: mustJSON(t, openAIChat("a/../../b", 1)), status: 400, param: "model", msg: "outside the models folder"},
		{name: "model ../tiny.gguf", path: completions, body: []byte(`{"model":"../tiny.gguf","prompt":"hi"}`), status: 400, param: "model", msg: "outside the models folder"},
		{name: "ollama model ../x", path: ochat, body: mustJSON(t, ollamaChatBody("../x")), status: 400, msg: "outside the models folder"},
		{name: "ollama model /etc/passwd", path: oshow, body: []byte(`{"model":"/etc/passwd"}`), status: 400, msg: "outside the models folder"},
		{name: "ollama model a/../../b", path: ogenerate, body: []byte(`{"model":"a/../../b","prompt":"hi"}`), status: 400, msg: "outside the models folder"},

		// Images.
		{name: "image for a text-only model", path: chat, body: mustJSON(t, openAIChat("tiny", 1, dataURI)), status: 400, code: "model_cannot_see", param: "messages", msg: "projector"},
		{name: "ollama image for a text-only model", path: ochat, body: mustJSON(t, ollamaChatBody("tiny", png)), status: 400, msg: "projector"},
		{name: "invalid base64 in a data URI", path: chat, body: mustJSON(t, openAIChat("seer", 1, "data:image/png;base64,@@not*base64@@")), status: 400, param: "messages[0].content[1]", msg: "invalid base64"},
		{name: "data URI of no image", path: chat, body: mustJSON(t, openAIChat("seer", 1, "data:image/png;base64,"+b64([]byte("plain words")))), status: 415, code: "unsupported_image", msg: "not a PNG"},
		{name: "data URI of a damaged image", path: chat, body: mustJSON(t, openAIChat("seer", 1, "data:image/png;base64,"+b64(pic[:20]))), status: 400, msg: "damaged png"},
		{name: "data URI of a truncated image", path: chat, body: mustJSON(t, openAIChat("seer", 1, "data:image/png;base64,"+b64(pic[:len(pic)/2]))), status: 400, code: "invalid_image", param: "messages", msg: "corrupt image"},
		{name: "ollama truncated image", path: ochat, body: mustJSON(t, ollamaChatBody("seer", b64(pic[:len(pic)/2]))), status: 400, msg: "image"},
		{name: "image markers without images", path: chat, body: []byte(`{"model":"seer","messages":[{"role":"user","content":"look: <__media__>"}]}`), status: 400, msg: "image markers"},
		{name: "ollama more image markers than images", path: ochat, body: mustJSON(t, map[string]any{"model": "seer", "stream": false,
			"messages": []any{map[string]any{"role": "user", "content": "<__media__> and <__media__>", "images": []string{png}}}}), status: 400, msg: "image markers"},
		{name: "data URI of text", path: chat, body: mustJSON(t, openAIChat("seer", 1, "data:text/plain,hello")), status: 415, msg: "not an image"},
		{name: "ollama invalid base64", path: ochat, body: mustJSON(t, ollamaChatBody("seer", "@@not*base64@@")), status: 400, msg: "invalid base64"},
		{name: "ollama generate invalid base64", path: ogenerate, body: []byte(`{"model":"seer","prompt":"hi","images":["%%%"]}`), status: 400, msg: "invalid base64"},
		{name: "ollama base64 of no image", path: ochat, body: mustJSON(t, ollamaChatBody("seer", b64([]byte("plain words")))), status: 415, msg: "not a PNG"},
		{name: "remote http image", path: chat, body: mustJSON(t, openAIChat("seer", 1, "http://example.com/owl.png")), status: 400, msg: "remote image URLs are not fetched"},
		{name: "remote https image", path: chat, body: mustJSON(t, openAIChat("seer", 1, "HTTPS://example.com/owl.png")), status: 400, msg: "offline"},
		{name: "ftp image", path: chat, body: mustJSON(t, openAIChat("seer", 1, "ftp://example.com/owl.png")), status: 400, msg: "data URI"},
		{name: "file URL without a media folder", path: chat, body: mustJSON(t, openAIChat("seer", 1, fileURL(filepath.Join(media, "pic.png")))), status: 403, code: "file_url_refused", msg: "--allowed-media-dir"},
		{name: "file URL outside the media folder", srv: withMedia, path: chat, body: mustJSON(t, openAIChat("seer", 1, fileURL(filepath.Join(outside, "secret.png")))), status: 403, code: "file_url_refused", msg: "outside the allowed media folder"},
		{name: "file URL /etc/passwd", srv: withMedia, path: chat, body: mustJSON(t, openAIChat("seer", 1, "file:///etc/passwd")), status: 403, code: "file_url_refused", msg: "outside the allowed media folder"},
		{name: "file URL leaving the media folder by ..", srv: withMedia, path: chat, body: mustJSON(t, openAIChat("seer", 1, fileURL(media)+"/../outside/secret.png")), status: 403, code: "file_url_refused", msg: "outside the allowed media folder"},
		{name: "file URL of a link leaving the media folder", srv: withMedia, path: chat, body: mustJSON(t, openAIChat("seer", 1, fileURL(filepath.Join(media, "link.png")))), status: 403, code: "file_url_refused", msg: "outside the allowed media folder"},
		{name: "file URL of a missing file", srv: withMedia, path: chat, body: mustJSON(t, openAIChat("seer", 1, fileURL(filepath.Join(media, "none.png")))), status: 400, msg: "no such file"},
		{name: "file URL on another host", srv: withMedia, path: chat, body: mustJSON(t, openAIChat("seer", 1, "file://example.com"+filepath.ToSlash(filepath.Join(media, "pic.png")))), status: 400, msg: "malformed file URL"},
		{name: "file URL of the media folder", srv: withMedia, path: chat, body: mustJSON(t, openAIChat("seer", 1, fileURL(media))), status: 403, code: "file_url_refused"},
		{name: "image over the pixel limit", srv: small, path: chat, body: mustJSON(t, openAIChat("seer", 1, "data:image/png;base64,"+b64(pngImage(t, 12, 10)))), status: 413, code: "image_too_large", msg: "over the limit of 100 pixels"},
		{name: "more images than allowed", srv: small, path: ochat, body: mustJSON(t, ollamaChatBody("seer", b64(pngImage(t, 4, 4)), b64(pngImage(t, 4, 4)))), status: 400, msg: "more than 1 images"},

		// Sampling parameters.
		{name: "negative max_tokens", path: chat, body: mustJSON(t, openAIChat("tiny", -1)), status: 400, param: "max_tokens", msg: "must not be negative"},
		{name: "negative max_tokens in a completion", path: completions, body: []byte(`{"model":"tiny","prompt":"hi","max_tokens":-5}`), status: 400, param: "max_tokens", msg: "-5"},
		{name: "temperature out of range", path: chat, body: []byte(`{"model":"tiny","temperature":3,"messages":[{"role":"user","content":"hi"}]}`), status: 400, param: "temperature", msg: "out of range"},
		{name: "several choices", path: chat, body: []byte(`{"model":"tiny","n":3,"messages":[{"role":"user","content":"hi"}]}`), status: 400, param: "n", msg: "n=3"},
		{name: "no messages", path: chat, body: []byte(`{"model":"tiny","messages":[]}`), status: 400, param: "messages", msg: "at least one message"},
		{name: "unknown role", path: chat, body: []byte(`{"model":"tiny","messages":[{"role":"wizard","content":"hi"}]}`), status: 400, param: "messages[0].role", msg: "wizard"},
		{name: "ollama negative temperature", path: ochat, body: []byte(`{"model":"tiny","options":{"temperature":-1},"messages":[{"role":"user","content":"hi"}]}`), status: 400, msg: "options.temperature"},

		// Audio.
		{name: "file that is not audio", path: transcriptions, contentType: textFileType, body: textFile, status: 415, code: "unsupported_audio", param: "file", msg: "WAV"},
		{name: "picture sent as audio", path: transcriptions, contentType: pngFileType, body: pngFile, status: 415, code: "unsupported_audio", param: "file"},
		{name: "form without a file", path: transcriptions, contentType: noFileType, body: noFile, status: 400, param: "file", msg: "no file"},
		{name: "multipart without a boundary", path: transcriptions, contentType: "multipart/form-data", body: textFile, status: 400, msg: "malformed multipart form"},

		// Bodies over the limit, with and without a Content-Length.
		{name: "oversize body", srv: small, path: chat, body: bigChat, status: 413, code: "request_too_large", msg: "over the limit of 1024 bytes"},
		{name: "oversize chunked body", srv: small, path: chat, body: bigChat, chunked: true, status: 413, code: "request_too_large", msg: "1024"},
		{name: "ollama oversize body", srv: small, path: ochat, body: bigOllama, status: 413, msg: "over the limit of 1024 bytes"},
		{name: "ollama oversize chunked body", srv: small, path: ochat, body: bigOllama, chunked: true, status: 413, msg: "1024"},
		{name: "oversize audio form", srv: small, path: transcriptions, contentType: bigAudioType, body: bigAudio, status: 413, code: "request_too_large"},
		{name: "oversize chunked audio form", srv: small, path: transcriptions, contentType: bigAudioType, body: bigAudio, chunked: true, status: 413, code: "request_too_large"},
	}

	client := &http.Client{Timeout: 60 * time.Second}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.srv
			if srv == nil {
				srv = plain
			}
			var body io.Reader = bytes.NewReader(tc.body)
			if tc.chunked {
				body = chunkedReader{bytes.NewReader(tc.body)}
			}
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			ct := tc.contentType
			if ct == "" {
				ct = j
			}
			req.Header.Set("Content-Type", ct)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if got := resp.Header.Get("Content-Type"); got != j {
				t.Errorf("Content-Type %q, want %s", got, j)
			}
			var msg string
			if strings.HasPrefix(tc.path, "/api/") {
				msg = checkOllamaError(t, b)
			} else {
				var code, param *string
				msg, _, code, param = checkOpenAIError(t, b)
				if tc.code != "" && (code == nil || *code != tc.code) {
					t.Errorf("code %s, want %q", show(code), tc.code)
				}
				if tc.param != "" && (param == nil || *param != tc.param) {
					t.Errorf("param %s, want %q", show(param), tc.param)
				}
			}
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q does not say %q", msg, tc.msg)
			}
		})
	}

	// Every server still serves well-formed requests.
	for name, srv := range map[string]*httptest.Server{"plain": plain, "small": small, "media": withMedia} {
		code, _, b := post(t, srv.URL+chat, j, []byte(`{"model":"tiny","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`))
		if code != http.StatusOK || !strings.Contains(string(b), `"chat.completion"`) {
			t.Fatalf("%s server, chat after the bad requests: %d %s", name, code, b)
		}
		code, _, b = post(t, srv.URL+ochat, j, []byte(`{"model":"tiny","stream":false,"options":{"num_predict":2},"messages":[{"role":"user","content":"hi"}]}`))
		if code != http.StatusOK || !strings.Contains(string(b), `"done":true`) {
			t.Fatalf("%s server, ollama chat after the bad requests: %d %s", name, code, b)
		}
	}
	code, b := get(t, plain.URL+"/health")
	if code != http.StatusOK {
		t.Fatalf("health after the bad requests: %d %s", code, b)
	}
}

// A file:// image inside the allowed media folder is read and seen.
func TestFileImageInsideMediaFolder(t *testing.T) {
	rec := &recording{Backend: sharedEngine}
	media, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pic := pngImage(t, 20, 14)
	if err := os.MkdirAll(filepath.Join(media, "album"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(media, "album", "owl.png")
	if err := os.WriteFile(path, pic, 0o644); err != nil {
		t.Fatal(err)
	}
	ts := testServer(t, Config{Engine: rec, AllowedMediaDir: media})
	for _, u := range []string{"file://" + path, "file://localhost" + path} {
		code, _, b := post(t, ts.URL+"/v1/chat/completions", "application/json", mustJSON(t, openAIChat("seer", 2, u)))
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", u, code, b)
		}
		var res struct {
			Usage struct {
				PromptTokens int `json:"prompt_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(b, &res); err != nil || res.Usage.PromptTokens <= 20 {
			t.Fatalf("%s: %s", u, b)
		}
		got, _ := rec.last()
		if len(got.Messages) != 1 || len(got.Messages[0].Images) != 1 || !bytes.Equal(got.Messages[0].Images[0], pic) {
			t.Fatalf("%s: the engine did not get the file's bytes", u)
		}
	}
}

// show prints an optional string.
func show(s *string) string {
	if s == nil {
		return "null"
	}
	return fmt.Sprintf("%q", *s)
}
