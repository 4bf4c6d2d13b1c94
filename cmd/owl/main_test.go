package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

var (
	owlBin string // the owl binary under test
	tiny   string // the generated tiny model
)

// TestMain builds owl once: errors must be checked on the real process,
// where a native abort would show as a crash rather than kill the test.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "owl-cli-test")
	if err != nil {
		panic(err)
	}
	owlBin = filepath.Join(dir, "owl")
	build := exec.Command("go", "build", "-o", owlBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("building owl: " + err.Error())
	}
	tiny = filepath.Join(dir, "tiny.gguf")
	if err := testmodel.WriteLlamaFile(tiny, testmodel.TinyLlama()); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func owl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(owlBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
		if !ee.Exited() {
			t.Fatalf("owl %v died: %v\nstderr: %s", args, err, errb.String())
		}
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

func TestVersionListsCompiledSIMD(t *testing.T) {
	r := owl(t, "", "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "owl ") {
		t.Fatalf("version: %+v", r)
	}
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	if runtime.GOARCH != "amd64" || !strings.Contains(os.Getenv("CGO_CFLAGS"), "-march=native") {
		t.Skipf("not a native amd64 build: %s", r.stdout)
	}
	flags := regexp.MustCompile(`(?m)^flags\s*:(.*)$`).FindSubmatch(cpuinfo)
	if flags == nil {
		t.Skip("no CPU flags in /proc/cpuinfo")
	}
	has := " " + string(flags[1]) + " "
	for cpu, want := range map[string]string{" avx2 ": " AVX2", " avx512f ": " AVX512"} {
		if strings.Contains(has, cpu) && !strings.Contains(r.stdout, want) {
			t.Errorf("CPU has%sbut owl version lacks%s:\n%s", cpu, want, r.stdout)
		}
	}
}

func TestGenerateBadModelFiles(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(tiny)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unknown := testmodel.TinyLlama()
	unknown.Arch = "owlnet"
	unknownPath := filepath.Join(dir, "unknown-arch.gguf")
	if err := testmodel.WriteLlamaFile(unknownPath, unknown); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"missing file", filepath.Join(dir, "absent.gguf"), "no such file"},
		{"truncated GGUF header", write("trunc-head.gguf", data[:200]), "truncated"},
		{"truncated GGUF data", write("trunc-data.gguf", data[:len(data)/2]), "truncated"},
		{"not GGUF", write("notes.gguf", []byte("just some text, not a model")), "not a GGUF file"},
		{"unknown architecture", unknownPath, "owlnet"},
		{"a directory", dir, "directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := owl(t, "", "generate", "-m", tc.path, "-p", "hi", "-n", "4")
			if r.code == 0 {
				t.Fatalf("exit code 0; stdout %q", r.stdout)
			}
			lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
			if len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want one:\n%s", len(lines), r.stderr)
			}
			if !strings.Contains(lines[0], tc.path) || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr %q does not name %s and %q", lines[0], tc.path, tc.want)
			}
		})
	}
}

func TestGenerateGreedyDeterministic(t *testing.T) {
	args := []string{"generate", "-m", tiny, "-p", "The owl sat", "-n", "24", "--temperature", "0"}
	a, b := owl(t, "", args...), owl(t, "", args...)
	if a.code != 0 || b.code != 0 {
		t.Fatalf("exit codes %d %d: %s %s", a.code, b.code, a.stderr, b.stderr)
	}
	if a.stdout != b.stdout || len(a.stdout) < 5 {
		t.Fatalf("two greedy runs differ or are empty:\n%q\n%q", a.stdout, b.stdout)
	}
	// The prompt may also come from standard input.
	c := owl(t, "The owl sat", append(args[:3], args[5:]...)...)
	if c.stdout != a.stdout {
		t.Fatalf("prompt from stdin gave %q, from -p %q", c.stdout, a.stdout)
	}
}

func TestGenerateJSON(t *testing.T) {
	r := owl(t, "", "generate", "-m", tiny, "-p", "Hello", "-n", "7", "--temp", "0", "--json")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	for _, want := range []string{`"completion_tokens":7`, `"finish_reason":"length"`, `"prompt_tokens":`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("JSON %s lacks %s", r.stdout, want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"generate", "-p", "hi"},
		{"generate", "-m", tiny, "-p", "hi", "--top-p", "2"},
		{"generate", "-m", tiny, "-p", "hi", "-n", "-3"},
		{"generate", "-m", tiny, "-p", "hi", "--kv-type", "q3"},
		{"generate", "-m", tiny, "--no-such-flag"},
		{"models", "info"},
	} {
		r := owl(t, "", args...)
		if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("owl %v: exit %d, stderr %q; want exit 2 and one line", args, r.code, r.stderr)
		}
	}
}

func TestChatKeepsHistory(t *testing.T) {
	r := owl(t, "Hello there\n/help\nHow are you?\n/bye\nnever read\n", "chat", "-m", tiny, "-n", "6", "--temp", "0", "-v")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	// Each turn prints timings; the second reuses the first turn from the cache.
	cached := regexp.MustCompile(`prompt: (\d+) tokens \((\d+) cached\)`).FindAllStringSubmatch(r.stderr, -1)
	if len(cached) != 2 {
		t.Fatalf("want two turns, got timings %v\n%s", cached, r.stderr)
	}
	if cached[0][2] != "0" || cached[1][2] == "0" {
		t.Fatalf("second turn did not reuse the first from the cache: %v", cached)
	}
	if !strings.Contains(r.stderr, "/system TEXT") {
		t.Fatalf("/help did not print the commands")
	}
}

func TestModelsInfo(t *testing.T) {
	r := owl(t, "", "models", "info", tiny)
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	for _, want := range []string{"architecture", "llama", "context length", "4096", "f16", "embedding_length", "64", "gpt2, 512 tokens"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("info lacks %q:\n%s", want, r.stdout)
		}
	}
	bad := owl(t, "", "models", "info", "/nonexistent.gguf")
	if bad.code == 0 || !strings.Contains(bad.stderr, "/nonexistent.gguf") {
		t.Fatalf("missing file: %+v", bad)
	}
}

func TestBenchLLM(t *testing.T) {
	r := owl(t, "", "bench", "llm", "-m", tiny, "-p", "32", "-n", "8", "-r", "2", "-t", "1")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	for _, want := range []string{"pp32", "tg8", "tokens/s", "peak RSS"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("bench output lacks %q:\n%s", want, r.stdout)
		}
	}
}
