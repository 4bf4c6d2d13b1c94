package hub_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/owlengine/owl/internal/hubtest"
	"github.com/owlengine/owl/models/hub"
)

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want hub.Ref
	}{
		{"hf.co/ggerganov/whisper.cpp:ggml-base.en.bin", hub.Ref{Repo: "ggerganov/whisper.cpp", Revision: "main", File: "ggml-base.en.bin"}},
		{"huggingface.co/ggml-org/SmolVLM-500M-Instruct-GGUF:Q8_0", hub.Ref{Repo: "ggml-org/SmolVLM-500M-Instruct-GGUF", Revision: "main", Quant: "Q8_0"}},
		{"https://huggingface.co/org/repo", hub.Ref{Repo: "org/repo", Revision: "main"}},
		{"hf.co/org/repo:latest", hub.Ref{Repo: "org/repo", Revision: "main"}},
		{"hf.co/org/repo@v1.0:sub/dir/model.gguf", hub.Ref{Repo: "org/repo", Revision: "v1.0", File: "sub/dir/model.gguf"}},
		{"hf.co/org/repo:model-f16", hub.Ref{Repo: "org/repo", Revision: "main", Quant: "model-f16"}},
	} {
		got, err := hub.ParseRef(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if back, err := hub.ParseRef(got.String()); err != nil || back != got {
			t.Errorf("%q: String %q parses to %+v, %v", tc.in, got.String(), back, err)
		}
	}
	for _, bad := range []string{
		"whisper:base.en", "hf.co/", "hf.co/org", "hf.co/org/repo/extra", "hf.co/../repo", "hf.co/org/..",
		"hf.co/org/re po", "hf.co/org/repo:../../etc/passwd", "hf.co/org/repo:/abs.gguf", "hf.co/org/repo:a//b.gguf",
		"hf.co/org/repo:a\\b.gguf", "hf.co/org/repo@..:x.gguf", "hf.co/org/repo:Q4 K", "hf.co/org/repo:x.gguf?y",
		"hf.co/-org/repo", "hf.co/org/repo--x",
	} {
		if r, err := hub.ParseRef(bad); !errors.Is(err, hub.ErrBadRef) {
			t.Errorf("ParseRef(%q) = %+v, %v; want ErrBadRef", bad, r, err)
		}
	}
}

func content(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func client(srv *hubtest.Server) *hub.Client {
	return &hub.Client{Endpoint: srv.URL(), UserAgent: "owl-test", StallTimeout: 5 * time.Second}
}

func TestStat(t *testing.T) {
	srv := hubtest.New(t)
	model, readme := content(5000, 1), []byte("# a model\n")
	srv.AddLFS("org/repo", "model.gguf", model)
	srv.AddGit("org/repo", "README.md", readme)
	c := client(srv)
	ctx := context.Background()

	fi, err := c.Stat(ctx, "org/repo", "", "model.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if fi.SHA256 != sha(model) || fi.Size != 5000 || fi.Commit != hubtest.Commit || !strings.HasSuffix(fi.URL, "/org/repo/resolve/main/model.gguf") {
		t.Fatalf("LFS file: %+v", fi)
	}
	// A file kept in git has a sha1 ETag: no sha256 may be claimed for it.
	fi, err = c.Stat(ctx, "org/repo", "main", "README.md")
	if err != nil {
		t.Fatal(err)
	}
	if fi.SHA256 != "" || len(fi.ETag) != 40 || fi.Size != int64(len(readme)) {
		t.Fatalf("git file: %+v", fi)
	}
	for _, req := range srv.Requests() {
		if req.Server == "cdn" {
			t.Fatalf("Stat went to the CDN: %+v", req)
		}
	}
}

func TestListFilesPaginated(t *testing.T) {
	srv := hubtest.New(t)
	srv.SetPageSize(2)
	srv.AddLFS("org/repo", "a-Q4_K_M.gguf", content(100, 1))
	srv.AddLFS("org/repo", "sub/b-Q8_0.gguf", content(200, 2))
	srv.AddLFS("org/repo", "mmproj-f16.gguf", content(300, 3))
	srv.AddGit("org/repo", "README.md", []byte("hi"))
	files, err := client(srv).ListFiles(context.Background(), "org/repo", "main")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]hub.RepoFile{}
	for _, f := range files {
		got[f.Path] = f
	}
	if len(files) != 4 || got["sub/b-Q8_0.gguf"].Size != 200 || got["sub/b-Q8_0.gguf"].SHA256 != sha(content(200, 2)) ||
		got["README.md"].SHA256 != "" || got["README.md"].Size != 2 {
		t.Fatalf("files %+v", files)
	}
	pages := 0
	for _, r := range srv.Requests() {
		if strings.Contains(r.Path, "/tree/") {
			pages++
		}
	}
	if pages != 3 { // 5 entries (one a directory), 2 a page
		t.Fatalf("%d pages requested, want 3", pages)
	}
}

func stat(t *testing.T, c *hub.Client, repo, path string) hub.FileInfo {
	t.Helper()
	fi, err := c.Stat(context.Background(), repo, "main", path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func cdnRanges(srv *hubtest.Server) []string {
	var out []string
	for _, r := range srv.Requests() {
		if r.Server == "cdn" {
			out = append(out, r.Range)
		}
	}
	return out
}

func TestDownloadFull(t *testing.T) {
	srv := hubtest.New(t)
	data := content(1<<20+123, 7)
	srv.AddLFS("org/repo", "model.gguf", data)
	c := client(srv)
	partial := filepath.Join(t.TempDir(), "model.partial")
	var last, calls int64
	d, err := c.Download(context.Background(), stat(t, c, "org/repo", "model.gguf"), partial, func(done, total int64) {
		if done < last || total != int64(len(data)) {
			t.Errorf("progress %d/%d after %d", done, total, last)
		}
		last = done
		calls++
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(partial)
	if !bytes.Equal(got, data) || !d.Verified || d.SHA256 != sha(data) || d.Size != int64(len(data)) || d.Resumed != 0 {
		t.Fatalf("download %+v; file matches: %v", d, bytes.Equal(got, data))
	}
	if last != int64(len(data)) || calls < 2 {
		t.Fatalf("progress ended at %d after %d calls", last, calls)
	}
}

func TestDownloadResumesPartialFile(t *testing.T) {
	const cut = 300000
	data := content(1<<20, 9)
	for _, tc := range []struct {
		name        string
		ignoreRange bool
		wantRange   string
	}{
		{"server honours Range", false, "bytes=300000-"},
		{"server ignores Range", true, "bytes=300000-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := hubtest.New(t)
			srv.AddLFS("org/repo", "model.gguf", data)
			srv.CutAfter("org/repo", "model.gguf", cut)
			c := client(srv) // no retries: the first pull fails
			partial := filepath.Join(t.TempDir(), "model.partial")
			fi := stat(t, c, "org/repo", "model.gguf")
			_, err := c.Download(context.Background(), fi, partial, nil)
			if !errors.Is(err, hub.ErrInterrupted) || !strings.Contains(err.Error(), "300000 of 1048576") {
				t.Fatalf("first download: %v, want ErrInterrupted at 300000 of 1048576", err)
			}
			if st, err := os.Stat(partial); err != nil || st.Size() != cut {
				t.Fatalf("partial file after the cut: %v, %v; want %d bytes", st, err, cut)
			}
			if tc.ignoreRange {
				srv.IgnoreRange("org/repo", "model.gguf")
			}
			d, err := c.Download(context.Background(), fi, partial, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(partial)
			if !bytes.Equal(got, data) || !d.Verified {
				t.Fatalf("resumed download %+v; file matches: %v", d, bytes.Equal(got, data))
			}
			ranges := cdnRanges(srv)
			if len(ranges) != 2 || ranges[0] != "" || ranges[1] != tc.wantRange {
				t.Fatalf("CDN saw ranges %q, want none then %q", ranges, tc.wantRange)
			}
			wantServed, wantResumed := int64(cut+len(data)-cut), int64(cut)
			if tc.ignoreRange {
				wantServed, wantResumed = int64(cut+len(data)), 0
			}
			if srv.Served("org/repo", "model.gguf") != wantServed || d.Resumed != wantResumed {
				t.Fatalf("served %d bytes, resumed %d; want %d, %d", srv.Served("org/repo", "model.gguf"), d.Resumed, wantServed, wantResumed)
			}
		})
	}
}

func TestDownloadRetriesResumeWithinOneCall(t *testing.T) {
	srv := hubtest.New(t)
	data := content(500000, 3)
	srv.AddLFS("org/repo", "model.gguf", data)
	srv.CutAfter("org/repo", "model.gguf", 123456)
	c := client(srv)
	c.Retries = 2
	partial := filepath.Join(t.TempDir(), "p")
	d, err := c.Download(context.Background(), stat(t, c, "org/repo", "model.gguf"), partial, nil)
	if err != nil || !d.Verified || d.Resumed != 0 {
		t.Fatalf("%+v, %v", d, err)
	}
	if r := cdnRanges(srv); len(r) != 2 || r[1] != "bytes=123456-" {
		t.Fatalf("ranges %q", r)
	}
}

func TestDownloadGitFileRecordsNoSHA256(t *testing.T) {
	srv := hubtest.New(t)
	data := content(4000, 5)
	srv.AddGit("org/repo", "small.bin", data)
	c := client(srv)
	partial := filepath.Join(t.TempDir(), "p")
	d, err := c.Download(context.Background(), stat(t, c, "org/repo", "small.bin"), partial, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Verified || d.SHA256 != sha(data) || d.Size != 4000 {
		t.Fatalf("%+v", d)
	}
}

func TestDownloadCorruptIsDiscarded(t *testing.T) {
	srv := hubtest.New(t)
	data := content(100000, 4)
	srv.AddLFS("org/repo", "model.gguf", data)
	srv.Corrupt("org/repo", "model.gguf")
	c := client(srv)
	c.Retries = 3
	partial := filepath.Join(t.TempDir(), "p")
	_, err := c.Download(context.Background(), stat(t, c, "org/repo", "model.gguf"), partial, nil)
	if !errors.Is(err, hub.ErrChecksum) || !strings.Contains(err.Error(), sha(data)) {
		t.Fatalf("error %v, want ErrChecksum naming the expected sha256", err)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Fatalf("corrupt partial file kept: %v", err)
	}
	if n := len(cdnRanges(srv)); n != 1 {
		t.Fatalf("a checksum mismatch was retried: %d CDN requests", n)
	}
}

func TestDownloadDiscardsOversizedPartial(t *testing.T) {
	srv := hubtest.New(t)
	data := content(1000, 6)
	srv.AddLFS("org/repo", "m.gguf", data)
	c := client(srv)
	partial := filepath.Join(t.TempDir(), "p")
	if err := os.WriteFile(partial, content(5000, 1), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := c.Download(context.Background(), stat(t, c, "org/repo", "m.gguf"), partial, nil)
	if err != nil || !d.Verified {
		t.Fatalf("%+v %v", d, err)
	}
	if r := cdnRanges(srv); len(r) != 1 || r[0] != "" {
		t.Fatalf("ranges %q; want one request from the start", r)
	}
}

func TestHubErrors(t *testing.T) {
	srv := hubtest.New(t)
	srv.AddLFS("org/repo", "m.gguf", content(1000, 1))
	srv.AddLFS("org/gated", "m.gguf", content(1000, 2))
	srv.RequireToken("org/gated", "secret")
	ctx := context.Background()
	c := client(srv)
	c.Retries, c.RetryDelay = 2, time.Millisecond

	for _, tc := range []struct {
		name, repo, path string
		want             error
		words            []string
	}{
		{"no repository", "org/none", "m.gguf", hub.ErrNotFound, []string{"hf.co/org/none:m.gguf", "404", "RepoNotFound"}},
		{"no file", "org/repo", "nope.gguf", hub.ErrNotFound, []string{"hf.co/org/repo:nope.gguf", "404", "EntryNotFound"}},
		{"gated without a token", "org/gated", "m.gguf", hub.ErrAccess, []string{"401", "HF_TOKEN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Stat(ctx, tc.repo, "main", tc.path)
			if !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
			for _, w := range tc.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}

	t.Run("5xx retried then reported", func(t *testing.T) {
		srv.Fail("org/repo", "m.gguf", http.StatusBadGateway, 2)
		if _, err := c.Stat(ctx, "org/repo", "main", "m.gguf"); err != nil {
			t.Fatalf("two 502s then success, with 2 retries: %v", err)
		}
		srv.Fail("org/repo", "m.gguf", http.StatusServiceUnavailable, 10)
		_, err := c.Stat(ctx, "org/repo", "main", "m.gguf")
		if !errors.Is(err, hub.ErrServer) || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "3 attempts") {
			t.Fatalf("%v, want ErrServer naming 503 and 3 attempts", err)
		}
	})

	t.Run("token goes to the hub only", func(t *testing.T) {
		tc := client(srv)
		tc.Token = "secret"
		fi, err := tc.Stat(ctx, "org/gated", "main", "m.gguf")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tc.Download(ctx, fi, filepath.Join(t.TempDir(), "p"), nil); err != nil {
			t.Fatal(err)
		}
		for _, r := range srv.Requests() {
			if r.Server == "cdn" && r.Authorization != "" {
				t.Fatalf("the CDN received the token: %+v", r)
			}
		}
	})
}

func TestNetworkDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	c := &hub.Client{Endpoint: "http://" + addr, Retries: 3, RetryDelay: time.Hour}
	start := time.Now()
	_, err = c.Stat(context.Background(), "org/repo", "main", "m.gguf")
	if !errors.Is(err, hub.ErrNetwork) || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "OWL_HF_ENDPOINT") {
		t.Fatalf("%v, want ErrNetwork naming %s and the mirror setting", err, addr)
	}
	if time.Since(start) > time.Minute {
		t.Fatal("an unreachable hub was retried")
	}
}

func TestDownloadStalls(t *testing.T) {
	srv := hubtest.New(t)
	srv.AddLFS("org/repo", "m.gguf", content(4096, 1))
	srv.Throttle("org/repo", "m.gguf", 1024, 300*time.Millisecond)
	c := client(srv)
	c.StallTimeout = 50 * time.Millisecond
	_, err := c.Download(context.Background(), stat(t, c, "org/repo", "m.gguf"), filepath.Join(t.TempDir(), "p"), nil)
	if !errors.Is(err, hub.ErrInterrupted) || !strings.Contains(err.Error(), "nothing received") {
		t.Fatalf("%v, want ErrInterrupted for a stalled download", err)
	}
}

func TestDownloadCancelled(t *testing.T) {
	srv := hubtest.New(t)
	srv.AddLFS("org/repo", "m.gguf", content(8192, 1))
	srv.Throttle("org/repo", "m.gguf", 1024, 20*time.Millisecond)
	c := client(srv)
	c.Retries = 5
	ctx, cancel := context.WithCancel(context.Background())
	fi := stat(t, c, "org/repo", "m.gguf")
	_, err := c.Download(ctx, fi, filepath.Join(t.TempDir(), "p"), func(done, total int64) {
		if done >= 2048 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want context.Canceled", err)
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"hf.co/org/repo", "hf.co/org/repo:Q4_K_M", "hf.co/org/repo@v1:sub/m.gguf", "huggingface.co/a/b:../x.bin", "hf.co/a/b:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 4096 {
			return
		}
		r, err := hub.ParseRef(s)
		if err != nil {
			if !errors.Is(err, hub.ErrBadRef) {
				t.Fatalf("%q: error %v does not wrap ErrBadRef", s, err)
			}
			return
		}
		if r.File != "" && hub.CheckPath(r.File) != nil {
			t.Fatalf("%q: accepted file %q that CheckPath refuses", s, r.File)
		}
		for _, part := range strings.Split(r.Repo, "/") {
			if part == "" || part == "." || part == ".." {
				t.Fatalf("%q: repository %q", s, r.Repo)
			}
		}
		back, err := hub.ParseRef(r.String())
		if err != nil || back != r {
			t.Fatalf("%q → %+v → %q → %+v, %v", s, r, r.String(), back, err)
		}
	})
}
