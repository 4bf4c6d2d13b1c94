package store

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// One resolver for every entry point: store names and hub references of
// pulled models (with their projectors), files lying in the folder (paired
// by name), paths inside the folder, and — for a command line — any file.
func TestResolve(t *testing.T) {
	e := newEnv(t)
	e.vlmRepo()
	if _, err := e.s.Pull(e.ctx, e.c, "hf.co/org/tiny-vlm-GGUF:Q8_0", PullOptions{}); err != nil {
		t.Fatal(err)
	}
	write := func(dir, name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write(e.local, "owl.gguf", llmF16)
	write(e.local, "mmproj-owl.gguf", clipF16)
	write(e.local, "ggml-micro.bin", whisper)
	write(e.local, "notes.gguf", []byte("not a model"))
	elsewhere := write(t.TempDir(), "far.gguf", llmF16)
	junk := write(t.TempDir(), "junk.gguf", []byte("junk"))

	for _, tc := range []struct {
		name      string
		anyFile   bool
		path      string // base name of the file it resolves to
		projector string // base name of the paired projector
		kind      Kind
		err       error
	}{
		{"tiny-Q8_0", false, "", "", KindLLM, nil},
		{"tiny-Q8_0:latest", false, "", "", KindLLM, nil},
		{"hf.co/org/tiny-vlm-GGUF:Q8_0", false, "", "", KindLLM, nil},
		{"owl", false, "owl.gguf", "mmproj-owl.gguf", KindLLM, nil},
		{"owl.gguf", false, "owl.gguf", "mmproj-owl.gguf", KindLLM, nil},
		{"./owl.gguf", false, "owl.gguf", "mmproj-owl.gguf", KindLLM, nil},
		{"ggml-micro", false, "ggml-micro.bin", "", KindWhisper, nil},
		{elsewhere, true, "far.gguf", "", KindLLM, nil},
		{junk, true, "junk.gguf", "", "", nil},
		{elsewhere, false, "", "", "", ErrOutside},
		{"../x.gguf", false, "", "", "", ErrOutside},
		{"notes", false, "", "", "", ErrNotFound},
		{"nope", true, "", "", "", ErrNotFound},
		{"hf.co/org/other-GGUF:Q8_0", false, "", "", "", ErrNotFound},
		{"", false, "", "", "", ErrNoName},
		{"bad\x00name", false, "", "", "", ErrBadName},
	} {
		m, err := e.s.Resolve(tc.name, ResolveOptions{AnyFile: tc.anyFile})
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%q: %+v, %v; want %v", tc.name, m, err, tc.err)
			}
			continue
		}
		if err != nil || m.Kind != tc.kind || (tc.path != "" && filepath.Base(m.Path) != tc.path) ||
			(tc.projector != "" && filepath.Base(m.ProjectorPath) != tc.projector) {
			t.Errorf("%q: %+v, %v", tc.name, m, err)
		}
	}
	// A pulled vision model brings its projector; the entry's digest is
	// the store's, a plain file's is computed once asked for.
	m, err := e.s.Resolve("hf.co/org/tiny-vlm-GGUF:Q8_0", ResolveOptions{})
	if err != nil || m.Projector != "tiny-Q8_0-mmproj" || m.ProjectorPath == "" || m.Digest != "sha256:"+shaOf(llmQ8) {
		t.Fatalf("pulled: %+v, %v", m, err)
	}
	owl, _ := e.s.Resolve("owl", ResolveOptions{})
	if owl.Digest != "" || e.s.Digest(owl) != "sha256:"+shaOf(llmF16) {
		t.Fatalf("plain file digest %q, then %q", owl.Digest, e.s.Digest(owl))
	}
	all, err := e.s.Models()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range all {
		names = append(names, m.Name)
	}
	if want := []string{"ggml-micro", "mmproj-owl", "owl", "tiny-Q8_0", "tiny-Q8_0-mmproj"}; !slices.Equal(names, want) {
		t.Fatalf("models %v, want %v", names, want)
	}
}

// A file named like a model that owl cannot read is listed as unusable,
// with why, and is not among the models.
func TestUnusable(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "cut.gguf"), []byte("GGUF\x03\x00\x00\x00"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.bin"), []byte("just some bytes, not a model"), 0o644)
	os.WriteFile(filepath.Join(dir, "readme.txt"), []byte("not named like a model"), 0o644)
	s := Open(dir)
	ms, _ := s.Models()
	if len(ms) != 0 {
		t.Fatalf("models: %+v", ms)
	}
	u := s.Unusable()
	if len(u) != 2 || u[0].File != "cut.gguf" || u[0].Name != "cut" || u[0].Reason == "" || u[1].File != "notes.bin" || u[1].Reason == "" {
		t.Fatalf("unusable: %+v", u)
	}
	t.Logf("%+v", u)
}

// Many callers resolving names at once (a server's first requests) read
// each file of the folder once, not once each; its digest and its
// estimate too.
func TestResolveReadsOnce(t *testing.T) {
	e := newEnv(t)
	if err := os.MkdirAll(e.local, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.gguf", "b.gguf", "c.gguf"} {
		if err := os.WriteFile(filepath.Join(e.local, name), llmF16, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	reads := map[string]int{}
	detect = func(path string) (Kind, error) {
		mu.Lock()
		reads[filepath.Base(path)]++
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // a large file's parse
		return DetectKind(path)
	}
	digestFile = func(path string) (string, error) {
		mu.Lock()
		reads["digest "+filepath.Base(path)]++
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		return fileDigest(path)
	}
	inspect = func(path string, ctx uint64) (Info, error) {
		mu.Lock()
		reads["info "+filepath.Base(path)]++
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		return Inspect(path, ctx)
	}
	t.Cleanup(func() { detect, digestFile, inspect = DetectKind, fileDigest, Inspect })
	var wg sync.WaitGroup
	digests := make([]string, 32)
	for i := range digests {
		wg.Go(func() {
			m, err := e.s.Resolve("b", ResolveOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			digests[i] = e.s.Digest(m)
			if _, err := e.s.Info(m); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, name := range []string{"a.gguf", "b.gguf", "c.gguf", "digest b.gguf", "info b.gguf"} {
		if reads[name] != 1 {
			t.Errorf("%s read %d times", name, reads[name])
		}
	}
	for _, d := range digests {
		if d == "" || d != digests[0] {
			t.Fatalf("digests %v", digests)
		}
	}
}
