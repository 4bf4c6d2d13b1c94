package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/testmodel"
	"github.com/owlengine/owl/server"
)

// lockedBuffer is an io.Writer that many goroutines may write and a test
// may watch.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until the text written matches re, and returns the match.
func (l *lockedBuffer) waitFor(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(l.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, no %q in:\n%s", timeout, re, l.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	servingRe      = regexp.MustCompile(`serving on https?://(\S+) `)
	shuttingDownRe = regexp.MustCompile(`owl: shutting down`)
)

// modelsFolder is a models folder holding a tiny text model.
func modelsFolder(t *testing.T) string {
	dir := t.TempDir()
	if err := testmodel.WriteLlamaFile(filepath.Join(dir, "tiny.gguf"), testmodel.TinyLlama()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serveEnv is the environment without owl's own variables, which would
// change what the flags say.
func serveEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OWL_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// serveProc is an owl serve process.
type serveProc struct {
	cmd    *exec.Cmd
	url    string // where to reach it, on loopback
	stderr *lockedBuffer
	exited chan struct{} // closed when the process has exited
	err    error         // how it exited, once exited is closed
}

// startServe runs owl serve with args and waits until it listens.
func startServe(t *testing.T, env []string, args ...string) *serveProc {
	t.Helper()
	cmd := exec.Command(owlBin, append([]string{"serve"}, args...)...)
	cmd.Env = env
	return launchServe(t, cmd)
}

// launchServe starts cmd, an owl serve process, and waits until it
// listens.
func launchServe(t *testing.T, cmd *exec.Cmd) *serveProc {
	t.Helper()
	p := &serveProc{cmd: cmd, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	args := cmd.Args[1:]
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := servingRe.FindStringSubmatch(p.stderr.String()); m != nil {
			_, port, err := net.SplitHostPort(m[1])
			if err != nil {
				t.Fatalf("serving on %q: %v", m[1], err)
			}
			p.url = "http://" + net.JoinHostPort("127.0.0.1", port)
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("owl serve %v exited (%v) before serving:\n%s", args, p.err, p.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("owl serve %v did not start in 30 s:\n%s", args, p.stderr.String())
		}
	}
}

// stop sends sig and checks that the process exits 0 and says it stopped.
func (p *serveProc) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("owl serve still running 20 s after %v:\n%s", sig, p.stderr.String())
	}
	if p.err != nil {
		t.Fatalf("owl serve after %v: %v\n%s", sig, p.err, p.stderr.String())
	}
	if out := p.stderr.String(); !strings.Contains(out, "owl: shutting down") || !strings.HasSuffix(out, "owl: stopped\n") {
		t.Fatalf("stderr after %v:\n%s", sig, out)
	}
}

// httpGet fetches url, with an API key when key is not empty.
func httpGet(t *testing.T, url, key string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeSignalStops(t *testing.T) {
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startServe(t, serveEnv(), "--host", "127.0.0.1:0", "--models-dir", modelsFolder(t))
			code, body := httpGet(t, p.url+"/health", "")
			if code != 200 || !strings.Contains(body, `"status":"ok"`) {
				t.Fatalf("/health: %d %s", code, body)
			}
			code, body = httpGet(t, p.url+"/v1/models", "")
			if code != 200 || !strings.Contains(body, `"id":"tiny"`) {
				t.Fatalf("/v1/models: %d %s", code, body)
			}
			p.stop(t, sig)
		})
	}
}

func TestServeRefusesNonLoopbackWithoutKey(t *testing.T) {
	dir := modelsFolder(t)
	for _, host := range []string{"0.0.0.0:0", "0.0.0.0", "[::]:0", "192.0.2.1:8080"} {
		cmd := exec.Command(owlBin, "serve", "--host", host, "--models-dir", dir)
		cmd.Env = serveEnv()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("--host %s: %v, want exit code 2\n%s", host, err, stderr.String())
		}
		msg := stderr.String()
		if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "refusing to serve") ||
			!strings.Contains(msg, "--api-key") || !strings.Contains(msg, "--insecure") {
			t.Fatalf("--host %s: message %q", host, msg)
		}
	}
}

func TestServeNonLoopback(t *testing.T) {
	dir := modelsFolder(t)
	t.Run("insecure", func(t *testing.T) {
		p := startServe(t, serveEnv(), "--host", "0.0.0.0:0", "--insecure", "--models-dir", dir)
		if code, body := httpGet(t, p.url+"/v1/models", ""); code != 200 || !strings.Contains(body, `"id":"tiny"`) {
			t.Fatalf("/v1/models without a key: %d %s", code, body)
		}
		p.stop(t, syscall.SIGTERM)
	})
	t.Run("api key", func(t *testing.T) {
		// The key may come from the environment.
		p := startServe(t, serveEnv("OWL_API_KEY=s3cret"), "--host", "0.0.0.0:0", "--models-dir", dir)
		if code, _ := httpGet(t, p.url+"/health", ""); code != 200 {
			t.Fatalf("/health without a key: %d", code)
		}
		if code, body := httpGet(t, p.url+"/v1/models", ""); code != 401 {
			t.Fatalf("/v1/models without a key: %d %s", code, body)
		}
		if code, body := httpGet(t, p.url+"/v1/models", "wrong"); code != 401 {
			t.Fatalf("/v1/models with a wrong key: %d %s", code, body)
		}
		if code, body := httpGet(t, p.url+"/v1/models", "s3cret"); code != 200 || !strings.Contains(body, `"id":"tiny"`) {
			t.Fatalf("/v1/models with the key: %d %s", code, body)
		}
		p.stop(t, os.Interrupt)
	})
}

func TestServeMissingFolders(t *testing.T) {
	dir := modelsFolder(t)
	missing := filepath.Join(t.TempDir(), "nowhere")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--models-dir", dir, "--allowed-media-dir", missing}, "--allowed-media-dir " + missing + ": no such folder"},
		{[]string{"--models-dir", missing}, "--models-dir " + missing + ": no such folder"},
	} {
		cmd := exec.Command(owlBin, append([]string{"serve", "--host", "127.0.0.1:0"}, tc.args...)...)
		cmd.Env = serveEnv()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("owl serve %v started instead of failing:\n%s", tc.args, stderr.String())
		}
		if err == nil || !strings.Contains(stderr.String(), tc.want) || strings.Contains(stderr.String(), "serving on") {
			t.Fatalf("owl serve %v: %v\n%s", tc.args, err, stderr.String())
		}
	}
}

// TestServeCommandStopsOnCancel runs the command in this process: the
// end of its context stops it, and it returns nil.
func TestServeCommandStopsOnCancel(t *testing.T) {
	root := newRootCmd()
	root.SetArgs([]string{"serve", "--host", "127.0.0.1:0", "--models-dir", modelsFolder(t)})
	stderr := &lockedBuffer{}
	root.SetErr(stderr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	addr := stderr.waitFor(t, servingRe, 30*time.Second)[1]
	if code, body := httpGet(t, "http://"+addr+"/health", ""); code != 200 {
		t.Fatalf("/health: %d %s", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("serve still running 20 s after its context ended:\n%s", stderr.String())
	}
	if !strings.HasSuffix(stderr.String(), "owl: stopped\n") {
		t.Fatalf("stderr:\n%s", stderr.String())
	}
}

// slowBackend delays every streamed chunk, as a large model would take
// to generate it, and records how each chat ended.
type slowBackend struct {
	server.Backend
	delay time.Duration
	mu    sync.Mutex
	ends  []error
}

func (b *slowBackend) Chat(ctx context.Context, req engine.ChatRequest, onChunk func(engine.Chunk) error) (engine.Result, error) {
	cb := onChunk
	if onChunk != nil {
		cb = func(c engine.Chunk) error {
			select {
			case <-time.After(b.delay):
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			return onChunk(c)
		}
	}
	res, err := b.Backend.Chat(ctx, req, cb)
	b.mu.Lock()
	b.ends = append(b.ends, err)
	b.mu.Unlock()
	return res, err
}

func (b *slowBackend) lastEnd() (error, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.ends) == 0 {
		return nil, false
	}
	return b.ends[len(b.ends)-1], true
}

// TestServeShutdown checks serveHTTP's shutdown with a real server and
// engine: requests in flight finish within the grace period while new
// connections are refused, and a request that outlives it is cancelled.
func TestServeShutdown(t *testing.T) {
	e := engine.New(engine.Options{Threads: 1, NumCtx: 512, Parallel: 2})
	be := &slowBackend{Backend: e, delay: 100 * time.Millisecond}
	srv, err := server.New(server.Config{Engine: be, ModelsDir: modelsFolder(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// Every request on a connection of its own, so that a refused dial
	// shows a refused request.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	// serve starts serveHTTP on a loopback port with grace; stop begins
	// the shutdown.
	serve := func(grace time.Duration) (url string, stop context.CancelFunc, done <-chan error, stderr *lockedBuffer) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		stderr = &lockedBuffer{}
		go func() { errc <- serveHTTP(ctx, ln, srv, grace, stderr) }()
		return "http://" + ln.Addr().String(), cancel, errc, stderr
	}
	// stream starts a streamed chat and returns its events once the first
	// has come.
	stream := func(url string, maxTokens int) (*bufio.Reader, io.Closer) {
		body := fmt.Sprintf(`{"model":"tiny","stream":true,"max_tokens":%d,"temperature":0,"messages":[{"role":"user","content":"Tell me a story."}]}`, maxTokens)
		resp, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		br := bufio.NewReader(resp.Body)
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: {") {
			t.Fatalf("first event %q: %v", line, err)
		}
		return br, resp.Body
	}
	// rest reads the stream to its end.
	rest := func(br *bufio.Reader) (string, error) {
		b, err := io.ReadAll(br)
		return string(b), err
	}
	wait := func(done <-chan error, timeout time.Duration) error {
		select {
		case err := <-done:
			return err
		case <-time.After(timeout):
			t.Fatalf("serveHTTP still running %s after the shutdown began", timeout)
			return nil
		}
	}

	t.Run("in flight finishes", func(t *testing.T) {
		const grace = 10 * time.Second
		url, stop, done, stderr := serve(grace)
		// 20 tokens, 100 ms each: about 2 s.
		br, body := stream(url, 20)
		defer body.Close()
		began := time.Now()
		stop()
		stderr.waitFor(t, shuttingDownRe, 5*time.Second)
		// The listener closes as the shutdown begins: a new connection is
		// refused, while the stream goes on.
		for {
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "http://"), time.Second)
			if err != nil {
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("dial during the shutdown: %v", err)
				}
				break
			}
			c.Close()
			if time.Since(began) > time.Second {
				t.Fatal("new connections still accepted 1 s after the shutdown began")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := client.Get(url + "/health"); err == nil {
			t.Fatal("a new request was served during the shutdown")
		}
		text, err := rest(br)
		if err != nil || !strings.HasSuffix(text, "data: [DONE]\n\n") || !strings.Contains(text, `"finish_reason":"`) {
			t.Fatalf("the stream in flight ended with %v:\n%s", err, text)
		}
		if end, ok := be.lastEnd(); !ok || end != nil {
			t.Fatalf("the chat in flight ended with %v", end)
		}
		if err := wait(done, grace+5*time.Second); err != nil {
			t.Fatalf("serveHTTP: %v", err)
		}
		took := time.Since(began)
		t.Logf("the stream finished and the server stopped %s after the shutdown began (grace %s)", took.Round(time.Millisecond), grace)
		if took >= grace {
			t.Fatalf("the shutdown took %s, the whole grace period", took)
		}
		if strings.Contains(stderr.String(), "cancelled") {
			t.Fatalf("stderr:\n%s", stderr.String())
		}
	})

	t.Run("past the grace is cancelled", func(t *testing.T) {
		const grace = 500 * time.Millisecond
		url, stop, done, stderr := serve(grace)
		// Until the context is full: about 50 s at 100 ms a token.
		br, body := stream(url, 0)
		defer body.Close()
		began := time.Now()
		stop()
		if err := wait(done, grace+10*time.Second); err != nil {
			t.Fatalf("serveHTTP: %v", err)
		}
		// Cancelled, the request ends at its next step: well before the
		// connections would be closed under it, 5 s later.
		took := time.Since(began)
		if took < grace || took > grace+3*time.Second {
			t.Fatalf("serveHTTP returned %s after the shutdown began, want just after the grace period of %s", took, grace)
		}
		if !strings.Contains(stderr.String(), "owl: cancelled the requests still running") {
			t.Fatalf("stderr:\n%s", stderr.String())
		}
		// The stream ends without [DONE]: it was cut short.
		text, _ := rest(br)
		if strings.Contains(text, "[DONE]") {
			t.Fatalf("the stream finished:\n%s", text)
		}
		if end, ok := be.lastEnd(); !ok || !errors.Is(end, context.Canceled) {
			t.Fatalf("the chat ended with %v, want it cancelled", end)
		}
		t.Logf("serveHTTP returned %s after the shutdown began (grace %s), the request cancelled", took.Round(time.Millisecond), grace)
	})

	// Nothing is left running: the engine closes at once.
	closed := make(chan struct{})
	go func() {
		e.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the engine did not close: a request is still running")
	}
}
