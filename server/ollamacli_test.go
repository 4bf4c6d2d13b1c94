package server

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	ollamacmd "github.com/ollama/ollama/cmd"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/internal/hubtest"
	"github.com/owlengine/owl/models/hub"
)

// skipRacyCLI skips a test of ollama's command line under the race
// detector: the CLI's own spinner (package progress) starts and stops a
// goroutine that shares fields without a lock, and the detector reports
// that race, in this test or in the next one.
func skipRacyCLI(t *testing.T) {
	if raceEnabled {
		t.Skip("ollama's command line has a data race of its own (progress.Progress); the test runs without -race")
	}
}

// cliMu serializes the CLI runs: each takes over the process's standard
// output and OLLAMA_HOST.
var cliMu sync.Mutex

// ollamaCLI runs the ollama command line — the pinned module's own command
// code, cmd.NewCLI — in this process against the server at url, and
// returns what it printed (standard output and error together).
func ollamaCLI(t *testing.T, url string, args ...string) (string, error) {
	t.Helper()
	cliMu.Lock()
	defer cliMu.Unlock()
	t.Setenv("OLLAMA_HOST", url)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = w, w
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	cli := ollamacmd.NewCLI()
	cli.SetArgs(args)
	cli.SetOut(w)
	cli.SetErr(w)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	err = cli.ExecuteContext(ctx)
	cancel()
	os.Stdout, os.Stderr = stdout, stderr
	w.Close()
	return <-out, err
}

// TestOllamaCLI drives ollama's own command line against owl: list, show
// (every section), run one-shot (and with an image), ps (context,
// processor, until), stop, pull with its progress from the local hub, cp,
// create -f Modelfile, rm. No command fails or crashes, and the outputs
// that matter are parsed.
func TestOllamaCLI(t *testing.T) {
	skipRacyCLI(t)
	srv := hubtest.New(t)
	tinyBytes, err := os.ReadFile(filepath.Join(modelsDir, "tiny.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	srv.AddLFS("owl-test/tiny-GGUF", "tiny-F16.gguf", tinyBytes)
	hc := hub.NewClient("owl-test")
	hc.Endpoint = srv.URL()
	dir := t.TempDir()
	for _, name := range []string{"tiny.gguf", "seer.gguf", "mmproj-seer.gguf"} {
		b, err := os.ReadFile(filepath.Join(modelsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e := engine.New(engine.Options{Threads: 2, NumCtx: 512, Parallel: 1, CacheDir: filepath.Join(dir, "cache")})
	defer e.Close()
	ts := testServer(t, Config{Engine: e, ModelsDir: dir, Hub: hc})
	run := func(args ...string) string {
		t.Helper()
		out, err := ollamaCLI(t, ts.URL, args...)
		if err != nil {
			t.Fatalf("ollama %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	// rows returns the table rows of a listing by their first column.
	rows := func(out string) map[string][]string {
		m := map[string][]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			f := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(l), -1)
			m[f[0]] = f
		}
		return m
	}

	list := rows(run("list"))
	if len(list) != 2 || list["tiny:latest"] == nil && list["tiny"] == nil || list["seer:latest"] == nil && list["seer"] == nil {
		t.Fatalf("ollama list: %v", list)
	}

	show := run("show", "seer")
	for _, section := range []string{"Model", "architecture", "llama", "context length", "Capabilities", "completion", "vision", "Projector", "clip", "Parameters"} {
		if !strings.Contains(show, section) {
			t.Fatalf("ollama show seer lacks %q:\n%s", section, show)
		}
	}
	if out := run("show", "seer", "--modelfile"); !strings.Contains(out, "FROM ") {
		t.Fatalf("ollama show --modelfile:\n%s", out)
	}

	if out := run("run", "tiny", "Once upon a time", "--nowordwrap"); strings.TrimSpace(out) == "" {
		t.Fatal("ollama run tiny: no output")
	}
	img := filepath.Join(dir, "picture.png")
	if err := os.WriteFile(img, pngImage(t, 24, 16), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := run("run", "seer", "What is in "+img+" ?"); !strings.Contains(out, "Added image") {
		t.Fatalf("ollama run seer with an image:\n%s", out)
	}
	if m := e.Metrics(); len(m.Models) == 0 {
		t.Fatal("nothing loaded after the runs")
	}

	psOut := run("ps")
	t.Logf("ollama ps:\n%s", psOut)
	ps := rows(psOut)
	var seen bool
	for name, cols := range ps {
		if !strings.HasPrefix(name, "seer") && !strings.HasPrefix(name, "tiny") {
			continue
		}
		seen = true
		// NAME ID SIZE PROCESSOR CONTEXT UNTIL
		if len(cols) != 6 || cols[3] != "100% CPU" || cols[4] != "512" || !strings.Contains(cols[5], "from now") {
			t.Fatalf("ollama ps row %q", cols)
		}
	}
	if !seen {
		t.Fatalf("ollama ps: %v", ps)
	}
	run("stop", "seer")
	if _, ok := rows(run("ps"))["seer:latest"]; ok {
		t.Fatal("seer still running after ollama stop")
	}

	pull := run("pull", "hf.co/owl-test/tiny-GGUF:F16")
	t.Logf("ollama pull:\n%q", pull)
	if !strings.Contains(pull, "pulling manifest") || !strings.Contains(pull, "success") {
		t.Fatalf("ollama pull:\n%s", pull)
	}
	run("cp", "tiny-F16", "tiny-copy") // a store entry (a folder file is copied as a file)
	modelfile := filepath.Join(dir, "Modelfile")
	if err := os.WriteFile(modelfile, []byte("FROM tiny-F16\nSYSTEM You are an owl.\nPARAMETER temperature 0\n"+
		`TEMPLATE """{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"""`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := run("create", "owlish", "-f", modelfile); !strings.Contains(out, "success") {
		t.Fatalf("ollama create:\n%s", out)
	}
	if out := run("show", "owlish", "--system"); !strings.Contains(out, "You are an owl.") {
		t.Fatalf("ollama show --system of the created model:\n%s", out)
	}
	if out := run("show", "owlish", "--template"); !strings.Contains(out, "{{ range .Messages }}<|im_start|>") {
		t.Fatalf("ollama show --template of the created model:\n%s", out)
	}
	if out := run("run", "owlish", "Who are you?"); strings.Contains(out, "rror") {
		t.Fatalf("ollama run of the created model:\n%s", out)
	}
	list = rows(run("list"))
	for _, name := range []string{"tiny-F16", "tiny-copy", "owlish"} {
		if list[name] == nil && list[name+":latest"] == nil {
			t.Fatalf("ollama list lacks %s: %v", name, list)
		}
	}
	run("rm", "tiny-copy", "owlish")
	list = rows(run("list"))
	if list["tiny-copy"] != nil || list["tiny-copy:latest"] != nil || list["owlish"] != nil || list["owlish:latest"] != nil {
		t.Fatalf("ollama list after rm: %v", list)
	}
}
