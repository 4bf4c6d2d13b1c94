package server

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	ollamacmd "github.com/ollama/ollama/cmd"
)

// TestOllamaCLIInteractive: `ollama run tiny` on a terminal (a
// pseudo-terminal) shows its prompt, answers a line and leaves on /bye.
func TestOllamaCLIInteractive(t *testing.T) {
	skipRacyCLI(t)
	ts := testServer(t, Config{})
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var screen strings.Builder
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	// waitFor waits until the screen shows want n times.
	waitFor := func(want string, n int) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			mu.Lock()
			c := strings.Count(screen.String(), want)
			mu.Unlock()
			if c >= n {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("the terminal never showed %q %d times:\n%q", want, n, screen.String())
	}

	cliMu.Lock()
	defer cliMu.Unlock()
	t.Setenv("OLLAMA_HOST", ts.URL)
	t.Setenv("TERM", "xterm-256color")
	stdin, stdout, stderr := os.Stdin, os.Stdout, os.Stderr
	os.Stdin, os.Stdout, os.Stderr = tty, tty, tty
	defer func() { os.Stdin, os.Stdout, os.Stderr = stdin, stdout, stderr }()
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() {
		cli := ollamacmd.NewCLI()
		cli.SetArgs([]string{"run", "tiny"})
		done <- cli.ExecuteContext(ctx)
	}()
	// The empty prompt shows a placeholder: at the start, and after each answer.
	waitFor("Send a message", 1)
	ptmx.WriteString("Once upon a time\r")
	waitFor("Send a message", 2)
	mu.Lock()
	shown := screen.String()
	mu.Unlock()
	// Between the line sent and the next prompt: the model's answer.
	_, after, _ := strings.Cut(shown, "Once upon a time")
	answer, _, _ := strings.Cut(after, ">>> ")
	if strings.TrimSpace(stripEscapes(answer)) == "" {
		t.Fatalf("no answer on the terminal:\n%q", shown)
	}
	ptmx.WriteString("/bye\r")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ollama run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("ollama run did not leave on /bye")
	}
}

// stripEscapes drops terminal escape sequences (CSI: ESC [ … letter).
func stripEscapes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
