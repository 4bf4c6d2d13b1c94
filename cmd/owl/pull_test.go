package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/owlengine/owl/internal/hubtest"
	"github.com/owlengine/owl/models/testmodel"
)

// storeEnv points owl at an empty model store and a fake hub.
func storeEnv(t *testing.T) (*hubtest.Server, string) {
	t.Helper()
	srv := hubtest.New(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "models")
	t.Setenv("OWL_MODELS", store)
	t.Setenv("OWL_HF_ENDPOINT", srv.URL())
	t.Setenv("OWL_CACHE_DIR", filepath.Join(dir, "cache"))
	t.Setenv("OWL_OFFLINE", "")
	t.Setenv("HF_HUB_OFFLINE", "")
	t.Setenv("HF_TOKEN", "")
	return srv, store
}

func oneLine(t *testing.T, r result) string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("stderr has %d lines, want one:\n%s", len(lines), r.stderr)
	}
	return lines[0]
}

func TestPullThenUseByName(t *testing.T) {
	srv, store := storeEnv(t)
	tinyBytes, err := os.ReadFile(tiny)
	if err != nil {
		t.Fatal(err)
	}
	srv.AddLFS("owl-test/tiny-GGUF", "tiny-F16.gguf", tinyBytes)

	r := owl(t, "", "pull", "hf.co/owl-test/tiny-GGUF:F16")
	if r.code != 0 || !strings.Contains(r.stdout, "tiny-F16") || !strings.Contains(r.stdout, "downloaded") || !strings.Contains(r.stdout, "sha256 verified") {
		t.Fatalf("pull: %+v", r)
	}
	ls := owl(t, "", "models", "ls")
	if ls.code != 0 || !strings.Contains(ls.stdout, "tiny-F16") || !strings.Contains(ls.stdout, "llm") {
		t.Fatalf("ls: %+v", ls)
	}
	var listed []struct{ Name, Kind, Digest, Path string }
	if j := owl(t, "", "models", "ls", "--json"); json.Unmarshal([]byte(j.stdout), &listed) != nil || len(listed) != 1 ||
		!strings.HasPrefix(listed[0].Digest, "sha256:") || !strings.HasPrefix(listed[0].Path, store) {
		t.Fatalf("ls --json: %+v", j)
	}

	// The store name works wherever -m does, and gives what the file gives.
	args := []string{"-p", "The owl sat", "-n", "8", "--temp", "0"}
	byName := owl(t, "", append([]string{"generate", "-m", "tiny-F16"}, args...)...)
	byPath := owl(t, "", append([]string{"generate", "-m", tiny}, args...)...)
	if byName.code != 0 || byName.stdout != byPath.stdout {
		t.Fatalf("by name %+v, by path %+v", byName, byPath)
	}
	// So does the reference it was pulled by.
	if r := owl(t, "", append([]string{"generate", "-m", "hf.co/owl-test/tiny-GGUF:F16"}, args...)...); r.stdout != byPath.stdout {
		t.Fatalf("by reference: %+v", r)
	}

	info := owl(t, "", "models", "info", "tiny-F16", "-c", "1024")
	for _, want := range []string{"store name", "kind", "llm", "memory", "1024 tokens of context", "KV cache 256.0 KiB", "hf.co/owl-test/tiny-GGUF:tiny-F16.gguf", "architecture", "gpt2, 512 tokens"} {
		if !strings.Contains(info.stdout, want) {
			t.Errorf("models info lacks %q:\n%s", want, info.stdout)
		}
	}

	// Pulling again downloads nothing.
	before := srv.Served("owl-test/tiny-GGUF", "tiny-F16.gguf")
	if r := owl(t, "", "pull", "hf.co/owl-test/tiny-GGUF:F16"); r.code != 0 || !strings.Contains(r.stdout, "up to date") ||
		srv.Served("owl-test/tiny-GGUF", "tiny-F16.gguf") != before {
		t.Fatalf("second pull: %+v", r)
	}

	rm := owl(t, "", "models", "rm", "tiny-F16")
	if rm.code != 0 || !strings.Contains(rm.stdout, "removed tiny-F16") {
		t.Fatalf("rm: %+v", rm)
	}
	if blobs, _ := os.ReadDir(filepath.Join(store, "blobs")); len(blobs) != 0 {
		t.Fatalf("rm left %d files", len(blobs))
	}
	gone := owl(t, "", append([]string{"generate", "-m", "tiny-F16"}, args...)...)
	if line := oneLine(t, gone); gone.code != 1 || !strings.Contains(line, "tiny-F16: no such file, and no model of that name") {
		t.Fatalf("after rm: %+v", gone)
	}
	if r := owl(t, "", "models", "rm", "tiny-F16"); r.code != 1 || !strings.Contains(oneLine(t, r), "no model of that name") {
		t.Fatalf("rm twice: %+v", r)
	}
}

func TestPullWhisperCatalogNameAndTranscribe(t *testing.T) {
	srv, _ := storeEnv(t)
	dir := t.TempDir()
	var w, v bytes.Buffer
	if err := testmodel.WriteWhisper(&w, testmodel.WhisperMicro(testmodel.VocabEnglish, 1)); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteSilero(&v, testmodel.SileroV5()); err != nil {
		t.Fatal(err)
	}
	srv.AddLFS("ggerganov/whisper.cpp", "ggml-base.en.bin", w.Bytes())
	srv.AddGit("ggml-org/whisper-vad", "ggml-silero-v5.1.2.bin", v.Bytes())

	// Not pulled yet: the message says how to get it.
	silent := filepath.Join(dir, "silent.wav")
	wavFile(t, silent, make([]int16, 3*16000))
	r := owl(t, "", "transcribe", "-m", "whisper:base.en", silent)
	if line := oneLine(t, r); r.code != 1 || !strings.Contains(line, "owl pull whisper:base.en") {
		t.Fatalf("before pull: %+v", r)
	}

	for _, name := range []string{"whisper:base.en", "silero-vad"} {
		if r := owl(t, "", "pull", name); r.code != 0 || !strings.Contains(r.stdout, name) {
			t.Fatalf("pull %s: %+v", name, r)
		}
	}
	if r := owl(t, "", "pull", "silero-vad"); !strings.Contains(r.stdout, "not published by the hub") {
		t.Fatalf("a git file's pull does not say its sha256 was not verifiable: %+v", r)
	}
	r = owl(t, "", "transcribe", "-m", "whisper:base.en", "--vad-model", "silero-vad", silent)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "" {
		t.Fatalf("transcribe by store names: %+v", r)
	}
	info := owl(t, "", "models", "info", "whisper:base.en")
	for _, want := range []string{"whisper", "memory", "English", "encoder", "2 layers"} {
		if !strings.Contains(info.stdout, want) {
			t.Errorf("models info lacks %q:\n%s", want, info.stdout)
		}
	}
	cat := owl(t, "", "models", "catalog")
	if cat.code != 0 || !strings.Contains(cat.stdout, "whisper:base.en") {
		t.Fatalf("catalog: %+v", cat)
	}
	for _, line := range strings.Split(cat.stdout, "\n") {
		if strings.HasPrefix(line, "whisper:base.en ") && !strings.Contains(line, "yes") {
			t.Fatalf("catalog does not mark whisper:base.en installed: %q", line)
		}
	}
}

func TestModelsCatalog(t *testing.T) {
	storeEnv(t)
	r := owl(t, "", "models", "catalog")
	for _, want := range []string{
		"whisper:base.en", "hf.co/ggerganov/whisper.cpp:ggml-base.en.bin", "whisper:large-v3-turbo-q5_0", "silero-vad",
		"smolvlm:500m", "mmproj-SmolVLM-500M-Instruct-Q8_0.gguf", "gemma3:4b", "llava:7b",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("catalog lacks %q:\n%s", want, r.stdout)
		}
	}
	if ls := owl(t, "", "models", "ls"); ls.code != 0 || ls.stdout != "" || !strings.Contains(ls.stderr, "owl pull") {
		t.Fatalf("empty store: %+v", ls)
	}
}

func TestPullOfflineAndNetworkErrors(t *testing.T) {
	srv, _ := storeEnv(t)
	r := owl(t, "", "pull", "--offline", "whisper:tiny")
	if line := oneLine(t, r); r.code != 1 || !strings.Contains(line, "offline") {
		t.Fatalf("--offline: %+v", r)
	}
	t.Setenv("OWL_OFFLINE", "1")
	if r := owl(t, "", "pull", "whisper:tiny"); r.code != 1 || !strings.Contains(r.stderr, "offline") {
		t.Fatalf("OWL_OFFLINE=1: %+v", r)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Fatalf("offline pulls made %d requests", n)
	}
	t.Setenv("OWL_OFFLINE", "")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()
	t.Setenv("OWL_HF_ENDPOINT", down)
	r = owl(t, "", "pull", "whisper:tiny")
	if line := oneLine(t, r); r.code != 1 || !strings.Contains(line, "cannot reach the hub") || !strings.Contains(line, "OWL_HF_ENDPOINT") {
		t.Fatalf("network down: %+v", r)
	}

	t.Setenv("OWL_HF_ENDPOINT", srv.URL())
	r = owl(t, "", "pull", "whisper:tiny")
	if line := oneLine(t, r); r.code != 1 || !strings.Contains(line, "404") || !strings.Contains(line, "hf.co/ggerganov/whisper.cpp:ggml-tiny.bin") {
		t.Fatalf("404: %+v", r)
	}
	srv.AddLFS("ggerganov/whisper.cpp", "ggml-tiny.bin", []byte("not really"))
	srv.Fail("ggerganov/whisper.cpp", "ggml-tiny.bin", 503, 100)
	r = owl(t, "", "pull", "whisper:tiny")
	if line := oneLine(t, r); r.code != 1 || !strings.Contains(line, "503") {
		t.Fatalf("503: %+v", r)
	}
}

func TestPullUsageErrors(t *testing.T) {
	storeEnv(t)
	for _, args := range [][]string{
		{"pull"},
		{"pull", "hf.co/org/repo:../../etc/passwd"},
		{"pull", "whisper:base.en", "--name", "../escape"},
		{"models", "rm", "/etc/passwd"},
		{"models", "rm"},
		{"models", "info", "x", "-c", "-1"},
	} {
		r := owl(t, "", args...)
		if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("owl %v: exit %d, stderr %q; want exit 2 and one line", args, r.code, r.stderr)
		}
	}
	if r := owl(t, "", "pull", "no-such-thing"); r.code != 1 || !strings.Contains(r.stderr, "catalog") {
		t.Errorf("unknown name: %+v", r)
	}
}

// Two owl processes pulling the same model at once: one downloads, the
// other waits on the lock and finds it done.
func TestPullConcurrentProcesses(t *testing.T) {
	srv, store := storeEnv(t)
	data, err := os.ReadFile(tiny)
	if err != nil {
		t.Fatal(err)
	}
	srv.AddLFS("owl-test/tiny-GGUF", "tiny-F16.gguf", data)
	srv.Throttle("owl-test/tiny-GGUF", "tiny-F16.gguf", len(data)/10, 30*time.Millisecond)
	var outs [2]bytes.Buffer
	var cmds [2]*exec.Cmd
	for i := range cmds {
		cmds[i] = exec.Command(owlBin, "pull", "hf.co/owl-test/tiny-GGUF:F16", "--json")
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	actions := map[string]int{}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("pull %d: %v\n%s", i, err, outs[i].String())
		}
		var got []struct{ Action string }
		if err := json.Unmarshal(outs[i].Bytes(), &got); err != nil || len(got) != 1 {
			t.Fatalf("pull %d: %v\n%s", i, err, outs[i].String())
		}
		actions[got[0].Action]++
	}
	if actions["downloaded"] != 1 || actions["up to date"] != 1 {
		t.Fatalf("actions %v, want one download and one up to date", actions)
	}
	if served := srv.Served("owl-test/tiny-GGUF", "tiny-F16.gguf"); served != int64(len(data)) {
		t.Fatalf("the CDN sent %d bytes of a %d-byte file", served, len(data))
	}
	blobs, _ := os.ReadDir(filepath.Join(store, "blobs"))
	if len(blobs) != 1 {
		t.Fatalf("%d files in the store", len(blobs))
	}
}
