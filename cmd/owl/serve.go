package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/hub"
	"github.com/owlengine/owl/models/store"
	"github.com/owlengine/owl/server"
)

// DefaultServeAddr is where owl serve listens unless told otherwise.
const DefaultServeAddr = "127.0.0.1:11435"

type serveFlags struct {
	hostFlags
	host            string
	apiKey          string
	insecure        bool
	maxQueue        int
	keepAlive       string
	memoryWait      time.Duration
	queueWait       time.Duration
	allowedMediaDir string
	maxBody         string
	maxAudio        time.Duration
	shutdownGrace   time.Duration
	tlsCert, tlsKey string
	tlsSelfSigned   bool
	nats            natsFlags
	dataDir         string
}

func newServeCmd() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "serve the OpenAI- and ollama-compatible HTTP API",
		Long: `Serve answers the OpenAI API (/v1/chat/completions, /v1/completions,
/v1/audio/transcriptions, /v1/audio/translations, /v1/models), the ollama
API (/api/chat, /api/generate, /api/tags, /api/ps, /api/show), live
transcription over a WebSocket (/v1/audio/stream), /health and Prometheus
/metrics. Models are the store's entries in --models-dir and the model files
lying in that folder, by file name. docs/api.md describes every endpoint.

Binding an address other than loopback needs --api-key (or OWL_API_KEY),
unless --insecure says otherwise. SIGINT or SIGTERM stops accepting
requests, lets those in flight finish for --shutdown-grace, cancels the
rest and exits 0.`,
		Example: `  owl serve
  owl serve --models-dir build/models
  owl serve --host 0.0.0.0:11435 --api-key "$(cat key.txt)" --max-memory 8GiB`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd.Context(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.host, "host", envOr("OWL_HOST", DefaultServeAddr), "address to listen on, HOST[:PORT] (OWL_HOST)")
	fs.StringVar(&f.apiKey, "api-key", "", "require this key as Authorization: Bearer KEY (default $OWL_API_KEY)")
	fs.BoolVar(&f.insecure, "insecure", false, "allow a non-loopback address without an API key")
	f.hostFlags.register(fs, "requests one model runs at once (a text model's KV-cache slots, a speech model's transcriptions)")
	fs.IntVar(&f.maxQueue, "max-queue", 64, "requests that may wait per model before 503")
	fs.DurationVar(&f.queueWait, "queue-wait", 30*time.Second, "how long a request waits in its model's queue before 503 (0: until the client leaves)")
	fs.StringVar(&f.keepAlive, "keep-alive", "5m", "how long an idle model stays loaded (0: unload at once; -1: forever)")
	fs.DurationVar(&f.memoryWait, "memory-wait", 30*time.Second, "how long a request waits for memory to load its model before 503")
	fs.StringVar(&f.allowedMediaDir, "allowed-media-dir", "", "folder file:// image URLs may be read from (default: none)")
	fs.StringVar(&f.maxBody, "max-body", "25MiB", "largest request body")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM; with --tls-key)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "the certificate's private key (PEM)")
	fs.BoolVar(&f.tlsSelfSigned, "tls-self-signed", false, "serve HTTPS with a self-signed certificate made once and kept in the models folder's tls/ (for a LAN: clients trust it by its fingerprint)")
	fs.DurationVar(&f.maxAudio, "max-audio", server.DefaultMaxAudio, "longest audio per transcription or live stream")
	fs.DurationVar(&f.shutdownGrace, "shutdown-grace", 10*time.Second, "how long requests in flight may finish at shutdown")
	fs.StringVar(&f.dataDir, "data-dir", os.Getenv("OWL_DATA_DIR"), "folder of the Batch API's files and batches (default: .batches in the models folder; OWL_DATA_DIR)")
	f.nats.add(fs, "run batches on the workers of this NATS JetStream fleet instead of here")
	fs.SetNormalizeFunc(normalizeFlag)
	return cmd
}

// hostFlags are the flags owl serve and owl worker share: the models
// folder and how its models run.
type hostFlags struct {
	gpu       gpuFlags
	modelsDir string
	maxMemory string
	parallel  int
	threads   int
	ctxSize   int
}

func (f *hostFlags) register(fs *pflag.FlagSet, parallel string) {
	fs.StringVar(&f.modelsDir, "models-dir", "", "model store folder (default $OWL_MODELS or ~/.owl/models)")
	fs.StringVar(&f.maxMemory, "max-memory", os.Getenv("OWL_MAX_MEMORY"), "memory budget for loaded models, e.g. 8GiB or 75% (default 75% of RAM)")
	fs.IntVar(&f.parallel, "parallel", 4, parallel)
	fs.IntVarP(&f.threads, "threads", "t", 0, "CPU threads per model (default: all CPUs)")
	fs.IntVarP(&f.ctxSize, "ctx-size", "c", 0, "context tokens per request (default: min(4096, trained))")
	f.gpu.register(fs, "device")
}

// options checks the flags and returns the engine options they make
// (GPUs apart: gpu.apply, when the engine is made).
func (f *hostFlags) options() (engine.Options, error) {
	switch {
	case f.parallel <= 0:
		return engine.Options{}, usageError{fmt.Errorf("--parallel %d must be positive", f.parallel)}
	case f.threads < 0:
		return engine.Options{}, usageError{fmt.Errorf("--threads %d must not be negative", f.threads)}
	case f.ctxSize < 0:
		return engine.Options{}, usageError{fmt.Errorf("--ctx-size %d must not be negative", f.ctxSize)}
	}
	eo := engine.Options{Threads: f.threads, NumCtx: f.ctxSize, Parallel: f.parallel}
	if f.maxMemory != "" {
		var err error
		if eo.MaxMemory, err = engine.ParseBytes(f.maxMemory); err != nil {
			return engine.Options{}, usageError{fmt.Errorf("--max-memory: %w", err)}
		}
	}
	return eo, nil
}

// folder finds the models folder: --models-dir, else the store's default.
func (f *hostFlags) folder() error {
	if f.modelsDir == "" {
		var err error
		if f.modelsDir, err = store.DefaultDir(); err != nil {
			return err
		}
	}
	if st, err := os.Stat(f.modelsDir); err != nil || !st.IsDir() {
		return fmt.Errorf("--models-dir %s: no such folder (owl pull fills the default one)", f.modelsDir)
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// listenAddr completes HOST or HOST:PORT with the default port.
func listenAddr(host string) (string, error) {
	if host == "" {
		return DefaultServeAddr, nil
	}
	if h, p, err := net.SplitHostPort(host); err == nil {
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
			return "", fmt.Errorf("--host %q: bad port %q", host, p)
		}
		return net.JoinHostPort(h, p), nil
	}
	_, port, _ := net.SplitHostPort(DefaultServeAddr)
	return net.JoinHostPort(strings.Trim(host, "[]"), port), nil
}

// isLoopback says whether addr only accepts connections from this machine.
func isLoopback(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// keepAliveOption turns --keep-alive into engine options.
func keepAliveOption(s string) (d time.Duration, none bool, err error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		d = time.Duration(n * float64(time.Second))
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, false, fmt.Errorf("--keep-alive %q: want a duration such as 5m, 0 or -1", s)
	}
	switch {
	case d < 0:
		return -1, false, nil
	case d == 0:
		return 0, true, nil
	}
	return d, false, nil
}

func (f *serveFlags) run(ctx context.Context, stderr io.Writer) error {
	addr, err := listenAddr(f.host)
	if err != nil {
		return usageError{err}
	}
	switch {
	case f.tlsSelfSigned && (f.tlsCert != "" || f.tlsKey != ""):
		return usageError{errors.New("--tls-self-signed makes its own certificate: give it, or --tls-cert and --tls-key, not both")}
	case (f.tlsCert == "") != (f.tlsKey == ""):
		return usageError{errors.New("--tls-cert and --tls-key go together")}
	}
	// A socket from the service manager (systemd's owl.socket) replaces
	// --host.
	inherited, err := inheritedListener()
	if err != nil {
		return err
	}
	if inherited != nil {
		addr = inherited.Addr().String()
	}
	if f.apiKey == "" {
		f.apiKey = os.Getenv("OWL_API_KEY")
	}
	if !isLoopback(addr) && f.apiKey == "" && !f.insecure {
		if inherited != nil {
			inherited.Close()
		}
		return usageError{fmt.Errorf("refusing to serve on %s, reachable from other machines, without an API key: pass --api-key (or OWL_API_KEY), or --insecure to serve without one", addr)}
	}
	switch {
	case f.maxQueue <= 0:
		return usageError{fmt.Errorf("--max-queue %d must be positive", f.maxQueue)}
	case f.memoryWait < 0 || f.queueWait < 0 || f.maxAudio <= 0 || f.shutdownGrace < 0:
		return usageError{errors.New("--memory-wait, --queue-wait, --max-audio and --shutdown-grace must not be negative")}
	}
	eo, err := f.hostFlags.options()
	if err != nil {
		return err
	}
	maxBody, err := engine.ParseBytes(f.maxBody)
	if err != nil {
		return usageError{fmt.Errorf("--max-body: %w", err)}
	}
	keep, noKeep, err := keepAliveOption(f.keepAlive)
	if err != nil {
		return usageError{err}
	}
	if err := f.hostFlags.folder(); err != nil {
		return err
	}
	if f.allowedMediaDir != "" {
		if st, err := os.Stat(f.allowedMediaDir); err != nil || !st.IsDir() {
			return fmt.Errorf("--allowed-media-dir %s: no such folder", f.allowedMediaDir)
		}
	}

	// One server owns a data folder: two would both run its batches.
	dataDir := cmp.Or(f.dataDir, filepath.Join(f.modelsDir, ".batches"))
	unlock, err := lockDataDir(dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	fl, err := f.nats.connect(ctx, "owl serve")
	if err != nil {
		return err
	}
	if fl != nil {
		defer fl.Close()
		fmt.Fprintf(stderr, "owl: batches run on the fleet at %s\n", fl.Conn().ConnectedUrlRedacted())
	}
	eo.MaxQueue, eo.KeepAlive, eo.NoKeepAlive, eo.MemoryWait, eo.QueueWait = f.maxQueue, keep, noKeep, f.memoryWait, f.queueWait
	if err := f.gpu.apply(&eo); err != nil {
		return err
	}
	e := engine.New(eo)
	var pulls *hub.Client // /api/pull downloads as owl pull does, unless offline
	if !envTrue("OWL_OFFLINE") && !envTrue("HF_HUB_OFFLINE") {
		pulls = hub.NewClient("owl/" + version)
	}
	srv, err := server.New(server.Config{Engine: e, ModelsDir: f.modelsDir, APIKey: f.apiKey, AllowedMediaDir: f.allowedMediaDir,
		Limits: server.Limits{MaxBodyBytes: int64(maxBody), MaxAudio: f.maxAudio}, Version: version, Hub: pulls, Fleet: fl, DataDir: dataDir})
	if err != nil {
		e.Close()
		return err
	}
	tlsCfg, certDesc, err := tlsConfig(f.tlsCert, f.tlsKey, f.tlsSelfSigned, filepath.Join(f.modelsDir, "tls"), addr)
	if err != nil {
		e.Close()
		return usageError{err}
	}
	ln := inherited
	if ln == nil {
		if ln, err = net.Listen("tcp", addr); err != nil {
			e.Close()
			return err
		}
	}
	scheme := "http"
	if tlsCfg != nil {
		ln, scheme = tls.NewListener(ln, tlsCfg), "https"
		fmt.Fprintf(stderr, "owl: TLS certificate %s\n", certDesc)
	}
	fmt.Fprintf(stderr, "owl %s serving on %s://%s (models: %s)\n", version, scheme, ln.Addr(), f.modelsDir)
	slog.Info("serving", "addr", ln.Addr().String(), "models", f.modelsDir, "features", strings.Join(engine.SystemFeatures(), " "))
	// Once shutdown begins, a second signal kills the process the usual way.
	stopReset := context.AfterFunc(ctx, func() { signal.Reset(os.Interrupt, syscall.SIGTERM) })
	defer stopReset()
	err = serveHTTP(ctx, ln, srv, f.shutdownGrace, stderr)
	// The requests are over, or cancelled; batches stop where they are
	// (they resume at the next start); the engine waits for those still
	// unwinding, which takes a decode step.
	srv.Close()
	e.Close()
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, "owl: stopped")
	return nil
}

// lockDataDir takes the data folder's lock for the life of the process.
func lockDataDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("the data folder %s is another owl serve's (it runs the batches kept there): give this one its own --data-dir", dir)
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// serveHTTP serves h on ln until ctx ends, then shuts down: it stops
// accepting connections, lets the requests in flight finish for grace,
// and cancels those still running (and live streams on hijacked
// connections), whose contexts all derive from one it cancels. It returns
// nil after a shutdown, or the error that stopped serving before one.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, grace time.Duration, stderr io.Writer) error {
	// Requests' contexts derive from base: cancelling it cancels them all.
	base, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	hs := &http.Server{
		Handler:           h,
		BaseContext:       func(net.Listener) context.Context { return base },
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintf(stderr, "owl: shutting down: waiting up to %s for requests in flight\n", grace)
	graceCtx, cancel := context.WithTimeout(context.Background(), grace)
	err := hs.Shutdown(graceCtx)
	cancel()
	cancelAll()
	if err != nil {
		// The grace period is over: the requests still running were just
		// cancelled and end at their next step. Those that do not (a
		// handler stuck writing to a client that stopped reading) lose
		// their connections.
		fmt.Fprintln(stderr, "owl: cancelled the requests still running")
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if hs.Shutdown(closeCtx) != nil {
			hs.Close()
		}
		cancel()
	}
	<-errc // Serve has returned ErrServerClosed
	return nil
}
