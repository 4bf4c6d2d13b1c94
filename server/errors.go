package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/owlengine/owl/engine"
)

// api names an API family, which decides the shape of its errors.
type api int

const (
	// apiOpenAI errors are {"error": {"message", "type", "param", "code"}}.
	apiOpenAI api = iota
	// apiOllama errors are {"error": "message"}.
	apiOllama
)

// OpenAI error types.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuthentication = "authentication_error"
	typeNotFound       = "not_found_error"
	typeServer         = "server_error"
	typeBusy           = "server_busy"
)

// apiError is an error with what the client is told: its HTTP status and,
// for the OpenAI shape, a type, the parameter at fault and a code.
type apiError struct {
	Status     int
	Type       string
	Param      string
	Code       string
	Message    string
	RetryAfter bool // send Retry-After: the client may try again later
	// RetryIn, when positive, is how long the wait is expected to be; the
	// Retry-After header then says it instead of the server's default.
	RetryIn time.Duration
}

func (e *apiError) Error() string { return e.Message }

// badRequest is a 400 about param.
func badRequest(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}

func tooLarge(limit int64) *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Code: "request_too_large",
		Message: fmt.Sprintf("request body over the limit of %d bytes", limit)}
}

// classify maps an error to what the client is told. It is the one place
// where errors become HTTP statuses.
func (s *Server) classify(err error) *apiError {
	var ae *apiError
	var mbe *http.MaxBytesError
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	msg := err.Error()
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &mbe):
		return tooLarge(mbe.Limit)
	case errors.As(err, &syn):
		return badRequest("", "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		field := typ.Field
		return badRequest(field, "JSON field %q: %s cannot be %s", field, typ.Type, typ.Value)
	case errors.Is(err, engine.ErrBusy), errors.Is(err, context.DeadlineExceeded):
		e := &apiError{Status: http.StatusServiceUnavailable, Type: typeBusy, Code: "server_busy", RetryAfter: true,
			Message: "the server is busy: " + msg + "; try again shortly"}
		var be *engine.BusyError
		if errors.As(err, &be) {
			e.RetryIn = be.RetryAfter
		}
		return e
	case errors.Is(err, engine.ErrClosed):
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeBusy, Code: "shutting_down", RetryAfter: true,
			Message: "the server is shutting down"}
	case errors.Is(err, engine.ErrTooLarge):
		// Waiting cannot help, so no Retry-After.
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeServer, Code: "insufficient_memory", Message: msg}
	case errors.Is(err, engine.ErrContextFull):
		return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: "context_length_exceeded", Param: "messages", Message: msg}
	case errors.Is(err, engine.ErrUnsupportedModel):
		return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: "unsupported_model", Param: "model", Message: msg}
	case errors.Is(err, engine.ErrNoVision):
		return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: "model_cannot_see", Param: "messages", Message: msg}
	case errors.Is(err, engine.ErrBadImage):
		// The header was fine (checkImage read it), the pixels are not.
		return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: "invalid_image", Param: "messages", Message: msg}
	case errors.Is(err, engine.ErrBadRequest):
		// The request's own content, such as image markers in a message's
		// text that do not match its images.
		return badRequest("", "%s", msg)
	case errors.Is(err, engine.ErrBadGrammar):
		return badRequest("response_format", "%s", msg)
	case errors.Is(err, engine.ErrBadOption):
		return badRequest("", "%s", msg)
	case errors.Is(err, engine.ErrAudioTooLong):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Param: "file", Code: "audio_too_long", Message: msg}
	case errors.Is(err, engine.ErrUnsupportedAudio):
		return &apiError{Status: http.StatusUnsupportedMediaType, Type: typeInvalidRequest, Param: "file", Code: "unsupported_audio",
			Message: msg + "; send WAV, FLAC, MP3 or Ogg Vorbis"}
	case errors.Is(err, engine.ErrBadAudio):
		return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Param: "file", Code: "bad_audio", Message: msg}
	case errors.Is(err, engine.ErrInternal):
		// A fault of owl's own, logged where it happened.
		return &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: msg}
	case errors.Is(err, context.Canceled), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		// The client went away (a cancelled request, or a connection it
		// closed while the answer was being written); nobody reads this.
		return &apiError{Status: 499, Type: typeInvalidRequest, Message: "request cancelled"}
	}
	s.log.Error("server: request failed", "err", err)
	return &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: "internal error: " + msg}
}

// writeError sends err in the shape of API a, unless the response has
// begun, in which case streaming handlers report it themselves.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, a api, err error) {
	e := s.classify(err)
	if e.Status == 499 {
		return
	}
	if headerWritten(w) {
		s.log.Warn("server: error after the response began", "path", r.URL.Path, "err", e.Message)
		return
	}
	if e.RetryAfter {
		w.Header().Set("Retry-After", s.retryAfterSeconds(e.RetryIn))
	}
	if e.Status >= 500 && e.Status != http.StatusServiceUnavailable {
		s.log.Warn("server: request failed", "path", r.URL.Path, "status", e.Status, "err", e.Message)
	}
	writeJSON(w, e.Status, errorBody(a, e))
}

// ollamaError is an error in ollama's shape.
type ollamaError struct {
	Error string `json:"error"`
}

// openAIError is an error in OpenAI's shape; param and code are null when
// empty.
type openAIError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// errorBody is e in the shape of API a.
func errorBody(a api, e *apiError) any {
	if a == apiOllama {
		return ollamaError{e.Message}
	}
	var out openAIError
	out.Error.Message, out.Error.Type = e.Message, e.Type
	if e.Param != "" {
		out.Error.Param = &e.Param
	}
	if e.Code != "" {
		out.Error.Code = &e.Code
	}
	return out
}

// writeJSON sends v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// decodeJSON reads one JSON value from the request body into v; trailing
// data other than white space is an error.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		switch {
		case errors.Is(err, io.EOF):
			return badRequest("", "empty request body: send a JSON object")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return badRequest("", "malformed JSON: the body ends in the middle of a value")
		}
		var mbe *http.MaxBytesError
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		if errors.As(err, &mbe) || errors.As(err, &syn) || errors.As(err, &typ) {
			return err
		}
		var ae *apiError
		if errors.As(err, &ae) {
			return err
		}
		return badRequest("", "malformed JSON: %v", err)
	}
	// Only white space may follow the value, up to the end of the body,
	// which is read to its end so that a body over the limit is refused
	// however it was sent.
	rest := bufio.NewReader(io.MultiReader(dec.Buffered(), r.Body))
	for {
		c, err := rest.ReadByte()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return err
			}
			return badRequest("", "reading the request body: %v", err)
		case c != ' ' && c != '\t' && c != '\r' && c != '\n':
			return badRequest("", "malformed JSON: data after the JSON value")
		}
	}
}
