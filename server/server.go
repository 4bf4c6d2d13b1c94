package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/fleet"
	"github.com/owlengine/owl/models/hub"
)

// Backend is the engine a Server drives; *engine.Engine implements it. Its
// methods are called from many goroutines at once.
type Backend interface {
	Generate(ctx context.Context, req engine.GenerateRequest, onChunk func(engine.Chunk) error) (engine.Result, error)
	Chat(ctx context.Context, req engine.ChatRequest, onChunk func(engine.Chunk) error) (engine.Result, error)
	Transcribe(ctx context.Context, req engine.TranscribeRequest) (*engine.Transcript, error)
	Listen(ctx context.Context, req engine.ListenRequest, onEvent func(engine.ListenEvent) error) (engine.ListenStats, error)
	OpenVoice(ctx context.Context, model, config string) (*engine.Voice, error)
	Embed(ctx context.Context, req engine.EmbedRequest) (engine.EmbedResult, error)
	Metrics() engine.Metrics
	Load(ctx context.Context, req engine.LoadRequest) error
	Unload(path string) bool
}

// Defaults of Limits.
const (
	DefaultMaxBodyBytes   = 25 << 20
	DefaultMaxAudio       = time.Hour
	DefaultMaxImagePixels = 32 << 20
	DefaultMaxImages      = 16
	DefaultMaxStreams     = 4
	DefaultMaxRealtime    = 4
	DefaultRetryAfter     = 2 * time.Second
)

// Limits bound what one request may make the server read, decode or hold.
// Zero fields take the defaults above.
type Limits struct {
	MaxBodyBytes   int64         // request body (413 beyond)
	MaxAudio       time.Duration // audio of one transcription or live stream (413 beyond)
	MaxImagePixels int64         // width × height of one image (413 beyond)
	MaxImages      int           // images in one request (400 beyond)
	MaxStreams     int           // live transcriptions at once (503 beyond)
	MaxRealtime    int           // Realtime sessions at once (503 beyond)
	RetryAfter     time.Duration // what Retry-After tells a client turned away busy
}

func (l Limits) withDefaults() Limits {
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if l.MaxAudio <= 0 {
		l.MaxAudio = DefaultMaxAudio
	}
	if l.MaxImagePixels <= 0 {
		l.MaxImagePixels = DefaultMaxImagePixels
	}
	if l.MaxImages <= 0 {
		l.MaxImages = DefaultMaxImages
	}
	if l.MaxStreams <= 0 {
		l.MaxStreams = DefaultMaxStreams
	}
	if l.MaxRealtime <= 0 {
		l.MaxRealtime = DefaultMaxRealtime
	}
	if l.RetryAfter <= 0 {
		l.RetryAfter = DefaultRetryAfter
	}
	return l
}

// Config configures a Server.
type Config struct {
	Engine Backend
	// ModelsDir is the model store's folder. Request model names resolve
	// to its entries, and to plain model files lying in it.
	ModelsDir string
	// APIKey, when set, must come with every request but /health, as
	// "Authorization: Bearer KEY" or "X-API-Key: KEY".
	APIKey string
	// AllowedMediaDir is the only folder file:// image URLs may be read
	// from; "" refuses them all.
	AllowedMediaDir string
	Limits          Limits
	// DataDir keeps the Batch API's files and batches ("": a folder
	// .batches in the models folder).
	DataDir string
	// NoBatches leaves out the Files and Batch APIs and the data folder:
	// a worker's server, which runs the lines other servers queue.
	NoBatches bool
	// Fleet, when set, runs batches on the workers of a NATS JetStream
	// cluster instead of this server's engine.
	Fleet *fleet.Cluster
	// Hub, when set, is where /api/pull downloads models from; nil
	// refuses pulls (an offline server).
	Hub     *hub.Client
	Logger  *slog.Logger // nil: slog.Default()
	Version string       // reported by /health and /api/version
}

// Server is an http.Handler serving the APIs of the package documentation.
// It is safe for concurrent use.
type Server struct {
	be        Backend
	cfg       Config
	lim       Limits
	log       *slog.Logger
	models    *modelIndex
	mediaDir  string
	mux       *http.ServeMux
	streams   chan struct{} // one token per live transcription running
	realtime  chan struct{} // one token per Realtime session open
	files     *files
	batches   *batches
	started   time.Time
	collector *metricsCollector

	metricsOnce sync.Once
	metrics     http.Handler
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Engine == nil {
		return nil, errors.New("server: no engine")
	}
	if cfg.ModelsDir == "" {
		return nil, errors.New("server: no models folder")
	}
	dir, err := filepath.Abs(cfg.ModelsDir)
	if err != nil {
		return nil, err
	}
	s := &Server{be: cfg.Engine, cfg: cfg, lim: cfg.Limits.withDefaults(), log: cfg.Logger, started: time.Now()}
	if s.log == nil {
		s.log = slog.Default()
	}
	if cfg.AllowedMediaDir != "" {
		if s.mediaDir, err = realDir(cfg.AllowedMediaDir); err != nil {
			return nil, fmt.Errorf("server: allowed media folder: %w", err)
		}
	}
	s.models = newModelIndex(dir)
	s.streams = make(chan struct{}, s.lim.MaxStreams)
	s.realtime = make(chan struct{}, s.lim.MaxRealtime)
	data := cfg.DataDir
	if data == "" {
		data = filepath.Join(dir, ".batches")
	}
	s.files = &files{dir: filepath.Join(data, "files")}
	s.collector = newMetricsCollector(cfg.Engine)
	s.routes()
	if !cfg.NoBatches {
		s.batches = newBatches(s, filepath.Join(data, "batches")) // resumes the batches under way
	}
	return s, nil
}

// Close stops the batches under way (they resume when a server on the
// same data folder starts); the engine is the caller's.
func (s *Server) Close() error {
	if s.batches != nil {
		s.batches.close()
	}
	return nil
}

// route is one endpoint: the method it answers and the API whose error
// shape it uses.
type route struct {
	method string
	api    api
	h      func(w http.ResponseWriter, r *http.Request) error
}

func (s *Server) routes() {
	s.mux = http.NewServeMux()
	add := func(path string, rt route) {
		s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if rt.method != "" && r.Method != rt.method && !(rt.method == http.MethodGet && r.Method == http.MethodHead) {
				w.Header().Set("Allow", rt.method)
				s.writeError(w, r, rt.api, &apiError{Status: http.StatusMethodNotAllowed, Type: typeInvalidRequest,
					Message: fmt.Sprintf("%s %s: method not allowed (use %s)", r.Method, r.URL.Path, rt.method)})
				return
			}
			if err := rt.h(w, r); err != nil {
				s.writeError(w, r, rt.api, err)
			}
		})
	}
	add("/v1/chat/completions", route{http.MethodPost, apiOpenAI, s.handleChatCompletions})
	add("/v1/completions", route{http.MethodPost, apiOpenAI, s.handleCompletions})
	add("/v1/audio/transcriptions", route{http.MethodPost, apiOpenAI, s.handleTranscriptions})
	add("/v1/audio/translations", route{http.MethodPost, apiOpenAI, s.handleTranslations})
	add("/v1/audio/stream", route{http.MethodGet, apiOpenAI, s.handleAudioStream})
	add("/v1/audio/speech", route{http.MethodPost, apiOpenAI, s.handleSpeech})
	add("/v1/realtime", route{http.MethodGet, apiOpenAI, s.handleRealtime})
	add("/v1/models", route{http.MethodGet, apiOpenAI, s.handleModels})
	add("/v1/embeddings", route{http.MethodPost, apiOpenAI, s.handleEmbeddings})
	add("/api/embed", route{http.MethodPost, apiOllama, s.handleOllamaEmbed})
	add("/api/embeddings", route{http.MethodPost, apiOllama, s.handleOllamaEmbeddings})
	if !s.cfg.NoBatches {
		add("POST /v1/files", route{http.MethodPost, apiOpenAI, s.handleFileUpload})
		add("GET /v1/files", route{http.MethodGet, apiOpenAI, s.handleFileList})
		add("/v1/files/{id}", route{"", apiOpenAI, s.handleFile})
		add("/v1/files/{id}/content", route{http.MethodGet, apiOpenAI, s.handleFileContent})
		add("POST /v1/batches", route{http.MethodPost, apiOpenAI, s.handleBatchCreate})
		add("GET /v1/batches", route{http.MethodGet, apiOpenAI, s.handleBatchList})
		add("/v1/batches/{id}", route{http.MethodGet, apiOpenAI, s.handleBatchGet})
		add("/v1/batches/{id}/cancel", route{http.MethodPost, apiOpenAI, s.handleBatchCancel})
	}
	add("/v1/models/{id...}", route{http.MethodGet, apiOpenAI, s.handleModel})
	add("/api/chat", route{http.MethodPost, apiOllama, s.handleOllamaChat})
	add("/api/generate", route{http.MethodPost, apiOllama, s.handleOllamaGenerate})
	add("/api/tags", route{http.MethodGet, apiOllama, s.handleOllamaTags})
	add("/api/ps", route{http.MethodGet, apiOllama, s.handleOllamaPS})
	add("/api/show", route{http.MethodPost, apiOllama, s.handleOllamaShow})
	add("/api/version", route{http.MethodGet, apiOllama, s.handleOllamaVersion})
	add("/api/pull", route{http.MethodPost, apiOllama, s.handleOllamaPull})
	add("/api/delete", route{http.MethodDelete, apiOllama, s.handleOllamaDelete})
	add("/api/copy", route{http.MethodPost, apiOllama, s.handleOllamaCopy})
	add("/api/create", route{http.MethodPost, apiOllama, s.handleOllamaCreate})
	add("/api/blobs/{digest}", route{"", apiOllama, s.handleOllamaBlob})
	add("/api/push", route{http.MethodPost, apiOllama, s.handleOllamaPush})
	add("/health", route{http.MethodGet, apiOpenAI, s.handleHealth})
	add("/metrics", route{http.MethodGet, apiOpenAI, s.handleMetrics})
	notFound := func(a api) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			s.writeError(w, r, a, &apiError{Status: http.StatusNotFound, Type: typeNotFound,
				Message: fmt.Sprintf("no endpoint %s %s (docs/api.md lists them)", r.Method, r.URL.Path)})
		}
	}
	s.mux.Handle("/api/", notFound(apiOllama))
	s.mux.Handle("/", notFound(apiOpenAI))
	// ollama's clients (its command line first of all) check that a server
	// is there with HEAD /, and ollama answers GET / in words; a browser
	// gets the page.
	add("/{$}", route{http.MethodGet, apiOllama, s.handleRoot})
	s.mux.Handle("/ui/", webHandler())
}

// apiOf says whose error shape a path gets.
func apiOf(path string) api {
	if strings.HasPrefix(path, "/api/") {
		return apiOllama
	}
	return apiOpenAI
}

// ServeHTTP authenticates the request, bounds its body, and serves it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("server: handler panicked", "method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			if !rec.wrote {
				s.writeError(rec, r, apiOf(r.URL.Path), &apiError{Status: http.StatusInternalServerError, Type: typeServer,
					Message: "internal error: the server failed on this request; it keeps serving others"})
			}
		}
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration", time.Since(start))
	}()
	if r.URL.Path != "/health" && !isPage(r) && s.cfg.APIKey != "" && !s.authorized(r) {
		rec.Header().Set("WWW-Authenticate", `Bearer realm="owl"`)
		s.writeError(rec, r, apiOf(r.URL.Path), &apiError{Status: http.StatusUnauthorized, Type: typeAuthentication, Code: "invalid_api_key",
			Message: "missing or wrong API key: send Authorization: Bearer KEY"})
		return
	}
	limit := s.lim.MaxBodyBytes
	if strings.HasPrefix(r.URL.Path, "/api/blobs/") {
		limit = 1 << 40 // a model file, for ollama's create; the disk's free space bounds it
	}
	if r.URL.Path == "/v1/files" {
		limit = max(limit, maxFileBytes+1<<20) // batch files are larger than requests
	}
	if r.ContentLength > limit {
		rec.Header().Set("Connection", "close")
		s.writeError(rec, r, apiOf(r.URL.Path), tooLarge(limit))
		return
	}
	r.Body = http.MaxBytesReader(rec, r.Body, limit)
	s.mux.ServeHTTP(rec, r)
}

// authorized checks the request's API key in constant time.
func (s *Server) authorized(r *http.Request) bool {
	key := r.Header.Get("X-API-Key")
	if (r.URL.Path == "/v1/audio/stream" || r.URL.Path == "/v1/realtime") && key == "" {
		// Browsers cannot set headers on a WebSocket: the key comes in
		// the query, or as OpenAI's browser clients send it, as a
		// subprotocol "openai-insecure-api-key.KEY".
		key = r.URL.Query().Get("api_key")
		for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
			for _, p := range strings.Split(h, ",") {
				if k, ok := strings.CutPrefix(strings.TrimSpace(p), "openai-insecure-api-key."); ok {
					key = k
				}
			}
		}
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, token, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return false
		}
		key = strings.TrimSpace(token)
	}
	return key != "" && subtle.ConstantTimeCompare([]byte(key), []byte(s.cfg.APIKey)) == 1
}

// recorder notes the status a handler writes, for the log and for knowing
// whether an error can still be sent as a status. It passes flushing and
// hijacking (WebSocket) through.
type recorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	return r.ResponseWriter.Write(b)
}

// Flush sends what was written so far.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack hands the connection over (WebSocket upgrades).
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	r.status, r.wrote = http.StatusSwitchingProtocols, true
	return h.Hijack()
}

// Unwrap gives http.ResponseController the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// headerWritten reports whether w already sent its status line.
func headerWritten(w http.ResponseWriter) bool {
	for {
		switch x := w.(type) {
		case *recorder:
			return x.wrote
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return false
		}
	}
}

// requireContentType answers 415 unless the request's media type is one of
// want ("" accepts a request without a Content-Type).
func requireContentType(r *http.Request, want ...string) error {
	ct := r.Header.Get("Content-Type")
	mt := ""
	if ct != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			return &apiError{Status: http.StatusUnsupportedMediaType, Type: typeInvalidRequest,
				Message: fmt.Sprintf("Content-Type %q cannot be parsed: %v", ct, err)}
		}
	}
	for _, w := range want {
		if mt == w {
			return nil
		}
	}
	shown := mt
	if shown == "" {
		shown = "none"
	}
	var names []string
	for _, w := range want {
		if w != "" {
			names = append(names, w)
		}
	}
	return &apiError{Status: http.StatusUnsupportedMediaType, Type: typeInvalidRequest,
		Message: fmt.Sprintf("Content-Type %s is not supported here: send %s", shown, strings.Join(names, " or "))}
}

// newID returns a random identifier with prefix.
func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// retryAfterSeconds is the Retry-After header value: the expected wait
// when the engine knows one (at most an hour), else Limits.RetryAfter.
func (s *Server) retryAfterSeconds(expected time.Duration) string {
	d := s.lim.RetryAfter
	if expected > 0 {
		d = min(expected, time.Hour)
	}
	secs := int((d + time.Second - 1) / time.Second)
	return fmt.Sprint(max(secs, 1))
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) error {
	m := s.be.Metrics()
	writeJSON(w, http.StatusOK, struct {
		Status        string  `json:"status"`
		Version       string  `json:"version"`
		UptimeSeconds float64 `json:"uptime_seconds"`
		ModelsLoaded  int     `json:"models_loaded"`
	}{"ok", s.cfg.Version, time.Since(s.started).Seconds(), len(m.Models)})
	return nil
}
