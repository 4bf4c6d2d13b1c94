package server

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// eventStream writes a streamed response: Server-Sent Events (OpenAI) or
// newline-delimited JSON (ollama). The status line goes out with the first
// event, so an error before it still gets its own HTTP status. Its methods
// are called from one goroutine at a time.
type eventStream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	ndjson  bool
	started bool
	buf     bytes.Buffer
}

func newSSE(w http.ResponseWriter) *eventStream {
	return &eventStream{w: w, rc: http.NewResponseController(w)}
}

func newNDJSON(w http.ResponseWriter) *eventStream {
	return &eventStream{w: w, rc: http.NewResponseController(w), ndjson: true}
}

func (e *eventStream) start() {
	if e.started {
		return
	}
	e.started = true
	h := e.w.Header()
	if e.ndjson {
		h.Set("Content-Type", "application/x-ndjson")
	} else {
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
	}
	e.w.WriteHeader(http.StatusOK)
}

// send writes one event and flushes it to the client; an error means the
// client is gone.
func (e *eventStream) send(v any) error {
	e.start()
	e.buf.Reset()
	if !e.ndjson {
		e.buf.WriteString("data: ")
	}
	enc := json.NewEncoder(&e.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode ends the line
		return err
	}
	if !e.ndjson {
		e.buf.WriteByte('\n')
	}
	if _, err := e.w.Write(e.buf.Bytes()); err != nil {
		return err
	}
	return e.rc.Flush()
}

// done ends an SSE stream the OpenAI way.
func (e *eventStream) done() {
	e.start()
	if !e.ndjson {
		e.w.Write([]byte("data: [DONE]\n\n"))
		e.rc.Flush()
	}
}

// streamError reports err: as the response when nothing was streamed yet
// (returned, for the route to send with its status), else as a last event
// in the stream.
func (s *Server) streamError(e *eventStream, a api, err error) error {
	if !e.started {
		return err
	}
	ae := s.classify(err)
	if ae.Status == 499 {
		return nil
	}
	e.send(errorBody(a, ae))
	return nil
}
