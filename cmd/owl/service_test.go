package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The systemd units in docs/systemd pass systemd's own checks, with owl
// where ExecStart says.
func TestServiceUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd; make deps installs it)")
	}
	dir := t.TempDir()
	for _, name := range []string{"owl.service", "owl.socket"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "docs", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "owl.service" {
			if !bytes.Contains(b, []byte("ExecStart=/usr/local/bin/owl serve")) {
				t.Fatal("owl.service does not start /usr/local/bin/owl serve")
			}
			b = bytes.ReplaceAll(b, []byte("/usr/local/bin/owl"), []byte(owlBin))
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(analyze, "verify", "owl.socket", "owl.service")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// startActivated starts owl serve as systemd's socket activation would:
// the listening socket at file descriptor 3, LISTEN_PID its own pid.
func startActivated(t *testing.T, ln *os.File, args ...string) *serveProc {
	t.Helper()
	script := `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" serve "$@"`
	cmd := exec.Command("sh", append([]string{"-c", script, owlBin}, args...)...)
	cmd.Env = serveEnv()
	cmd.ExtraFiles = []*os.File{ln}
	return launchServe(t, cmd)
}

// A crash of owl serve (here a SIGKILL, as a native abort would end it)
// loses only the requests in flight: with the socket held by the service
// manager, a client that connects while owl is down is served by the next
// owl the manager starts.
func TestSocketActivationOutlivesACrash(t *testing.T) {
	dir := modelsFolder(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	url := "http://" + l.Addr().String()
	complete := func() (int, error) {
		resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"model":"tiny","prompt":"The owl","max_tokens":3}`))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	first := startActivated(t, f, "--models-dir", dir)
	if first.url != url {
		t.Fatalf("owl serves %s, not the socket it was given (%s)", first.url, url)
	}
	if code, err := complete(); code != http.StatusOK {
		t.Fatalf("before the crash: %d, %v", code, err)
	}
	first.cmd.Process.Signal(syscall.SIGKILL)
	<-first.exited

	// A client arrives while nothing serves: the kernel queues it.
	answered := make(chan error, 1)
	go func() {
		code, err := complete()
		if err == nil && code != http.StatusOK {
			err = &statusError{code}
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("answered while no owl runs: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	startActivated(t, f, "--models-dir", dir)
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("the client that waited through the restart: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the client that waited through the restart got no answer")
	}
}

type statusError struct{ code int }

func (e *statusError) Error() string { return http.StatusText(e.code) }
