package server

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/testmodel"
)

// The models every test serves, generated once: a tiny llama text model
// ("tiny"), the same model paired with a projector file ("seer" and
// "mmproj-seer"), an English and a multilingual micro whisper model.
var (
	modelsDir    string
	jfkWAV       []byte // the speech sample, 11 s
	jfkShort     []byte // its first 3 s
	sharedEngine *engine.Engine
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "owl-server-test")
	if err != nil {
		panic(err)
	}
	modelsDir = dir
	must := func(err error) {
		if err != nil {
			os.RemoveAll(dir)
			panic(err)
		}
	}
	must(testmodel.WriteLlamaFile(filepath.Join(dir, "tiny.gguf"), testmodel.TinyLlama()))
	must(testmodel.WriteLlamaFile(filepath.Join(dir, "seer.gguf"), testmodel.TinyLlama()))
	must(testmodel.WriteProjectorFile(filepath.Join(dir, "mmproj-seer.gguf"), testmodel.TinyLlavaProjector()))
	must(testmodel.WriteWhisperFile(filepath.Join(dir, "ggml-micro.en.bin"), testmodel.WhisperMicro(testmodel.VocabEnglish, 1)))
	must(testmodel.WriteWhisperFile(filepath.Join(dir, "ggml-micro.bin"), testmodel.WhisperMicro(testmodel.VocabMultilingual, 1)))
	jfk, err := testmodel.Sample("jfk.wav")
	must(err)
	jfkWAV, err = os.ReadFile(jfk)
	must(err)
	samples, err := engine.ReadAudio(jfk)
	must(err)
	jfkShort = wav16(samples[:3*engine.SampleRate])
	sharedEngine = engine.New(engine.Options{Threads: 2, NumCtx: 1024, Parallel: 4, CacheDir: filepath.Join(dir, "cache")})
	code := m.Run()
	sharedEngine.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// wav16 encodes 16-kHz mono samples as a 16-bit WAV file.
func wav16(samples []float32) []byte { return audio.EncodeWAV(samples, engine.SampleRate) }

// testServer serves cfg (with the shared engine and models unless set) on
// loopback until the test ends.
func testServer(t testing.TB, cfg Config) *httptest.Server {
	t.Helper()
	if cfg.Engine == nil {
		cfg.Engine = sharedEngine
	}
	if cfg.ModelsDir == "" {
		cfg.ModelsDir = modelsDir
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}

// pngImage is a small PNG of w×h pixels.
func pngImage(t testing.TB, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 128, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// post sends body to url with a content type and returns the status,
// headers and body.
func post(t testing.TB, url, contentType string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func get(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// openAIErr decodes an OpenAI error body.
func openAIErr(t testing.TB, b []byte) (msg, typ, code string) {
	t.Helper()
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("not an OpenAI error body: %q (%v)", b, err)
	}
	if e.Error.Code != nil {
		code = *e.Error.Code
	}
	return e.Error.Message, e.Error.Type, code
}

// recording is a Backend that passes requests to the shared engine and
// keeps the last chat request, for tests of what reaches the engine. Slow
// delays each streamed chunk.
type recording struct {
	Backend
	mu       sync.Mutex
	lastChat engine.ChatRequest
	lastErr  error
	slow     time.Duration
}

func (r *recording) Chat(ctx context.Context, req engine.ChatRequest, onChunk func(engine.Chunk) error) (engine.Result, error) {
	r.mu.Lock()
	r.lastChat = req
	r.mu.Unlock()
	cb := onChunk
	if r.slow > 0 && onChunk != nil {
		cb = func(c engine.Chunk) error {
			time.Sleep(r.slow)
			return onChunk(c)
		}
	}
	res, err := r.Backend.Chat(ctx, req, cb)
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
	return res, err
}

func (r *recording) last() (engine.ChatRequest, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastChat, r.lastErr
}

func TestHealthAndUnknownRoutes(t *testing.T) {
	ts := testServer(t, Config{Version: "1.2.3"})
	code, b := get(t, ts.URL+"/health")
	if code != 200 || !strings.Contains(string(b), `"status":"ok"`) || !strings.Contains(string(b), `"version":"1.2.3"`) {
		t.Fatalf("/health: %d %s", code, b)
	}
	code, b = get(t, ts.URL+"/v1/nothing")
	if msg, _, _ := openAIErr(t, b); code != 404 || !strings.Contains(msg, "no endpoint") {
		t.Fatalf("unknown OpenAI path: %d %s", code, b)
	}
	code, b = get(t, ts.URL+"/api/nothing")
	if code != 404 || !strings.HasPrefix(string(b), `{"error":"no endpoint`) {
		t.Fatalf("unknown ollama path: %d %s", code, b)
	}
	code, b = get(t, ts.URL+"/v1/chat/completions")
	if msg, _, _ := openAIErr(t, b); code != 405 || !strings.Contains(msg, "use POST") {
		t.Fatalf("GET on a POST endpoint: %d %s", code, b)
	}
}

func TestModelResolution(t *testing.T) {
	c := newModelIndex(modelsDir)
	for _, tc := range []struct {
		name, want string
		status     int
	}{
		{"tiny", "tiny.gguf", 0},
		{"tiny:latest", "tiny.gguf", 0},
		{"tiny.gguf", "tiny.gguf", 0},
		{"ggml-micro.en", "ggml-micro.en.bin", 0},
		{"./tiny.gguf", "tiny.gguf", 0},
		{filepath.Join(modelsDir, "tiny.gguf"), "tiny.gguf", 0},
		{"../tiny.gguf", "", 400},
		{"sub/../../etc/passwd", "", 400},
		{"/etc/passwd", "", 400},
		{"..", "", 400},
		{"nope", "", 404},
		{"", "", 400},
	} {
		m, err := c.resolve(tc.name)
		if tc.status == 0 {
			if err != nil || filepath.Base(m.Path) != tc.want {
				t.Errorf("%q: %+v, %v; want %s", tc.name, m, err, tc.want)
			}
			continue
		}
		ae, ok := err.(*apiError)
		if !ok || ae.Status != tc.status {
			t.Errorf("%q: %v (%T), want status %d", tc.name, err, err, tc.status)
		}
	}
	// A link inside the folder to a file outside it is refused too.
	outside := filepath.Join(t.TempDir(), "secret.gguf")
	if err := testmodel.WriteLlamaFile(outside, testmodel.TinyLlama()); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(modelsDir, "sub")
	if err := os.Mkdir(link, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(link)
	if err := os.Symlink(outside, filepath.Join(link, "escape.gguf")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.resolve("sub/escape.gguf"); err == nil || err.(*apiError).Status != 400 {
		t.Fatalf("link leaving the folder: %v", err)
	}
	// The projector pairs by name.
	m, err := c.resolve("seer")
	if err != nil || m.Projector != "mmproj-seer" {
		t.Fatalf("seer: %+v %v", m, err)
	}
}
