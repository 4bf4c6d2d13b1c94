// Package hubtest imitates the Hugging Face hub for tests: a hub server that
// answers resolve requests the way the real one does (LFS files redirect to
// a CDN with X-Repo-Commit, X-Linked-Etag and X-Linked-Size; files kept in
// git are answered directly with their git blob id as ETag) and lists
// repositories through the tree API, paginated by Link headers; and a CDN
// server on another port that serves LFS files with Range support.
//
// Faults are injected per file: a connection cut after N bytes, a CDN that
// ignores Range, corrupted bytes, failing status codes, slow sending.
// Every request is recorded for assertions.
package hubtest

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Commit is the commit every repository's main branch points at.
const Commit = "0123456789abcdef0123456789abcdef01234567"

// Request is one request either server received.
type Request struct {
	Server        string // "hub" or "cdn"
	Method        string
	Path          string // repository/file for resolve and CDN requests, the URL path otherwise
	Range         string
	Authorization string
}

type file struct {
	content []byte
	lfs     bool
	sha256  string
	gitOID  string
}

// faults for one file; counters count down to zero.
type faults struct {
	cutAfter    int64 // cut the next CDN answer after this many body bytes (-1: none)
	ignoreRange bool
	corrupt     bool
	status      int // answer resolve requests with this status ...
	statusTimes int // ... this many times
	chunk       int // send the body in chunks of this many bytes ...
	delay       time.Duration
}

// Server is a fake hub and its CDN.
type Server struct {
	Hub, CDN *httptest.Server

	mu       sync.Mutex // guards everything below
	repos    map[string]map[string]*file
	tokens   map[string]string // repository → token it requires
	faults   map[string]*faults
	requests []Request
	served   map[string]int64 // body bytes the CDN sent, by repository/file
	pageSize int
	noTree   bool
}

// New starts a fake hub and CDN, closed when the test ends.
func New(t testing.TB) *Server {
	s := &Server{repos: map[string]map[string]*file{}, tokens: map[string]string{}, faults: map[string]*faults{},
		served: map[string]int64{}, pageSize: 1000}
	s.Hub = httptest.NewServer(http.HandlerFunc(s.serveHub))
	s.CDN = httptest.NewServer(http.HandlerFunc(s.serveCDN))
	t.Cleanup(func() {
		s.Hub.Close()
		s.CDN.Close()
	})
	return s
}

// URL is the hub's endpoint.
func (s *Server) URL() string { return s.Hub.URL }

// AddLFS adds a file kept in Git LFS (served through the CDN).
func (s *Server) AddLFS(repo, path string, content []byte) { s.add(repo, path, content, true) }

// AddGit adds a file kept in git itself (served by the hub directly).
func (s *Server) AddGit(repo, path string, content []byte) { s.add(repo, path, content, false) }

func (s *Server) add(repo, path string, content []byte, lfs bool) {
	sum := sha256.Sum256(content)
	blob := sha1.New()
	fmt.Fprintf(blob, "blob %d\x00", len(content))
	blob.Write(content)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.repos[repo] == nil {
		s.repos[repo] = map[string]*file{}
	}
	s.repos[repo][path] = &file{content: bytes.Clone(content), lfs: lfs, sha256: hex.EncodeToString(sum[:]),
		gitOID: hex.EncodeToString(blob.Sum(nil))}
}

// RequireToken makes repo answer 401 unless asked with this bearer token.
func (s *Server) RequireToken(repo, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[repo] = token
}

// DisableListing makes the tree API answer 404, as a plain mirror of the
// resolve endpoint would.
func (s *Server) DisableListing() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noTree = true
}

// SetPageSize sets how many entries one tree listing page holds.
func (s *Server) SetPageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageSize = n
}

func (s *Server) fault(repo, path string) *faults {
	k := repo + "/" + path
	f := s.faults[k]
	if f == nil {
		f = &faults{cutAfter: -1}
		s.faults[k] = f
	}
	return f
}

// CutAfter makes the next CDN answer for the file send n body bytes and
// then drop the connection.
func (s *Server) CutAfter(repo, path string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault(repo, path).cutAfter = n
}

// IgnoreRange makes the CDN answer Range requests for the file with the
// whole file (200), as some proxies do.
func (s *Server) IgnoreRange(repo, path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault(repo, path).ignoreRange = true
}

// Corrupt makes the CDN serve the file with one byte changed, so that its
// sha256 is not the one the hub advertises.
func (s *Server) Corrupt(repo, path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault(repo, path).corrupt = true
}

// Fail makes the next `times` resolve requests for the file answer status.
func (s *Server) Fail(repo, path string, status, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fault(repo, path)
	f.status, f.statusTimes = status, times
}

// Throttle makes the CDN send the file in chunks of n bytes, pausing
// delay before each.
func (s *Server) Throttle(repo, path string, n int, delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fault(repo, path)
	f.chunk, f.delay = n, delay
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Served is how many body bytes of the file the CDN (or, for git files,
// the hub) has sent.
func (s *Server) Served(repo, path string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[repo+"/"+path]
}

func (s *Server) record(server string, r *http.Request, path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{Server: server, Method: r.Method, Path: path, Range: r.Header.Get("Range"),
		Authorization: r.Header.Get("Authorization")})
}

func hubError(w http.ResponseWriter, status int, code, msg string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	http.Error(w, msg, status)
}

// splitEscaped splits an escaped URL path into unescaped segments.
func splitEscaped(p string) ([]string, bool) {
	segs := strings.Split(strings.Trim(p, "/"), "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil {
			return nil, false
		}
		segs[i] = u
	}
	return segs, true
}

func (s *Server) serveHub(w http.ResponseWriter, r *http.Request) {
	segs, ok := splitEscaped(r.URL.EscapedPath())
	switch {
	case !ok:
		hubError(w, http.StatusBadRequest, "", "bad path")
	case len(segs) >= 6 && segs[0] == "api" && segs[1] == "models" && segs[4] == "tree":
		s.record("hub", r, r.URL.Path)
		s.serveTree(w, r, segs[2]+"/"+segs[3], segs[5])
	case len(segs) >= 5 && segs[2] == "resolve":
		repo, path := segs[0]+"/"+segs[1], strings.Join(segs[4:], "/")
		s.record("hub", r, repo+"/"+path)
		s.serveResolve(w, r, repo, segs[3], path)
	default:
		s.record("hub", r, r.URL.Path)
		hubError(w, http.StatusNotFound, "", "no such route")
	}
}

// repoFor checks the repository, its token and the revision; it answers the
// error itself and returns nil when one applies. Call with s.mu held.
func (s *Server) repoFor(w http.ResponseWriter, r *http.Request, repo, rev string) map[string]*file {
	files, ok := s.repos[repo]
	if tok, gated := s.tokens[repo]; gated && r.Header.Get("Authorization") != "Bearer "+tok {
		hubError(w, http.StatusUnauthorized, "GatedRepo", "Access to model "+repo+" is restricted.")
		return nil
	}
	if !ok {
		hubError(w, http.StatusNotFound, "RepoNotFound", "Repository Not Found for url: "+r.URL.String())
		return nil
	}
	if rev != "main" && rev != Commit {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return nil
	}
	return files
}

func (s *Server) serveResolve(w http.ResponseWriter, r *http.Request, repo, rev, path string) {
	s.mu.Lock()
	files := s.repoFor(w, r, repo, rev)
	if files == nil {
		s.mu.Unlock()
		return
	}
	f := s.fault(repo, path)
	if f.statusTimes > 0 {
		f.statusTimes--
		status := f.status
		s.mu.Unlock()
		hubError(w, status, "", http.StatusText(status))
		return
	}
	fl, ok := files[path]
	s.mu.Unlock()
	if !ok {
		hubError(w, http.StatusNotFound, "EntryNotFound", path+" does not exist on \""+rev+"\"")
		return
	}
	h := w.Header()
	h.Set("X-Repo-Commit", Commit)
	if fl.lfs {
		h.Set("X-Linked-Etag", `"`+fl.sha256+`"`)
		h.Set("X-Linked-Size", strconv.Itoa(len(fl.content)))
		// The redirect's own ETag is not the file's; clients must prefer X-Linked-Etag.
		h.Set("ETag", `W/"redirect-`+fl.gitOID[:8]+`"`)
		q := url.Values{"repo": {repo}, "path": {path}}
		http.Redirect(w, r, s.CDN.URL+"/blobs/"+fl.sha256+"?"+q.Encode(), http.StatusFound)
		return
	}
	h.Set("ETag", `"`+fl.gitOID+`"`)
	s.serveContent(w, r, repo, path, fl.content)
}

func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	repo, path := r.URL.Query().Get("repo"), r.URL.Query().Get("path")
	s.record("cdn", r, repo+"/"+path)
	s.mu.Lock()
	fl, ok := s.repos[repo][path]
	s.mu.Unlock()
	if !ok || r.URL.Path != "/blobs/"+fl.sha256 {
		http.Error(w, "NoSuchKey", http.StatusNotFound)
		return
	}
	w.Header().Set("ETag", `"`+fl.sha256+`"`)
	s.serveContent(w, r, repo, path, fl.content)
}

// serveContent answers content with Range support, applying the file's faults.
func (s *Server) serveContent(w http.ResponseWriter, r *http.Request, repo, path string, content []byte) {
	s.mu.Lock()
	f := *s.fault(repo, path)
	if r.Method == http.MethodGet {
		s.fault(repo, path).cutAfter = -1 // a cut happens once
	} else {
		f.cutAfter = -1
	}
	s.mu.Unlock()
	if f.corrupt {
		content = bytes.Clone(content)
		content[len(content)/2] ^= 0xff
	}
	if f.ignoreRange {
		r.Header.Del("Range")
	}
	cw := &faultWriter{ResponseWriter: w, s: s, key: repo + "/" + path, cut: f.cutAfter, chunk: f.chunk, delay: f.delay}
	http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(content))
}

// faultWriter counts the body bytes sent, sends them slowly if asked, and
// drops the connection after cut bytes.
type faultWriter struct {
	http.ResponseWriter
	s     *Server
	key   string
	sent  int64
	cut   int64
	chunk int
	delay time.Duration
}

func (fw *faultWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := len(p)
		if fw.chunk > 0 && n > fw.chunk {
			n = fw.chunk
		}
		if fw.cut >= 0 && fw.sent+int64(n) > fw.cut {
			n = int(fw.cut - fw.sent)
		}
		if fw.delay > 0 {
			time.Sleep(fw.delay)
		}
		m, err := fw.ResponseWriter.Write(p[:n])
		fw.add(m)
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
		if fw.cut >= 0 && fw.sent >= fw.cut {
			if fl, ok := fw.ResponseWriter.(http.Flusher); ok {
				fl.Flush()
			}
			panic(http.ErrAbortHandler) // the server closes the connection mid-body
		}
		if fw.chunk > 0 {
			if fl, ok := fw.ResponseWriter.(http.Flusher); ok {
				fl.Flush()
			}
		}
	}
	return written, nil
}

func (fw *faultWriter) add(n int) {
	fw.sent += int64(n)
	fw.s.mu.Lock()
	fw.s.served[fw.key] += int64(n)
	fw.s.mu.Unlock()
}

type treeEntry struct {
	Type string   `json:"type"`
	OID  string   `json:"oid"`
	Size int      `json:"size"`
	Path string   `json:"path"`
	LFS  *lfsInfo `json:"lfs,omitempty"`
}

type lfsInfo struct {
	OID         string `json:"oid"`
	Size        int    `json:"size"`
	PointerSize int    `json:"pointerSize"`
}

func (s *Server) serveTree(w http.ResponseWriter, r *http.Request, repo, rev string) {
	s.mu.Lock()
	if s.noTree {
		s.mu.Unlock()
		hubError(w, http.StatusNotFound, "", "no such route")
		return
	}
	files := s.repoFor(w, r, repo, rev)
	if files == nil {
		s.mu.Unlock()
		return
	}
	var entries []treeEntry
	dirs := map[string]bool{}
	for p, f := range files {
		e := treeEntry{Type: "file", OID: f.gitOID, Size: len(f.content), Path: p}
		if f.lfs {
			e.Size = 134 // a pointer file's size, as the hub reports it
			e.LFS = &lfsInfo{OID: f.sha256, Size: len(f.content), PointerSize: 134}
		}
		entries = append(entries, e)
		for d := p; strings.Contains(d, "/"); {
			d = d[:strings.LastIndex(d, "/")]
			dirs[d] = true
		}
	}
	pageSize := s.pageSize
	s.mu.Unlock()
	for d := range dirs {
		entries = append(entries, treeEntry{Type: "directory", OID: strings.Repeat("d", 40), Path: d})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	cursor, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	if cursor < 0 || cursor > len(entries) {
		cursor = len(entries)
	}
	end := min(cursor+pageSize, len(entries))
	if end < len(entries) {
		q := r.URL.Query()
		q.Set("cursor", strconv.Itoa(end))
		w.Header().Set("Link", fmt.Sprintf(`<%s%s?%s>; rel="next"`, s.Hub.URL, r.URL.EscapedPath(), q.Encode()))
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(entries[cursor:end])
}
