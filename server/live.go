package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/owlengine/owl/engine"
)

// Live transcription over a WebSocket (GET /v1/audio/stream).
//
// The query names the model and declares the audio: model, language,
// translate, encoding (pcm_s16le, the default, or pcm_f32le: little-endian
// mono samples), sample_rate (default 16000; other rates are resampled),
// vad (energy or silero) and vad_model. The client then sends binary
// messages of samples and, to finish, the text message {"type":"end"}
// (or simply closes). The server sends JSON text messages: "ready" once,
// then "partial", "final" and "dropped" events from the same pipeline as
// owl listen, "error" when something fails, and "done" after the last
// final event, before it closes the connection.

// liveBuffer is how much audio may wait for the recognizer before more is
// dropped (and reported in "dropped" events).
const liveBuffer = 30 * time.Second

// liveConfig is what the query of /v1/audio/stream declares.
type liveConfig struct {
	model      model
	language   string
	translate  bool
	float      bool
	sampleRate int
	vad        string
	vadModel   string
}

func (s *Server) parseLiveQuery(r *http.Request) (liveConfig, error) {
	q := r.URL.Query()
	var c liveConfig
	var err error
	if c.model, err = s.models.speechModel(q.Get("model")); err != nil {
		return c, err
	}
	c.language = q.Get("language")
	if v := q.Get("translate"); v != "" {
		if c.translate, err = strconv.ParseBool(v); err != nil {
			return c, badRequest("translate", "translate %q: want true or false", truncate(v, 40))
		}
	}
	switch enc := q.Get("encoding"); enc {
	case "", "pcm_s16le", "s16le", "pcm16":
	case "pcm_f32le", "f32le", "float32":
		c.float = true
	default:
		return c, badRequest("encoding", "encoding %q: want pcm_s16le or pcm_f32le", truncate(enc, 40))
	}
	c.sampleRate = engine.SampleRate
	if v := q.Get("sample_rate"); v != "" {
		if c.sampleRate, err = strconv.Atoi(v); err != nil || c.sampleRate < 8000 || c.sampleRate > 192000 {
			return c, badRequest("sample_rate", "sample_rate %q: want a rate from 8000 to 192000 Hz", truncate(v, 40))
		}
	}
	switch c.vad = q.Get("vad"); c.vad {
	case "", "energy":
	case "silero":
		vm, err := s.models.vadModel(q.Get("vad_model"), "vad_model")
		if err != nil {
			return c, err
		}
		c.vadModel = vm.Path
	default:
		return c, badRequest("vad", "vad %q: want energy or silero", truncate(c.vad, 40))
	}
	return c, nil
}

func (s *Server) handleAudioStream(w http.ResponseWriter, r *http.Request) error {
	cfg, err := s.parseLiveQuery(r)
	if err != nil {
		return err
	}
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeBusy, Code: "server_busy", RetryAfter: true,
			Message: fmt.Sprintf("the server is busy: %d live transcriptions are running, the most it takes", s.lim.MaxStreams)}
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return nil // Accept has answered the client
	}
	defer conn.CloseNow()
	conn.SetReadLimit(4 << 20)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	var wmu sync.Mutex // guards writes to conn
	send := func(v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		wmu.Lock()
		defer wmu.Unlock()
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		return conn.Write(wctx, websocket.MessageText, b)
	}
	src := newLiveSource(int(liveBuffer.Seconds() * engine.SampleRate))
	go s.readLiveAudio(ctx, conn, cfg, src, send)

	encoding := "pcm_s16le"
	if cfg.float {
		encoding = "pcm_f32le"
	}
	send(liveReady{Type: "ready", Model: cfg.model.Name, SampleRate: cfg.sampleRate, Encoding: encoding})
	req := engine.ListenRequest{Model: cfg.model.Path, Source: src, VAD: cfg.vad, VADModel: cfg.vadModel,
		StreamOptions: engine.StreamOptions{Options: engine.TranscribeOptions{Language: cfg.language, Translate: cfg.translate}}}
	st, err := s.be.Listen(ctx, req, func(ev engine.ListenEvent) error {
		if ev.Type == engine.EventDropped {
			return send(liveDropped{Type: ev.Type, Dropped: ev.Dropped, DroppedSeconds: float64(ev.Dropped) / engine.SampleRate})
		}
		return send(liveText{Type: ev.Type, Text: ev.Text, Start: ev.Start.Seconds(), End: ev.End.Seconds(), Committed: ev.Committed,
			Latency: ev.Latency.Seconds()})
	})
	if err != nil {
		if errors.Is(err, context.Canceled) && r.Context().Err() == nil && src.failure() == nil {
			return nil // the client closed the connection
		}
		if ferr := src.failure(); ferr != nil {
			err = ferr
		}
		ae := s.classify(err)
		le := liveError{Type: "error"}
		le.Error.Message, le.Error.Code, le.Error.Status = ae.Message, ae.Code, ae.Status
		send(le)
		conn.Close(websocket.StatusPolicyViolation, truncate(ae.Message, 100))
		return nil
	}
	send(liveDone{Type: "done", AudioSeconds: st.Audio.Seconds(), Finals: st.Finals, Dropped: st.Dropped})
	conn.Close(websocket.StatusNormalClosure, "")
	return nil
}

// readLiveAudio reads the client's messages into src until the client ends
// the stream, the audio goes over the limit, or the connection fails.
func (s *Server) readLiveAudio(ctx context.Context, conn *websocket.Conn, cfg liveConfig, src *liveSource, send func(any) error) {
	var rs *engine.Resampler
	if cfg.sampleRate != engine.SampleRate {
		var err error
		if rs, err = engine.NewResampler(cfg.sampleRate, engine.SampleRate); err != nil {
			src.fail(err)
			return
		}
	}
	limit := int64(s.lim.MaxAudio.Seconds() * engine.SampleRate)
	var total int64
	var partial []byte // a sample split across messages
	width := 2
	if cfg.float {
		width = 4
	}
	for {
		typ, b, err := conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusNormalClosure || websocket.CloseStatus(err) == websocket.StatusGoingAway {
				src.end(rs)
			} else {
				src.fail(context.Canceled)
			}
			return
		}
		if typ == websocket.MessageText {
			var msg struct {
				Type string `json:"type"`
			}
			if json.Unmarshal(b, &msg) != nil || (msg.Type != "end" && msg.Type != "stop") {
				src.fail(badRequest("", "unknown text message: send binary audio frames, then {\"type\":\"end\"}"))
				return
			}
			src.end(rs)
			return
		}
		b = append(partial, b...)
		n := len(b) / width
		var samples []float32
		if cfg.float {
			samples = make([]float32, n)
			for i := range n {
				v := math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					v = 0
				}
				samples[i] = max(-1, min(1, v))
			}
		} else {
			samples = engine.DecodePCM16(b[:2*n])
		}
		partial = append(partial[:0], b[n*width:]...)
		if rs != nil {
			samples = rs.Write(samples)
		}
		total += int64(len(samples))
		if total > limit {
			src.fail(fmt.Errorf("%w: live audio over the limit of %s", engine.ErrAudioTooLong, s.lim.MaxAudio))
			return
		}
		src.push(samples)
	}
}

// liveSource is an engine.AudioSource fed by the WebSocket reader. Audio
// beyond its buffer is dropped and counted, as a microphone's is when the
// recognizer falls behind.
type liveSource struct {
	mu       sync.Mutex // guards the fields below
	chunks   [][]float32
	buffered int
	max      int
	dropped  int64
	ended    bool
	err      error
	wake     chan struct{}
}

func newLiveSource(max int) *liveSource {
	return &liveSource{max: max, wake: make(chan struct{}, 1)}
}

func (l *liveSource) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *liveSource) push(samples []float32) {
	if len(samples) == 0 {
		return
	}
	l.mu.Lock()
	if l.buffered+len(samples) > l.max {
		l.dropped += int64(len(samples))
	} else {
		l.chunks = append(l.chunks, samples)
		l.buffered += len(samples)
	}
	l.mu.Unlock()
	l.signal()
}

// end marks the end of the audio, after what the resampler still holds.
func (l *liveSource) end(rs *engine.Resampler) {
	if rs != nil {
		l.push(rs.Flush())
	}
	l.mu.Lock()
	l.ended = true
	l.mu.Unlock()
	l.signal()
}

func (l *liveSource) fail(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
	l.signal()
}

func (l *liveSource) failure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if errors.Is(l.err, context.Canceled) {
		return nil
	}
	return l.err
}

// Read returns the samples received since the last call, waiting for some.
func (l *liveSource) Read(ctx context.Context) ([]float32, error) {
	for {
		l.mu.Lock()
		if len(l.chunks) > 0 {
			var out []float32
			if len(l.chunks) == 1 {
				out = l.chunks[0]
			} else {
				out = make([]float32, 0, l.buffered)
				for _, c := range l.chunks {
					out = append(out, c...)
				}
			}
			l.chunks, l.buffered = l.chunks[:0], 0
			l.mu.Unlock()
			return out, nil
		}
		err, ended := l.err, l.ended
		l.mu.Unlock()
		switch {
		case err != nil:
			return nil, err
		case ended:
			return nil, io.EOF
		}
		select {
		case <-l.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Dropped is the number of samples dropped so far.
func (l *liveSource) Dropped() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// Close does nothing: the connection's handler owns the connection.
func (l *liveSource) Close() error { return nil }

// The live transcription's events, as the WebSocket sends them.
type (
	liveReady struct {
		Type       string `json:"type"` // "ready"
		Model      string `json:"model"`
		SampleRate int    `json:"sample_rate"`
		Encoding   string `json:"encoding"`
	}
	// liveText is a partial or final text; times in seconds of the stream.
	liveText struct {
		Type      string  `json:"type"`
		Text      string  `json:"text"`
		Start     float64 `json:"start"`
		End       float64 `json:"end"`
		Committed string  `json:"committed,omitempty"`
		Latency   float64 `json:"latency,omitempty"`
	}
	liveDropped struct {
		Type           string  `json:"type"` // "dropped"
		Dropped        int64   `json:"dropped"`
		DroppedSeconds float64 `json:"dropped_seconds"`
	}
	liveError struct {
		Type  string `json:"type"` // "error"
		Error struct {
			Message string `json:"message"`
			Code    string `json:"code"`
			Status  int    `json:"status"`
		} `json:"error"`
	}
	liveDone struct {
		Type         string  `json:"type"` // "done"
		AudioSeconds float64 `json:"audio_seconds"`
		Finals       int     `json:"finals"`
		Dropped      int64   `json:"dropped"`
	}
)
