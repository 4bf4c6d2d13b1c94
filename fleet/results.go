package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"sync"
)

// Line is one request of a batch's input file.
type Line struct {
	CustomID string          `json:"custom_id"`
	Method   string          `json:"method"`
	URL      string          `json:"url"`
	Body     json.RawMessage `json:"body"`
}

// Result is one line of a batch's output or error file.
type Result struct {
	ID       string     `json:"id"`
	CustomID string     `json:"custom_id"`
	Response *Response  `json:"response"`
	Error    *LineError `json:"error"`
}

// Failed says whether the result belongs in the error file.
func (r Result) Failed() bool {
	return r.Error != nil || r.Response == nil || r.Response.StatusCode >= 300
}

// Response is the answer of a line's endpoint.
type Response struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

// LineError says why a line has no response.
type LineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Request is a line made ready to run: the body its endpoint takes (a
// transcription's form with its audio in it), so that whoever runs it
// needs nothing but the request.
type Request struct {
	Batch       string `json:"batch"`
	CustomID    string `json:"custom_id"`
	URL         string `json:"url"`
	Model       string `json:"model"`
	ContentType string `json:"content_type"`
	Body        []byte `json:"body,omitempty"`
}

// Runner runs a request through an engine's endpoint. ok is false when
// ctx ended before it finished: the request has no result and runs again.
type Runner interface {
	RunRequest(ctx context.Context, r Request) (res Result, ok bool)
}

// ResultFile is a batch's output or error file, opened to append: every
// result is written durably before it counts, and a line's result is
// written once however often it arrives.
type ResultFile struct {
	mu   sync.Mutex
	f    *os.File
	done map[string]bool // custom ids written
	n    int
}

// OpenResults opens path to append, cutting a line half written when the
// process died, and notes the custom ids it holds.
func OpenResults(path string) (*ResultFile, error) {
	rf := &ResultFile{done: map[string]bool{}}
	raw, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	keep := bytes.LastIndexByte(raw, '\n') + 1
	for _, l := range bytes.Split(raw[:keep], []byte{'\n'}) {
		var res Result
		if len(l) > 0 && json.Unmarshal(l, &res) == nil {
			rf.done[res.CustomID] = true
			rf.n++
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(int64(keep)); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, err
	}
	rf.f = f
	return rf, nil
}

// Name is the file's path.
func (rf *ResultFile) Name() string { return rf.f.Name() }

// Close closes the file.
func (rf *ResultFile) Close() error { return rf.f.Close() }

// Has reports whether the line custom has a result.
func (rf *ResultFile) Has(custom string) bool {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	return rf.done[custom]
}

// Count is the number of results.
func (rf *ResultFile) Count() int {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	return rf.n
}

// Add appends a result, durably, unless its line has one already.
func (rf *ResultFile) Add(res Result) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.done[res.CustomID] {
		return nil
	}
	end, err := rf.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err = rf.f.Write(append(b, '\n')); err == nil {
		err = rf.f.Sync()
	}
	if err != nil {
		// A disk that filled up leaves no half line for the next result
		// to follow.
		rf.f.Truncate(end)
		rf.f.Seek(end, io.SeekStart)
		return err
	}
	rf.done[res.CustomID] = true
	rf.n++
	return nil
}
