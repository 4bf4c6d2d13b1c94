package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/owlengine/owl/internal/hubtest"
	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/hub"
	"github.com/owlengine/owl/models/testmodel"
)

// Model files of each kind, generated once.
var (
	fixturesOnce                                   sync.Once
	llmQ8, llmF16, clipF16, clipQ8, whisper, vadV5 []byte
)

func fixtures(t *testing.T) {
	t.Helper()
	fixturesOnce.Do(func() {
		llm := func(seed uint64) []byte {
			c := testmodel.TinyLlama()
			c.Seed = seed
			var b bytes.Buffer
			if err := testmodel.WriteLlama(&b, c); err != nil {
				panic(err)
			}
			return b.Bytes()
		}
		llmQ8, llmF16 = llm(1), llm(2)
		clipF16, clipQ8 = projector(16), projector(8)
		var w, v bytes.Buffer
		if err := testmodel.WriteWhisper(&w, testmodel.WhisperMicro(testmodel.VocabEnglish, 1)); err != nil {
			panic(err)
		}
		if err := testmodel.WriteSilero(&v, testmodel.SileroV5()); err != nil {
			panic(err)
		}
		whisper, vadV5 = w.Bytes(), v.Bytes()
	})
}

// projector writes a small GGUF whose architecture is "clip", as mmproj files are.
func projector(n uint64) []byte {
	var b bytes.Buffer
	kvs := []models.GGUFKV{{Key: "general.architecture", Value: "clip"}, {Key: "clip.has_vision_encoder", Value: true}}
	ts := []models.TensorSpec{{Name: "mm.0.weight", Type: models.TypeF32, Dims: []uint64{n, n},
		Write: func(w io.Writer) error { _, err := w.Write(make([]byte, 4*n*n)); return err }}}
	if err := models.WriteGGUF(&b, kvs, ts); err != nil {
		panic(err)
	}
	return b.Bytes()
}

func shaOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type env struct {
	srv   *hubtest.Server
	c     *hub.Client
	s     *Store
	ctx   context.Context
	local string
}

func newEnv(t *testing.T) *env {
	fixtures(t)
	srv := hubtest.New(t)
	dir := filepath.Join(t.TempDir(), "models")
	return &env{srv: srv, c: &hub.Client{Endpoint: srv.URL(), StallTimeout: 10 * time.Second}, s: Open(dir), ctx: context.Background(), local: dir}
}

func (e *env) cdnRequests() []hubtest.Request {
	var out []hubtest.Request
	for _, r := range e.srv.Requests() {
		if r.Server == "cdn" {
			out = append(out, r)
		}
	}
	return out
}

func (e *env) vlmRepo() {
	e.srv.AddLFS("org/tiny-vlm-GGUF", "tiny-Q8_0.gguf", llmQ8)
	e.srv.AddLFS("org/tiny-vlm-GGUF", "tiny-F16.gguf", llmF16)
	e.srv.AddLFS("org/tiny-vlm-GGUF", "mmproj-tiny-Q8_0.gguf", clipQ8)
	e.srv.AddLFS("org/tiny-vlm-GGUF", "mmproj-tiny-f16.gguf", clipF16)
	e.srv.AddGit("org/tiny-vlm-GGUF", "README.md", []byte("# tiny\n"))
}

func fileBytes(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"whisper:base.en", "silero-vad", "SmolVLM-500M-Instruct-Q8_0", "a", "llama3.2:1b", "x+y_z"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "..", "../x", "a/../b", "/etc/passwd", "a/b", `a\b`, "x..y", ".hidden", "-flag", ":x",
		"sp ace", "nul\x00", "new\nline", strings.Repeat("a", MaxNameLen+1), "é"} {
		if err := ValidName(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("ValidName(%q) = %v, want ErrBadName", bad, err)
		}
	}
	// Every catalog name is a valid store name, and so is its projector's.
	for _, c := range Catalog() {
		if ValidName(c.Name) != nil || ValidName(ProjectorName(c.Name)) != nil {
			t.Errorf("catalog name %q is not a valid store name", c.Name)
		}
	}
	s := Open(t.TempDir())
	for _, bad := range []string{"../escape", "/abs", "a/b"} {
		if _, err := s.Get(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("Get(%q): %v", bad, err)
		}
		if _, err := s.Remove(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("Remove(%q): %v", bad, err)
		}
		if _, err := s.Pull(context.Background(), nil, "whisper:base.en", PullOptions{Name: bad, Offline: true}); !errors.Is(err, ErrBadName) {
			t.Errorf("Pull --name %q: %v", bad, err)
		}
	}
}

func TestNameFromFile(t *testing.T) {
	for in, want := range map[string]string{
		"ggml-base.en.bin":                    "ggml-base.en",
		"sub/SmolVLM-500M-Instruct-Q8_0.gguf": "SmolVLM-500M-Instruct-Q8_0",
		"model weights (v2).GGUF":             "model-weights--v2-",
		"..hidden..gguf":                      "hidden.",
		".gguf":                               "model",
	} {
		got := NameFromFile(in)
		if got != want || ValidName(got) != nil {
			t.Errorf("NameFromFile(%q) = %q (valid: %v), want %q", in, got, ValidName(got), want)
		}
	}
}

func TestDetectKind(t *testing.T) {
	fixtures(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		data []byte
		want Kind
	}{
		{"text model", llmQ8, KindLLM},
		{"projector", clipF16, KindMMProj},
		{"whisper", whisper, KindWhisper},
		{"silero", vadV5, KindVAD},
	} {
		if k, err := DetectKind(write(tc.name, tc.data)); err != nil || k != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, k, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"html page", []byte("<!doctype html><title>Sign in</title>"), ErrUnknownKind},
		{"truncated GGUF", llmQ8[:len(llmQ8)/2], models.ErrCorrupt},
		{"truncated whisper", whisper[:len(whisper)/2], models.ErrCorrupt},
		{"empty", nil, ErrUnknownKind},
	} {
		p := write(tc.name, tc.data)
		if k, err := DetectKind(p); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %q, %v; want %v naming the file", tc.name, k, err, tc.want)
		}
	}
}

func TestPullCatalogName(t *testing.T) {
	e := newEnv(t)
	e.srv.AddLFS("ggerganov/whisper.cpp", "ggml-base.en.bin", whisper)
	got, err := e.s.Pull(e.ctx, e.c, "whisper:base.en", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Action != Downloaded {
		t.Fatalf("%+v", got)
	}
	m := got[0]
	if m.Name != "whisper:base.en" || m.Kind != KindWhisper || !m.Verified || m.SHA256 != shaOf(whisper) || m.Size != int64(len(whisper)) ||
		m.Source.Repo != "ggerganov/whisper.cpp" || m.Source.File != "ggml-base.en.bin" || m.Source.Commit != hubtest.Commit ||
		m.Digest != "sha256:"+shaOf(whisper) || m.Modified.IsZero() {
		t.Fatalf("entry %+v", m)
	}
	if !bytes.Equal(fileBytes(t, m.Path), whisper) {
		t.Fatal("installed file differs from the hub's")
	}
	if list, err := e.s.List(); err != nil || len(list) != 1 || list[0].Name != "whisper:base.en" {
		t.Fatalf("List: %+v, %v", list, err)
	}
	// Nothing left behind but the blob and the manifest.
	if des, _ := os.ReadDir(filepath.Join(e.local, "partial")); len(des) != 0 {
		t.Fatalf("partial files left: %v", des)
	}

	// Pulling again asks the hub but downloads nothing.
	before := len(e.cdnRequests())
	again, err := e.s.Pull(e.ctx, e.c, "whisper:base.en", PullOptions{})
	if err != nil || again[0].Action != UpToDate || len(e.cdnRequests()) != before {
		t.Fatalf("second pull: %+v, %v; CDN requests %d → %d", again, err, before, len(e.cdnRequests()))
	}
}

func TestPullQuantPairsProjector(t *testing.T) {
	e := newEnv(t)
	e.vlmRepo()
	got, err := e.s.Pull(e.ctx, e.c, "hf.co/org/tiny-vlm-GGUF:Q8_0", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%+v", got)
	}
	model, proj := got[0], got[1]
	if model.Name != "tiny-Q8_0" || model.Kind != KindLLM || model.Source.File != "tiny-Q8_0.gguf" || model.Projector != "tiny-Q8_0-mmproj" {
		t.Fatalf("model %+v", model)
	}
	// Of the two projectors, the f16 one is preferred.
	if proj.Name != "tiny-Q8_0-mmproj" || proj.Kind != KindMMProj || proj.Source.File != "mmproj-tiny-f16.gguf" || proj.SHA256 != shaOf(clipF16) {
		t.Fatalf("projector %+v", proj)
	}
	if model.ProjectorPath != proj.Path || !bytes.Equal(fileBytes(t, model.ProjectorPath), clipF16) {
		t.Fatalf("pairing: model's projector path %q, projector at %q", model.ProjectorPath, proj.Path)
	}
	// --no-projector and --name.
	got, err = e.s.Pull(e.ctx, e.c, "hf.co/org/tiny-vlm-GGUF:F16", PullOptions{Name: "plain", NoProjector: true})
	if err != nil || len(got) != 1 || got[0].Name != "plain" || got[0].Projector != "" || got[0].SHA256 != shaOf(llmF16) {
		t.Fatalf("%+v, %v", got, err)
	}
}

func TestPullChoosesFile(t *testing.T) {
	e := newEnv(t)
	e.vlmRepo()
	e.srv.AddLFS("org/one-GGUF", "only-Q5_K_M.gguf", llmQ8)
	e.srv.AddLFS("org/default-GGUF", "m-Q4_K_M.gguf", llmQ8)
	e.srv.AddLFS("org/default-GGUF", "m-Q4_K.gguf", llmF16)
	e.srv.AddLFS("org/split-GGUF", "big-Q4_K_M-00001-of-00003.gguf", llmQ8)
	e.srv.AddLFS("org/bins", "ggml-x.bin", whisper)

	for _, tc := range []struct{ ref, wantFile string }{
		{"hf.co/org/one-GGUF", "only-Q5_K_M.gguf"},
		{"hf.co/org/default-GGUF", "m-Q4_K_M.gguf"},
		{"hf.co/org/default-GGUF:q4_k", "m-Q4_K.gguf"}, // a whole token, any case: not Q4_K_M
		{"hf.co/org/bins:ggml-x.bin", "ggml-x.bin"},
	} {
		got, err := e.s.Pull(e.ctx, e.c, tc.ref, PullOptions{Name: NameFromFile(tc.wantFile) + "-t"})
		if err != nil || got[0].Source.File != tc.wantFile {
			t.Errorf("%s: %+v, %v; want %s", tc.ref, got, err, tc.wantFile)
		}
	}
	for _, tc := range []struct {
		ref   string
		words []string
	}{
		{"hf.co/org/tiny-vlm-GGUF", []string{"2 model files", "no Q4_K_M", "tiny-F16.gguf, tiny-Q8_0.gguf"}},
		{"hf.co/org/tiny-vlm-GGUF:Q5_K", []string{`"Q5_K"`, "tiny-F16.gguf, tiny-Q8_0.gguf"}},
		{"hf.co/org/split-GGUF", []string{"split into 3 files"}},
		{"hf.co/org/bins", []string{"no GGUF model files", "ggml-x.bin"}},
	} {
		_, err := e.s.Pull(e.ctx, e.c, tc.ref, PullOptions{})
		if !errors.Is(err, ErrNoChoice) {
			t.Errorf("%s: %v, want ErrNoChoice", tc.ref, err)
			continue
		}
		for _, w := range tc.words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", tc.ref, err, w)
			}
		}
	}
	for _, bad := range []string{"whisper:nonesuch", "ggml-base.en.bin", "org/repo"} {
		if _, err := e.s.Pull(e.ctx, e.c, bad, PullOptions{}); err == nil || !strings.Contains(err.Error(), "catalog") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestPullInterruptedResumes(t *testing.T) {
	for _, ignoreRange := range []bool{false, true} {
		name := map[bool]string{false: "resumed with Range", true: "server ignores Range"}[ignoreRange]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.srv.AddLFS("ggerganov/whisper.cpp", "ggml-base.en.bin", whisper)
			const cut = 1 << 20
			e.srv.CutAfter("ggerganov/whisper.cpp", "ggml-base.en.bin", cut)
			_, err := e.s.Pull(e.ctx, e.c, "whisper:base.en", PullOptions{})
			if !errors.Is(err, hub.ErrInterrupted) || !strings.Contains(err.Error(), "pulling again resumes") {
				t.Fatalf("first pull: %v, want ErrInterrupted", err)
			}
			partial := filepath.Join(e.local, "partial", "sha256-"+shaOf(whisper)+".partial")
			if st, err := os.Stat(partial); err != nil || st.Size() != cut {
				t.Fatalf("partial file: %v %v, want %d bytes", st, err, cut)
			}
			if _, err := e.s.Get("whisper:base.en"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("an interrupted pull installed the model: %v", err)
			}
			if ignoreRange {
				e.srv.IgnoreRange("ggerganov/whisper.cpp", "ggml-base.en.bin")
			}
			var sawResumed int64
			got, err := e.s.Pull(e.ctx, e.c, "whisper:base.en", PullOptions{Progress: func(p PullProgress) { sawResumed = max(sawResumed, p.Resumed) }})
			if err != nil {
				t.Fatal(err)
			}
			want := Resumed
			if ignoreRange {
				want = Downloaded
			}
			if got[0].Action != want || !got[0].Verified || !bytes.Equal(fileBytes(t, got[0].Path), whisper) {
				t.Fatalf("second pull: action %q, verified %v", got[0].Action, got[0].Verified)
			}
			reqs := e.cdnRequests()
			if len(reqs) != 2 || reqs[1].Range != "bytes=1048576-" {
				t.Fatalf("CDN requests %+v; want the second to ask for bytes=1048576-", reqs)
			}
			if !ignoreRange && sawResumed != cut {
				t.Fatalf("progress reported %d resumed bytes, want %d", sawResumed, cut)
			}
		})
	}
}

func TestPullCorruptNotInstalled(t *testing.T) {
	e := newEnv(t)
	e.srv.AddLFS("ggerganov/whisper.cpp", "ggml-base.en.bin", whisper)
	e.srv.Corrupt("ggerganov/whisper.cpp", "ggml-base.en.bin")
	_, err := e.s.Pull(e.ctx, e.c, "whisper:base.en", PullOptions{})
	if !errors.Is(err, hub.ErrChecksum) || !strings.Contains(err.Error(), shaOf(whisper)) {
		t.Fatalf("%v, want ErrChecksum naming the expected sha256", err)
	}
	if _, err := e.s.Get("whisper:base.en"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("corrupt download installed: %v", err)
	}
	for _, sub := range []string{"blobs", "partial"} {
		if des, _ := os.ReadDir(filepath.Join(e.local, sub)); len(des) != 0 {
			t.Fatalf("%s holds %v after a corrupt download", sub, des)
		}
	}
}

func TestPullRefusesNonModels(t *testing.T) {
	e := newEnv(t)
	page := []byte("<!doctype html><html><body>Please sign in</body></html>")
	e.srv.AddLFS("org/repo", "model.gguf", page)
	e.srv.AddLFS("org/vlm", "m-Q8_0.gguf", llmQ8)
	e.srv.AddLFS("org/vlm", "mmproj-x.gguf", llmF16) // a text model posing as a projector
	_, err := e.s.Pull(e.ctx, e.c, "hf.co/org/repo:model.gguf", PullOptions{})
	if !errors.Is(err, ErrUnknownKind) || !strings.Contains(err.Error(), "hf.co/org/repo:model.gguf") || strings.Contains(err.Error(), "partial") {
		t.Fatalf("%v, want ErrUnknownKind naming the hub file", err)
	}
	_, err = e.s.Pull(e.ctx, e.c, "hf.co/org/vlm:Q8_0", PullOptions{})
	if !errors.Is(err, ErrWrongKind) || !strings.Contains(err.Error(), "mmproj-x.gguf") {
		t.Fatalf("%v, want ErrWrongKind for the projector", err)
	}
	if list, _ := e.s.List(); len(list) != 0 {
		t.Fatalf("installed %+v", list)
	}
}

func TestPullHubErrors(t *testing.T) {
	e := newEnv(t)
	e.srv.AddLFS("ggerganov/whisper.cpp", "ggml-base.bin", whisper)
	e.c.Retries, e.c.RetryDelay = 1, time.Millisecond
	_, err := e.s.Pull(e.ctx, e.c, "whisper:base.en", PullOptions{})
	if !errors.Is(err, hub.ErrNotFound) || !strings.Contains(err.Error(), "hf.co/ggerganov/whisper.cpp:ggml-base.en.bin") || !strings.Contains(err.Error(), "404") {
		t.Fatalf("missing file: %v", err)
	}
	_, err = e.s.Pull(e.ctx, e.c, "hf.co/nobody/nothing:Q4_K_M", PullOptions{})
	if !errors.Is(err, hub.ErrNotFound) || !strings.Contains(err.Error(), "hf.co/nobody/nothing") {
		t.Fatalf("missing repository: %v", err)
	}
	e.srv.Fail("ggerganov/whisper.cpp", "ggml-base.bin", 500, 5)
	_, err = e.s.Pull(e.ctx, e.c, "whisper:base", PullOptions{})
	if !errors.Is(err, hub.ErrServer) || !strings.Contains(err.Error(), "500 Internal Server Error") || !strings.Contains(err.Error(), "2 attempts") {
		t.Fatalf("5xx: %v", err)
	}
	if list, _ := e.s.List(); len(list) != 0 {
		t.Fatalf("installed %+v", list)
	}
}

func TestConcurrentPullsShareOneDownload(t *testing.T) {
	e := newEnv(t)
	e.srv.AddLFS("ggerganov/whisper.cpp", "ggml-base.en.bin", whisper)
	// Slow enough that the two pulls overlap.
	e.srv.Throttle("ggerganov/whisper.cpp", "ggml-base.en.bin", len(whisper)/20, 10*time.Millisecond)
	var wg sync.WaitGroup
	results := make([][]Pulled, 2)
	errs := make([]error, 2)
	waited := make([]bool, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Separate Store values, as two processes would have.
			opts := PullOptions{Progress: func(p PullProgress) { waited[i] = waited[i] || p.Waiting }}
			results[i], errs[i] = Open(e.local).Pull(e.ctx, e.c, "whisper:base.en", opts)
		}()
	}
	wg.Wait()
	actions := map[Action]int{}
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("pull %d: %v", i, errs[i])
		}
		actions[results[i][0].Action]++
		if waited[i] != (results[i][0].Action == UpToDate) {
			t.Errorf("pull %d: %s, told it was waiting: %v", i, results[i][0].Action, waited[i])
		}
	}
	if actions[Downloaded] != 1 || actions[UpToDate] != 1 {
		t.Fatalf("actions %v; want one download and one pull finding it done", actions)
	}
	if served := e.srv.Served("ggerganov/whisper.cpp", "ggml-base.en.bin"); served != int64(len(whisper)) {
		t.Fatalf("the CDN sent %d bytes for a %d-byte file", served, len(whisper))
	}
	en, err := e.s.Get("whisper:base.en")
	if err != nil || !bytes.Equal(fileBytes(t, en.Path), whisper) {
		t.Fatalf("installed file wrong: %v", err)
	}
}

func TestPullChecksFreeSpace(t *testing.T) {
	e := newEnv(t)
	e.srv.AddLFS("ggerganov/whisper.cpp", "ggml-base.en.bin", whisper)
	e.s.freeSpace = func(string) (uint64, error) { return 4096, nil }
	_, err := e.s.Pull(e.ctx, e.c, "whisper:base.en", PullOptions{})
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "4096 free") {
		t.Fatalf("%v, want ErrNoSpace with the numbers", err)
	}
	if n := len(e.cdnRequests()); n != 0 {
		t.Fatalf("%d downloads started without room for them", n)
	}
	// The real free space of the test's disk is enough for a few megabytes.
	if free, err := freeSpace(e.local); err != nil || free < 1<<20 {
		t.Fatalf("freeSpace(%s) = %d, %v", e.local, free, err)
	}
}

func TestPullOffline(t *testing.T) {
	e := newEnv(t)
	e.vlmRepo()
	off := PullOptions{Offline: true}
	for _, what := range []string{"smolvlm:500m", "hf.co/org/tiny-vlm-GGUF:Q8_0"} {
		if _, err := e.s.Pull(e.ctx, nil, what, off); !errors.Is(err, ErrOffline) {
			t.Fatalf("%s offline, not installed: %v", what, err)
		}
	}
	if n := len(e.srv.Requests()); n != 0 {
		t.Fatalf("offline pulls made %d requests", n)
	}
	if _, err := e.s.Pull(e.ctx, e.c, "hf.co/org/tiny-vlm-GGUF:Q8_0", PullOptions{}); err != nil {
		t.Fatal(err)
	}
	n := len(e.srv.Requests())
	for _, what := range []string{"hf.co/org/tiny-vlm-GGUF:Q8_0", "hf.co/org/tiny-vlm-GGUF:tiny-Q8_0.gguf", "hf.co/org/tiny-vlm-GGUF"} {
		got, err := e.s.Pull(e.ctx, nil, what, off)
		if err != nil || len(got) != 2 || got[0].Name != "tiny-Q8_0" || got[1].Name != "tiny-Q8_0-mmproj" || got[0].Action != UpToDate {
			t.Fatalf("%s offline, installed: %+v, %v", what, got, err)
		}
	}
	if len(e.srv.Requests()) != n {
		t.Fatal("offline pulls made requests")
	}
}

func TestPullGitFile(t *testing.T) {
	e := newEnv(t)
	e.srv.AddGit("ggml-org/whisper-vad", "ggml-silero-v5.1.2.bin", vadV5)
	got, err := e.s.Pull(e.ctx, e.c, "silero-vad", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v := got[0]
	// The hub gives a git blob id, not a sha256: nothing could be verified.
	if v.Kind != KindVAD || v.Verified || v.SHA256 != shaOf(vadV5) || len(v.Source.ETag) != 40 {
		t.Fatalf("%+v", v)
	}
	again, err := e.s.Pull(e.ctx, e.c, "silero-vad", PullOptions{})
	if err != nil || again[0].Action != UpToDate {
		t.Fatalf("%+v %v", again, err)
	}
	other, err := e.s.Pull(e.ctx, e.c, "silero-vad", PullOptions{Name: "vad2"})
	if err != nil || other[0].Action != Linked || other[0].Path != v.Path {
		t.Fatalf("same file, another name: %+v %v", other, err)
	}
	if served := e.srv.Served("ggml-org/whisper-vad", "ggml-silero-v5.1.2.bin"); served != int64(len(vadV5)) {
		t.Fatalf("served %d bytes, want one download of %d", served, len(vadV5))
	}
}

func TestPullNameTaken(t *testing.T) {
	e := newEnv(t)
	e.srv.AddLFS("a/x", "m.gguf", llmQ8)
	e.srv.AddLFS("b/x", "m.gguf", llmF16)
	if _, err := e.s.Pull(e.ctx, e.c, "hf.co/a/x:m.gguf", PullOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := e.s.Pull(e.ctx, e.c, "hf.co/b/x:m.gguf", PullOptions{})
	if !errors.Is(err, ErrNameTaken) || !strings.Contains(err.Error(), "hf.co/a/x:m.gguf") || !strings.Contains(err.Error(), "--name") {
		t.Fatalf("%v", err)
	}
	if _, err := e.s.Pull(e.ctx, e.c, "hf.co/b/x:m.gguf", PullOptions{Name: "m-b"}); err != nil {
		t.Fatal(err)
	}
}

func TestRemove(t *testing.T) {
	e := newEnv(t)
	e.vlmRepo()
	if _, err := e.s.Pull(e.ctx, e.c, "hf.co/org/tiny-vlm-GGUF:Q8_0", PullOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Pull(e.ctx, e.c, "hf.co/org/tiny-vlm-GGUF:F16", PullOptions{}); err != nil {
		t.Fatal(err)
	}
	blobs := func() int {
		des, _ := os.ReadDir(filepath.Join(e.local, "blobs"))
		return len(des)
	}
	if n := blobs(); n != 3 { // two models, one projector file shared by both entries
		t.Fatalf("%d blobs, want 3", n)
	}
	removed, err := e.s.Remove("tiny-Q8_0")
	if err != nil || len(removed) != 2 || removed[1] != "tiny-Q8_0-mmproj" {
		t.Fatalf("removed %v, %v", removed, err)
	}
	if n := blobs(); n != 2 { // the shared projector file stays for tiny-F16-mmproj
		t.Fatalf("%d blobs after removing one model, want 2", n)
	}
	if _, err := e.s.Remove("tiny-F16"); err != nil {
		t.Fatal(err)
	}
	if list, err := e.s.List(); err != nil || len(list) != 0 || blobs() != 0 {
		t.Fatalf("left %+v, %d blobs, %v", list, blobs(), err)
	}
	if _, err := e.s.Remove("tiny-F16"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing twice: %v", err)
	}
}

func TestDamagedEntries(t *testing.T) {
	e := newEnv(t)
	e.srv.AddLFS("ggerganov/whisper.cpp", "ggml-base.en.bin", whisper)
	if _, err := e.s.Pull(e.ctx, e.c, "whisper:base.en", PullOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.local, "manifests", "broken.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := e.s.List()
	if !errors.Is(err, ErrDamaged) || len(list) != 1 || !strings.Contains(err.Error(), "broken.json") {
		t.Fatalf("List: %+v, %v", list, err)
	}
	if _, err := e.s.Get("broken"); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Get: %v", err)
	}
	// A missing file is reported, not served.
	en, _ := e.s.Get("whisper:base.en")
	os.Remove(en.Path)
	if _, err := e.s.Get("whisper:base.en"); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "pull it again") {
		t.Fatalf("Get with its file gone: %v", err)
	}
	// Pulling mends it.
	got, err := e.s.Pull(e.ctx, e.c, "whisper:base.en", PullOptions{})
	if err != nil || got[0].Action != Downloaded {
		t.Fatalf("%+v %v", got, err)
	}
}

// A mirror that serves files but not the listing API still serves a named
// file; choosing by quantization needs the listing.
func TestPullFromMirrorWithoutListing(t *testing.T) {
	e := newEnv(t)
	e.vlmRepo()
	e.srv.DisableListing()
	got, err := e.s.Pull(e.ctx, e.c, "hf.co/org/tiny-vlm-GGUF:tiny-Q8_0.gguf", PullOptions{})
	if err != nil || len(got) != 1 || got[0].Projector != "" || !got[0].Verified {
		t.Fatalf("named file: %+v, %v", got, err)
	}
	if _, err := e.s.Pull(e.ctx, e.c, "hf.co/org/tiny-vlm-GGUF:F16", PullOptions{}); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("by quantization without a listing: %v", err)
	}
}

func TestInspect(t *testing.T) {
	fixtures(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		data []byte
		kind Kind
	}{{llmQ8, KindLLM}, {clipF16, KindMMProj}, {whisper, KindWhisper}, {vadV5, KindVAD}} {
		p := filepath.Join(dir, string(tc.kind))
		if err := os.WriteFile(p, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		in, err := Inspect(p, 0)
		if err != nil || in.Kind != tc.kind || in.Size != int64(len(tc.data)) || in.Memory.Weights == 0 {
			t.Fatalf("%s: %+v, %v", tc.kind, in, err)
		}
		if (in.GGUF != nil) != (tc.kind == KindLLM || tc.kind == KindMMProj) || (in.Whisper != nil) != (tc.kind == KindWhisper) || (in.Silero != nil) != (tc.kind == KindVAD) {
			t.Fatalf("%s: facts of the wrong format: %+v", tc.kind, in)
		}
		if in.GGUF != nil && (in.GGUF.Architecture == "" || tc.kind == KindLLM && in.GGUF.ContextLength == 0) {
			t.Fatalf("%s: GGUF facts %+v", tc.kind, *in.GGUF)
		}
	}
}
