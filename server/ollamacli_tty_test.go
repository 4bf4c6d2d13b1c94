package server

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	ollamacmd "github.com/ollama/ollama/cmd"

	"github.com/owlengine/owl/engine"
)

// TestOllamaCLIInteractive: `ollama run seer` (a vision model) on a
// terminal (a pseudo-terminal) shows its prompt, answers a line, takes an
// image named in a line (its tokens counted in the prompt, as the
// verbose statistics show) and leaves on /bye.
func TestOllamaCLIInteractive(t *testing.T) {
	skipRacyCLI(t)
	dir := t.TempDir()
	for _, name := range []string{"seer.gguf", "mmproj-seer.gguf"} {
		b, err := os.ReadFile(filepath.Join(modelsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "picture.png")
	if err := os.WriteFile(img, pngImage(t, 24, 16), 0o644); err != nil {
		t.Fatal(err)
	}
	e := engine.New(engine.Options{Threads: 2, NumCtx: 512, Parallel: 1, CacheDir: filepath.Join(dir, "cache")})
	defer e.Close()
	ts := testServer(t, Config{Engine: e, ModelsDir: dir})
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
		cli.SetArgs([]string{"run", "seer"})
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
	// The prompt's token count of a line, and of the same line naming an
	// image: the image's tokens are in the second.
	prompts := 3
	evalCount := func(line string, k int) int {
		t.Helper()
		ptmx.WriteString("/clear\r")
		waitFor("Cleared session context", k)
		prompts++
		waitFor("Send a message", prompts)
		ptmx.WriteString(line + "\r")
		waitFor("prompt eval count:", k)
		prompts++
		waitFor("Send a message", prompts)
		mu.Lock()
		defer mu.Unlock()
		m := regexp.MustCompile(`prompt eval count:\s+(\d+)`).FindAllStringSubmatch(screen.String(), -1)
		c, _ := strconv.Atoi(m[len(m)-1][1])
		return c
	}
	ptmx.WriteString("/set verbose\r")
	waitFor("Send a message", 3)
	text := evalCount("What is in it ?", 1)
	withImage := evalCount("What is in it "+img+" ?", 2)
	mu.Lock()
	added := strings.Contains(screen.String(), "Added image")
	mu.Unlock()
	if !added || withImage < text+4 {
		t.Fatalf("an image in a line: added %v, prompt tokens %d with it, %d without", added, withImage, text)
	}
	t.Logf("prompt tokens: %d with the image, %d without", withImage, text)
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
