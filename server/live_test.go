package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// liveEvent is a message the server sends on /v1/audio/stream.
type liveEvent struct {
	Type         string   `json:"type"`
	Model        string   `json:"model"`
	SampleRate   int      `json:"sample_rate"`
	Encoding     string   `json:"encoding"`
	Text         string   `json:"text"`
	Committed    string   `json:"committed"`
	Start        *float64 `json:"start"`
	End          *float64 `json:"end"`
	AudioSeconds float64  `json:"audio_seconds"`
	Finals       int      `json:"finals"`
	Dropped      int64    `json:"dropped"`
	Error        *struct {
		Message string `json:"message"`
		Code    string `json:"code"`
		Status  int    `json:"status"`
	} `json:"error"`
}

// liveURL is the WebSocket address of /v1/audio/stream on ts with query q.
func liveURL(ts string, q url.Values) string {
	return "ws" + strings.TrimPrefix(ts, "http") + "/v1/audio/stream?" + q.Encode()
}

// pcm16 is the sample data of a 16-bit WAV file made by wav16.
func pcm16(t testing.TB, wav []byte) []byte {
	t.Helper()
	if len(wav) < 44 || string(wav[36:40]) != "data" {
		t.Fatal("not a WAV file written by wav16")
	}
	return wav[44:]
}

// readEvents reads the server's events until the connection closes, and
// returns them with the error that ended the reading.
func readEvents(ctx context.Context, t testing.TB, c *websocket.Conn) ([]liveEvent, error) {
	t.Helper()
	var events []liveEvent
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return events, err
		}
		if typ != websocket.MessageText {
			t.Fatalf("the server sent a %v message", typ)
		}
		var ev liveEvent
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatalf("event %q is not JSON: %v", b, err)
		}
		events = append(events, ev)
	}
}

// streamLive sends audio (already encoded as the query declares) in
// messages of chunk bytes, ends the stream with {"type":"end"}, and
// returns every event up to the close.
func streamLive(t *testing.T, ts string, q url.Values, audio []byte, chunk int) ([]liveEvent, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, liveURL(ts, q), nil)
	if err != nil {
		t.Fatalf("dial: %v (response %+v)", err, resp)
	}
	defer c.CloseNow()
	type result struct {
		events []liveEvent
		err    error
	}
	done := make(chan result, 1)
	go func() {
		evs, err := readEvents(ctx, t, c)
		done <- result{evs, err}
	}()
	for len(audio) > 0 {
		n := min(chunk, len(audio))
		if err := c.Write(ctx, websocket.MessageBinary, audio[:n]); err != nil {
			t.Fatalf("sending audio: %v", err)
		}
		audio = audio[n:]
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"end"}`)); err != nil {
		t.Fatalf("ending the stream: %v", err)
	}
	r := <-done
	return r.events, r.err
}

// checkLiveRun checks the events of a stream of seconds of audio (within
// tolerance) that ended cleanly: ready first, then partial and final events
// in time order, then done, and a normal close.
func checkLiveRun(t *testing.T, events []liveEvent, closeErr error, seconds, tolerance float64) {
	t.Helper()
	if s := websocket.CloseStatus(closeErr); s != websocket.StatusNormalClosure {
		t.Fatalf("the stream ended with %v (close status %v), want a normal close", closeErr, s)
	}
	if len(events) < 3 {
		t.Fatalf("events %+v: want ready, at least one final and done", events)
	}
	if ev := events[0]; ev.Type != "ready" || ev.Model != "ggml-micro.en" {
		t.Fatalf("first event %+v, want ready for ggml-micro.en", ev)
	}
	last := events[len(events)-1]
	if last.Type != "done" || math.Abs(last.AudioSeconds-seconds) > tolerance || last.Dropped != 0 {
		t.Fatalf("last event %+v, want done after %v s of audio, none dropped", last, seconds)
	}
	finals := 0
	prevEnd := 0.0
	for _, ev := range events[1 : len(events)-1] {
		switch ev.Type {
		case "partial", "final":
		default:
			t.Fatalf("unexpected %q event %+v in the middle of the stream", ev.Type, ev)
		}
		if ev.Start == nil || ev.End == nil || *ev.Start < 0 || *ev.End < *ev.Start || *ev.End > seconds+1 {
			t.Fatalf("%s event with times %v to %v in %.2f s of audio", ev.Type, ev.Start, ev.End, seconds)
		}
		if ev.Type == "final" {
			finals++
			if strings.TrimSpace(ev.Text) == "" {
				t.Fatalf("final event without text: %+v", ev)
			}
			if *ev.Start < prevEnd-0.01 {
				t.Fatalf("final events overlap: one starts at %v, the one before ends at %v", *ev.Start, prevEnd)
			}
			prevEnd = *ev.End
		}
	}
	if finals == 0 || finals != last.Finals {
		t.Fatalf("%d final events, done reports %d", finals, last.Finals)
	}
}

func TestLiveTranscription(t *testing.T) {
	ts := testServer(t, Config{})
	pcm := pcm16(t, jfkShort)

	// 16-bit samples at 16 kHz, the defaults, in messages of an odd size
	// so that samples are split across messages.
	events, err := streamLive(t, ts.URL, url.Values{"model": {"ggml-micro.en"}, "language": {"en"}}, pcm, 3201)
	// Every sample arrives: 3 s to the sample.
	checkLiveRun(t, events, err, 3, 0.5/16000)
	if ev := events[0]; ev.SampleRate != 16000 || ev.Encoding != "pcm_s16le" {
		t.Fatalf("ready %+v, want 16000 Hz pcm_s16le", ev)
	}
}

// decimate returns every other sample of 16-bit PCM at 16 kHz as 32-bit
// floats: the audio at 8 kHz in pcm_f32le.
func decimate(pcm []byte) []byte {
	var out []byte
	for i := 0; i+1 < len(pcm); i += 4 {
		v := float32(int16(binary.LittleEndian.Uint16(pcm[i:]))) / 32768
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
	}
	return out
}

func TestLiveTranscriptionFloat8kHz(t *testing.T) {
	ts := testServer(t, Config{})
	f32 := decimate(pcm16(t, jfkShort))
	q := url.Values{"model": {"ggml-micro.en"}, "encoding": {"pcm_f32le"}, "sample_rate": {"8000"}}
	events, err := streamLive(t, ts.URL, q, f32, 4000+3)
	checkLiveRun(t, events, err, 3, 1.0/8000)
	if ev := events[0]; ev.SampleRate != 8000 || ev.Encoding != "pcm_f32le" {
		t.Fatalf("ready %+v, want 8000 Hz pcm_f32le", ev)
	}
}

func TestLiveBadRequests(t *testing.T) {
	ts := testServer(t, Config{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	// A query the server cannot serve is refused before the upgrade, with
	// an OpenAI error.
	for _, tc := range []struct {
		q      url.Values
		status int
		msg    string
	}{
		{url.Values{"model": {"ggml-micro.en"}, "encoding": {"mp3"}}, 400, "encoding"},
		{url.Values{"model": {"ggml-micro.en"}, "sample_rate": {"44"}}, 400, "sample_rate"},
		{url.Values{"model": {"ggml-micro.en"}, "vad": {"psychic"}}, 400, "vad"},
		{url.Values{"model": {"tiny"}}, 400, "not a speech model"},
		{url.Values{"model": {"nope"}}, 404, "not found"},
		{url.Values{}, 400, "no model"},
	} {
		_, resp, err := websocket.Dial(ctx, liveURL(ts.URL, tc.q), nil)
		if err == nil || resp == nil {
			t.Fatalf("%v: dial succeeded (%v)", tc.q, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if msg, _, _ := openAIErr(t, b); resp.StatusCode != tc.status || !strings.Contains(msg, tc.msg) {
			t.Errorf("%v: %d %s, want %d with %q", tc.q, resp.StatusCode, b, tc.status, tc.msg)
		}
	}

	// A text message other than the end of the stream is an error event,
	// then a close that says why.
	c, _, err := websocket.Dial(ctx, liveURL(ts.URL, url.Values{"model": {"ggml-micro.en"}}), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageBinary, pcm16(t, jfkShort)[:3200]); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"pause"}`)); err != nil {
		t.Fatal(err)
	}
	events, err := readEvents(ctx, t, c)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "unknown text message") {
		t.Fatalf("closed with %v, want a policy violation about the text message", err)
	}
	if len(events) < 2 || events[0].Type != "ready" {
		t.Fatalf("events %+v", events)
	}
	last := events[len(events)-1]
	if last.Type != "error" || last.Error == nil || last.Error.Status != http.StatusBadRequest || !strings.Contains(last.Error.Message, `{"type":"end"}`) {
		t.Fatalf("last event %+v, want an error telling how to end the stream", last)
	}
}

func TestLiveBusy(t *testing.T) {
	ts := testServer(t, Config{Limits: Limits{MaxStreams: 1, RetryAfter: 3 * time.Second}})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	q := url.Values{"model": {"ggml-micro.en"}}
	first, _, err := websocket.Dial(ctx, liveURL(ts.URL, q), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.CloseNow()
	// Once the first stream is ready it holds the only place.
	if _, b, err := first.Read(ctx); err != nil || !strings.Contains(string(b), `"ready"`) {
		t.Fatalf("first stream: %s %v", b, err)
	}
	_, resp, err := websocket.Dial(ctx, liveURL(ts.URL, q), nil)
	if err == nil || resp == nil {
		t.Fatalf("a second stream was accepted (%v)", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if _, _, code := openAIErr(t, b); resp.StatusCode != http.StatusServiceUnavailable || code != "server_busy" || resp.Header.Get("Retry-After") != "3" {
		t.Fatalf("second stream: %d %s (Retry-After %q)", resp.StatusCode, b, resp.Header.Get("Retry-After"))
	}
	// Its place is free again once it ends.
	if err := first.Write(ctx, websocket.MessageText, []byte(`{"type":"end"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := readEvents(ctx, t, first); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("first stream ended with %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, _, err := websocket.Dial(ctx, liveURL(ts.URL, q), nil)
		if err == nil {
			c.Close(websocket.StatusNormalClosure, "")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stream accepted after the first ended: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
