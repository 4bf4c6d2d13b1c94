package server

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/fleet"
)

// OpenAI's Batch API, run by the local engine: POST /v1/files takes a
// JSONL file of requests (purpose "batch"), POST /v1/batches runs its
// lines through the server's own endpoints at batch priority (behind
// interactive work), and the results come back as output and error files
// in the API's format. State lives on disk (Config.DataDir): a batch's
// results are appended line by line as they finish, so a restarted server
// resumes each batch where it stopped, with no line lost or done twice
// (a line under way when the process died is run again, once).

// Bounds of the Batch API.
const (
	maxBatchLines   = 50000
	maxFileBytes    = 512 << 20
	batchWindow     = 24 * time.Hour
	batchParallel   = 4 // lines of one batch at once: the engine batches them
	maxListed       = 100
	defaultListSize = 20
)

// batchEndpoints are the endpoints lines may call. Each line names its
// own; owl lets one batch mix them.
var batchEndpoints = []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/audio/transcriptions"}

var (
	fileIDPattern  = regexp.MustCompile(`^file-[0-9a-f]{24}$`)
	batchIDPattern = regexp.MustCompile(`^batch_[0-9a-f]{24}$`)
)

// fileObject is a file of the Files API.
type fileObject struct {
	ID        string `json:"id"`
	Object    string `json:"object"` // "file"
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	ExpiresAt *int64 `json:"expires_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"` // "processed"
}

// files keeps uploaded files and batch results in dir: ID (the bytes) and
// ID.json (the object).
type files struct {
	dir string
	mu  sync.Mutex
}

func (f *files) path(id string) string { return filepath.Join(f.dir, id) }

// put stores r's bytes (at most limit) as a new file.
func (f *files) put(purpose, filename string, r io.Reader, limit int64) (fileObject, error) {
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return fileObject{}, err
	}
	id := newID("file-")
	tmp, err := os.CreateTemp(f.dir, ".upload-*")
	if err != nil {
		return fileObject{}, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, io.LimitReader(r, limit+1))
	if err == nil && n > limit {
		err = tooLarge(limit)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fileObject{}, err
	}
	obj := fileObject{ID: id, Object: "file", Bytes: n, CreatedAt: time.Now().Unix(), Filename: filepath.Base(filename), Purpose: purpose, Status: "processed"}
	if err := os.Rename(tmp.Name(), f.path(id)); err != nil {
		return fileObject{}, err
	}
	return obj, writeJSONFile(f.path(id)+".json", obj)
}

func (f *files) get(id string) (fileObject, error) {
	var obj fileObject
	if !fileIDPattern.MatchString(id) {
		return obj, notFoundFile(id)
	}
	b, err := os.ReadFile(f.path(id) + ".json")
	if err != nil {
		return obj, notFoundFile(id)
	}
	return obj, json.Unmarshal(b, &obj)
}

func (f *files) list(purpose string) []fileObject {
	des, _ := os.ReadDir(f.dir)
	var out []fileObject
	for _, de := range des {
		id, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok || !fileIDPattern.MatchString(id) {
			continue
		}
		if obj, err := f.get(id); err == nil && (purpose == "" || obj.Purpose == purpose) {
			out = append(out, obj)
		}
	}
	slices.SortFunc(out, func(a, b fileObject) int { return int(b.CreatedAt - a.CreatedAt) })
	return out
}

func (f *files) remove(id string) error {
	if _, err := f.get(id); err != nil {
		return err
	}
	os.Remove(f.path(id))
	return os.Remove(f.path(id) + ".json")
}

func notFoundFile(id string) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Param: "file_id", Code: "file_not_found",
		Message: fmt.Sprintf("no file %s (GET /v1/files lists them)", quoteShort(id))}
}

// writeJSONFile writes v to path atomically and durably.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Files API handlers.

func (s *Server) handleFileUpload(w http.ResponseWriter, r *http.Request) error {
	mr, err := r.MultipartReader()
	if err != nil {
		return badRequest("file", "send multipart/form-data with a file and its purpose")
	}
	purpose := ""
	var obj fileObject
	got := false
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return badRequest("file", "reading the form: %v", err)
		}
		switch p.FormName() {
		case "purpose":
			b, _ := io.ReadAll(io.LimitReader(p, 64))
			purpose = strings.TrimSpace(string(b))
		case "file":
			if purpose == "" {
				purpose = "batch" // a purpose sent after the file applies below
			}
			if obj, err = s.files.put(purpose, p.FileName(), p, maxFileBytes); err != nil {
				return err
			}
			got = true
		}
	}
	switch {
	case !got:
		return badRequest("file", "the form has no file")
	case purpose != "batch" && purpose != "user" && purpose != "user_data":
		s.files.remove(obj.ID)
		return badRequest("purpose", "purpose %s: owl takes batch (a JSONL file of requests) and user_data (audio a batch's lines name)", quoteShort(purpose))
	}
	if obj.Purpose != purpose { // the purpose came after the file
		obj.Purpose = purpose
		if err := writeJSONFile(s.files.path(obj.ID)+".json", obj); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, obj)
	return nil
}

func (s *Server) handleFileList(w http.ResponseWriter, r *http.Request) error {
	all := s.files.list(r.URL.Query().Get("purpose"))
	writeJSON(w, http.StatusOK, struct {
		Object  string       `json:"object"`
		Data    []fileObject `json:"data"`
		HasMore bool         `json:"has_more"`
	}{"list", append([]fileObject{}, all...), false})
	return nil
}

func (s *Server) handleFile(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	switch r.Method {
	case http.MethodDelete:
		if err := s.files.remove(id); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Deleted bool   `json:"deleted"`
		}{id, "file", true})
		return nil
	case http.MethodGet, http.MethodHead:
		obj, err := s.files.get(id)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, obj)
		return nil
	}
	w.Header().Set("Allow", "GET, DELETE")
	return &apiError{Status: http.StatusMethodNotAllowed, Type: typeInvalidRequest, Message: r.Method + " " + r.URL.Path + ": method not allowed"}
}

func (s *Server) handleFileContent(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.files.get(id); err != nil {
		return err
	}
	f, err := os.Open(s.files.path(id))
	if err != nil {
		return notFoundFile(id)
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	io.Copy(w, f)
	return nil
}

// batchObject is a batch of the Batch API.
type batchObject struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"` // "batch"
	Endpoint         string            `json:"endpoint"`
	Errors           *batchErrors      `json:"errors"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	OutputFileID     *string           `json:"output_file_id"`
	ErrorFileID      *string           `json:"error_file_id"`
	CreatedAt        int64             `json:"created_at"`
	InProgressAt     *int64            `json:"in_progress_at"`
	ExpiresAt        int64             `json:"expires_at"`
	FinalizingAt     *int64            `json:"finalizing_at"`
	CompletedAt      *int64            `json:"completed_at"`
	FailedAt         *int64            `json:"failed_at"`
	ExpiredAt        *int64            `json:"expired_at"`
	CancellingAt     *int64            `json:"cancelling_at"`
	CancelledAt      *int64            `json:"cancelled_at"`
	RequestCounts    batchCounts       `json:"request_counts"`
	Metadata         map[string]string `json:"metadata"`
}

type batchCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

type batchErrors struct {
	Object string       `json:"object"` // "list"
	Data   []batchError `json:"data"`
}

type batchError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	Line    *int   `json:"line"`
}

// The batch formats are the fleet's, which runs lines on other machines.
type (
	batchLine      = fleet.Line
	batchResult    = fleet.Result
	batchResponse  = fleet.Response
	batchLineError = fleet.LineError
)

func now() *int64 { t := time.Now().Unix(); return &t }

// batches runs the batches kept in dir: ID.json (the object), ID.in.jsonl
// (its lines), ID.out.jsonl and ID.err.jsonl (the results so far).
type batches struct {
	s      *Server
	dir    string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	objs    map[string]*batchObject
	cancels map[string]context.CancelFunc // of the batches running
}

func newBatches(s *Server, dir string) *batches {
	ctx, cancel := context.WithCancel(context.Background())
	b := &batches{s: s, dir: dir, ctx: ctx, cancel: cancel, objs: map[string]*batchObject{}, cancels: map[string]context.CancelFunc{}}
	if c := s.cfg.Fleet; c != nil {
		// Lines every worker died on become their batches' errors.
		b.wg.Go(func() {
			if err := c.DeadLetters(ctx); err != nil {
				s.log.Error("server: the fleet's dead letters", "err", err)
			}
		})
	}
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		id, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok || !batchIDPattern.MatchString(id) {
			continue
		}
		var obj batchObject
		if raw, err := os.ReadFile(filepath.Join(dir, de.Name())); err != nil || json.Unmarshal(raw, &obj) != nil {
			s.log.Warn("server: a batch's state cannot be read; it is left alone", "file", de.Name())
			continue
		}
		b.objs[id] = &obj
		switch obj.Status {
		case "validating", "in_progress", "finalizing", "cancelling":
			b.start(id) // resumed where it stopped
		}
	}
	return b
}

func (b *batches) path(id, suffix string) string { return filepath.Join(b.dir, id+suffix) }

// save writes a batch's object; b.mu is held.
func (b *batches) save(obj *batchObject) error {
	return writeJSONFile(b.path(obj.ID, ".json"), obj)
}

// close stops the batches running (their progress is on disk).
func (b *batches) close() {
	b.cancel()
	b.wg.Wait()
}

func (b *batches) get(id string) (batchObject, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	obj, ok := b.objs[id]
	if !ok {
		return batchObject{}, &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Param: "batch_id", Code: "batch_not_found",
			Message: fmt.Sprintf("no batch %s (GET /v1/batches lists them)", quoteShort(id))}
	}
	return *obj, nil
}

// parseBatchInput reads a batch's input file: its lines, or the errors
// that fail the batch.
func parseBatchInput(r io.Reader) ([]batchLine, []batchError) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 32<<20)
	var lines []batchLine
	var errs []batchError
	seen := map[string]bool{}
	n := 0
	fail := func(code, param, format string, args ...any) {
		line := n
		if len(errs) < 100 {
			errs = append(errs, batchError{Code: code, Param: param, Message: fmt.Sprintf(format, args...), Line: &line})
		}
	}
	for sc.Scan() {
		n++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		var l batchLine
		if err := json.Unmarshal(text, &l); err != nil {
			fail("invalid_json_line", "", "line %d is not a JSON object: %v", n, err)
			continue
		}
		switch {
		case l.CustomID == "":
			fail("missing_custom_id", "custom_id", "line %d has no custom_id", n)
		case seen[l.CustomID]:
			fail("duplicate_custom_id", "custom_id", "line %d: custom_id %s is used twice", n, quoteShort(l.CustomID))
		case l.Method != http.MethodPost:
			fail("invalid_method", "method", "line %d: method %s (want POST)", n, quoteShort(l.Method))
		case !slices.Contains(batchEndpoints, l.URL):
			fail("invalid_url", "url", "line %d: url %s (want one of %s)", n, quoteShort(l.URL), strings.Join(batchEndpoints, ", "))
		case len(l.Body) == 0 || l.Body[0] != '{':
			fail("invalid_body", "body", "line %d: body must be a JSON object", n)
		default:
			seen[l.CustomID] = true
			lines = append(lines, l)
		}
	}
	if err := sc.Err(); err != nil {
		fail("invalid_file", "", "reading the file: %v", err)
	}
	switch {
	case len(lines) == 0 && len(errs) == 0:
		fail("empty_file", "", "the input file holds no requests")
	case len(lines) > maxBatchLines:
		fail("too_many_requests", "", "%d requests: a batch holds at most %d", len(lines), maxBatchLines)
	}
	return lines, errs
}

func (s *Server) handleBatchCreate(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		InputFileID      string            `json:"input_file_id"`
		Endpoint         string            `json:"endpoint"`
		CompletionWindow string            `json:"completion_window"`
		Metadata         map[string]string `json:"metadata"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if !slices.Contains(batchEndpoints, req.Endpoint) {
		return badRequest("endpoint", "endpoint %s: want one of %s", quoteShort(req.Endpoint), strings.Join(batchEndpoints, ", "))
	}
	if req.CompletionWindow != "24h" {
		return badRequest("completion_window", "completion_window %s: want 24h", quoteShort(req.CompletionWindow))
	}
	if len(req.Metadata) > 16 {
		return badRequest("metadata", "metadata holds at most 16 keys")
	}
	in, err := s.files.get(req.InputFileID)
	if err != nil {
		return err
	}
	if in.Purpose != "batch" {
		return badRequest("input_file_id", "file %s has purpose %s, not batch", in.ID, in.Purpose)
	}
	b := s.batches
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return err
	}
	created := time.Now()
	obj := &batchObject{ID: newID("batch_"), Object: "batch", Endpoint: req.Endpoint, InputFileID: in.ID, CompletionWindow: "24h",
		Status: "validating", CreatedAt: created.Unix(), ExpiresAt: created.Add(batchWindow).Unix(), Metadata: req.Metadata}
	// The lines are copied: deleting the input file does not stop the batch.
	src, err := os.Open(s.files.path(in.ID))
	if err != nil {
		return notFoundFile(in.ID)
	}
	defer src.Close()
	dst, err := os.Create(b.path(obj.ID, ".in.jsonl"))
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.objs[obj.ID] = obj
	err = b.save(obj)
	out := *obj
	b.mu.Unlock()
	if err != nil {
		return err
	}
	b.start(obj.ID)
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleBatchList(w http.ResponseWriter, r *http.Request) error {
	limit := defaultListSize
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListed {
			return badRequest("limit", "limit %s: want 1 to %d", quoteShort(v), maxListed)
		}
		limit = n
	}
	after := r.URL.Query().Get("after")
	b := s.batches
	b.mu.Lock()
	all := make([]batchObject, 0, len(b.objs))
	for _, o := range b.objs {
		all = append(all, *o)
	}
	b.mu.Unlock()
	slices.SortFunc(all, func(x, y batchObject) int {
		if x.CreatedAt != y.CreatedAt {
			return int(y.CreatedAt - x.CreatedAt)
		}
		return strings.Compare(y.ID, x.ID)
	})
	if after != "" {
		if i := slices.IndexFunc(all, func(o batchObject) bool { return o.ID == after }); i >= 0 {
			all = all[i+1:]
		}
	}
	more := len(all) > limit
	all = all[:min(limit, len(all))]
	out := struct {
		Object  string        `json:"object"`
		Data    []batchObject `json:"data"`
		FirstID *string       `json:"first_id"`
		LastID  *string       `json:"last_id"`
		HasMore bool          `json:"has_more"`
	}{Object: "list", Data: all, HasMore: more}
	if len(all) > 0 {
		out.FirstID, out.LastID = &all[0].ID, &all[len(all)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleBatchGet(w http.ResponseWriter, r *http.Request) error {
	obj, err := s.batches.get(r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, obj)
	return nil
}

func (s *Server) handleBatchCancel(w http.ResponseWriter, r *http.Request) error {
	b := s.batches
	id := r.PathValue("id")
	if _, err := b.get(id); err != nil {
		return err
	}
	b.mu.Lock()
	obj := b.objs[id]
	switch obj.Status {
	case "validating", "in_progress", "finalizing":
		obj.Status, obj.CancellingAt = "cancelling", now()
		b.save(obj)
		if c := b.cancels[id]; c != nil {
			c() // the runner finishes the cancellation
		}
	case "cancelling":
	default:
		st := obj.Status
		b.mu.Unlock()
		return &apiError{Status: http.StatusConflict, Type: typeInvalidRequest, Code: "batch_not_cancellable",
			Message: fmt.Sprintf("batch %s is %s: only a batch under way can be cancelled", id, st)}
	}
	out := *obj
	b.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
	return nil
}

// start runs batch id in the background.
func (b *batches) start(id string) {
	ctx, cancel := context.WithCancel(b.ctx)
	b.mu.Lock()
	b.cancels[id] = cancel
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer cancel()
		b.run(ctx, id)
		b.mu.Lock()
		delete(b.cancels, id)
		b.mu.Unlock()
	}()
}

// update changes batch id's object under the lock and saves it.
func (b *batches) update(id string, f func(*batchObject)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(b.objs[id])
	if err := b.save(b.objs[id]); err != nil {
		b.s.log.Error("server: saving a batch", "batch", id, "err", err)
	}
}

func (b *batches) status(id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.objs[id].Status
}

// run works batch id through to its end, or until ctx ends (a cancel, or
// the server closing: then it resumes when the server starts again).
func (b *batches) run(ctx context.Context, id string) {
	in, err := os.Open(b.path(id, ".in.jsonl"))
	if err != nil {
		b.finish(id, "failed", []batchError{{Code: "input_missing", Message: "the batch's input is gone: " + err.Error()}}, nil, nil)
		return
	}
	lines, errs := parseBatchInput(in)
	in.Close()
	if len(errs) > 0 {
		b.finish(id, "failed", errs, nil, nil)
		return
	}
	out, err := fleet.OpenResults(b.path(id, ".out.jsonl"))
	if err != nil {
		b.s.log.Error("server: a batch's results", "batch", id, "err", err)
		return
	}
	defer out.Close()
	bad, err := fleet.OpenResults(b.path(id, ".err.jsonl"))
	if err != nil {
		b.s.log.Error("server: a batch's errors", "batch", id, "err", err)
		return
	}
	defer bad.Close()
	if b.status(id) == "validating" {
		b.update(id, func(o *batchObject) { o.Status, o.InProgressAt = "in_progress", now() })
	}
	counts := func() {
		b.update(id, func(o *batchObject) {
			o.RequestCounts = batchCounts{Total: len(lines), Completed: out.Count(), Failed: bad.Count()}
		})
	}
	counts()
	add := func(res batchResult) error {
		dst := out
		if res.Failed() {
			dst = bad
		}
		if err := dst.Add(res); err != nil {
			b.s.log.Error("server: writing a batch result", "batch", id, "err", err)
			return err
		}
		counts()
		return nil
	}
	if b.s.cfg.Fleet != nil {
		b.runFleet(ctx, id, lines, out, bad, add)
	} else {
		b.runLocal(ctx, lines, out, bad, add)
	}
	counts()
	if ctx.Err() != nil && b.status(id) != "cancelling" {
		return // the server is closing; the batch resumes on start
	}
	status := "completed"
	if b.status(id) == "cancelling" {
		status = "cancelled"
	} else {
		b.update(id, func(o *batchObject) { o.Status, o.FinalizingAt = "finalizing", now() })
	}
	b.endFleet(id, status == "cancelled")
	b.finish(id, status, nil, out, bad)
}

// runLocal runs a batch's lines left to do in the server's engine, a few
// at once, until they are done or ctx ends.
func (b *batches) runLocal(ctx context.Context, lines []batchLine, out, bad *fleet.ResultFile, add func(batchResult) error) {
	sem := make(chan struct{}, batchParallel)
	var wg sync.WaitGroup
	for _, l := range lines {
		if out.Has(l.CustomID) || bad.Has(l.CustomID) {
			continue // done before a restart
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if res, ok := b.s.runBatchLine(ctx, l); ok {
				add(res) // a result not written runs again on resume
			}
		})
	}
	wg.Wait()
}

// finish ends a batch: its result files become files of the Files API.
func (b *batches) finish(id, status string, errs []batchError, out, bad *fleet.ResultFile) {
	var outID, errID *string
	for _, rf := range []struct {
		rf  *fleet.ResultFile
		dst **string
	}{{out, &outID}, {bad, &errID}} {
		if rf.rf == nil || rf.rf.Count() == 0 {
			continue
		}
		f, err := os.Open(rf.rf.Name())
		if err != nil {
			continue
		}
		obj, err := b.s.files.put("batch_output", filepath.Base(rf.rf.Name()), f, 1<<40)
		f.Close()
		if err == nil {
			*rf.dst = &obj.ID
		}
	}
	b.update(id, func(o *batchObject) {
		o.Status, o.OutputFileID, o.ErrorFileID = status, outID, errID
		switch status {
		case "completed":
			o.CompletedAt = now()
		case "cancelled":
			o.CancelledAt = now()
		case "failed":
			o.FailedAt = now()
			o.Errors = &batchErrors{Object: "list", Data: errs}
		}
	})
}

// batchKey marks a request made for a batch line: it runs at batch priority.
type batchKey struct{}

// priority is the scheduling priority of r's work.
func priority(r *http.Request) engine.Priority {
	if r.Context().Value(batchKey{}) != nil {
		return engine.PriorityBatch
	}
	return engine.PriorityInteractive
}

// runBatchLine runs one line through the server's own endpoint; ok is
// false when ctx ended first.
func (s *Server) runBatchLine(ctx context.Context, l batchLine) (batchResult, bool) {
	req, err := s.prepareLine("", l)
	if err != nil {
		return lineFailed(s, l, err), true
	}
	return s.RunRequest(ctx, req)
}

// lineFailed is the result of a line that cannot be made ready to run.
func lineFailed(s *Server, l batchLine, err error) batchResult {
	ae := s.classify(err)
	return batchResult{ID: newID("batch_req_"), CustomID: l.CustomID, Error: &batchLineError{Code: cmp.Or(ae.Code, "invalid_request"), Message: ae.Message}}
}

// prepareLine makes a line ready to run anywhere: the body its endpoint
// takes, with a transcription's audio in it.
func (s *Server) prepareLine(batch string, l batchLine) (fleet.Request, error) {
	body, contentType, err := s.batchRequestBody(l)
	if err != nil {
		return fleet.Request{}, err
	}
	var m struct {
		Model string `json:"model"`
	}
	json.Unmarshal(l.Body, &m)
	return fleet.Request{Batch: batch, CustomID: l.CustomID, URL: l.URL, Model: m.Model, ContentType: contentType, Body: body}, nil
}

// RunRequest runs a batch line made ready to run through the server's own
// endpoint at batch priority: it makes the Server a fleet.Runner, which
// owl worker runs the lines of other servers' batches with. ok is false
// when ctx ended first.
func (s *Server) RunRequest(ctx context.Context, r fleet.Request) (batchResult, bool) {
	res := batchResult{ID: newID("batch_req_"), CustomID: r.CustomID}
	if fleet.KindOf(r.URL) == "" {
		res.Error = &batchLineError{Code: "invalid_url", Message: fmt.Sprintf("url %s: want one of %s", quoteShort(r.URL), strings.Join(batchEndpoints, ", "))}
		return res, true
	}
	req, err := http.NewRequestWithContext(context.WithValue(ctx, batchKey{}, r.CustomID), http.MethodPost, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		res.Error = &batchLineError{Code: "invalid_request", Message: err.Error()}
		return res, true
	}
	req.Header.Set("Content-Type", r.ContentType)
	rec := httptest.NewRecorder()
	s.mux.ServeHTTP(rec, req)
	if ctx.Err() != nil {
		return res, false
	}
	out := bytes.TrimSpace(rec.Body.Bytes())
	if !json.Valid(out) {
		// A text response format of a transcription: a JSON string.
		out, _ = json.Marshal(string(out))
	}
	res.Response = &batchResponse{StatusCode: rec.Code, RequestID: newID("req_"), Body: out}
	return res, true
}

// batchRequestBody is the body a line's endpoint takes: its JSON with
// streaming off, or for a transcription a form with the audio its "file"
// names (a file of purpose "user_data", or a path in the allowed media folder).
func (s *Server) batchRequestBody(l batchLine) ([]byte, string, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(l.Body, &fields); err != nil {
		return nil, "", badRequest("body", "body: %v", err)
	}
	delete(fields, "stream")
	delete(fields, "stream_options")
	if l.URL != "/v1/audio/transcriptions" {
		b, err := json.Marshal(fields)
		return b, "application/json", err
	}
	var file string
	if err := json.Unmarshal(fields["file"], &file); err != nil || file == "" {
		return nil, "", badRequest("file", "a transcription line's body names its audio in file: a file id (purpose user_data) or a path in the allowed media folder")
	}
	delete(fields, "file")
	path, err := s.batchAudioPath(file)
	if err != nil {
		return nil, "", err
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		var str string
		if json.Unmarshal(v, &str) != nil {
			str = string(v) // numbers and booleans as written
		}
		mw.WriteField(k, str)
	}
	fw, err := mw.CreateFormFile("file", filepath.Base(file))
	if err != nil {
		return nil, "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, "", badRequest("file", "%s cannot be read: %v", quoteShort(file), err)
	}
	defer f.Close()
	if _, err := io.Copy(fw, io.LimitReader(f, s.lim.MaxBodyBytes)); err != nil {
		return nil, "", err
	}
	mw.Close()
	return buf.Bytes(), mw.FormDataContentType(), nil
}

// batchAudioPath resolves a transcription line's file.
func (s *Server) batchAudioPath(file string) (string, error) {
	if fileIDPattern.MatchString(file) {
		if _, err := s.files.get(file); err != nil {
			return "", err
		}
		return s.files.path(file), nil
	}
	if s.mediaDir == "" {
		return "", badRequest("file", "%s: name an uploaded file (purpose user_data); paths need owl serve --allowed-media-dir", quoteShort(file))
	}
	p := file
	if !filepath.IsAbs(p) {
		p = filepath.Join(s.mediaDir, p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil || !within(s.mediaDir, real) {
		return "", badRequest("file", "%s is not a file in the allowed media folder", quoteShort(file))
	}
	return real, nil
}
