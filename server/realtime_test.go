package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/realtime"

	"github.com/owlengine/owl/engine"
)

// The Realtime API is driven here by the OpenAI Go SDK's own Realtime
// client: its typed events out, and every server event decoded by its
// union type.

// rtClient is an SDK connection and the events received on it.
type rtClient struct {
	t      *testing.T
	conn   *realtime.RealtimeConnection
	ctx    context.Context
	events []realtime.RealtimeServerEventUnion
	at     []time.Time // when each event came
}

// dialRealtime connects to ts's /v1/realtime for model.
func dialRealtime(t *testing.T, ts, model string, opts ...option.RequestOption) (*rtClient, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	t.Cleanup(cancel)
	client := openai.NewClient(append([]option.RequestOption{option.WithBaseURL(ts + "/v1/"), option.WithAPIKey("unused"),
		option.WithUnsafeAllowHTTP(), option.WithQuery("model", model)}, opts...)...)
	conn, err := client.Realtime.Connect(ctx, realtime.RealtimeConnectionOptions{})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	return &rtClient{t: t, conn: conn, ctx: ctx}, nil
}

func (c *rtClient) send(ev realtime.RealtimeClientEventUnionParam) {
	c.t.Helper()
	if err := c.conn.Send(c.ctx, ev); err != nil {
		c.t.Fatal(err)
	}
}

// sendRaw sends v as JSON, bypassing the SDK's types.
func (c *rtClient) sendRaw(v any) {
	c.t.Helper()
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := c.conn.SendRaw(c.ctx, b); err != nil {
		c.t.Fatal(err)
	}
}

// until reads events up to and including the first of type typ, and
// returns them.
func (c *rtClient) until(typ string) []realtime.RealtimeServerEventUnion {
	c.t.Helper()
	from := len(c.events)
	for {
		ev, err := c.conn.Recv(c.ctx)
		if err != nil {
			c.t.Fatalf("waiting for %s (after %v): %v", typ, types(c.events[from:]), err)
		}
		c.events = append(c.events, ev)
		c.at = append(c.at, time.Now())
		if ev.Type == typ {
			return c.events[from:]
		}
	}
}

func types(evs []realtime.RealtimeServerEventUnion) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Type
	}
	return out
}

// ofType picks the events of type typ.
func ofType(evs []realtime.RealtimeServerEventUnion, typ string) []realtime.RealtimeServerEventUnion {
	var out []realtime.RealtimeServerEventUnion
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// inOrder checks that want's types come in evs in that order.
func inOrder(t *testing.T, evs []realtime.RealtimeServerEventUnion, want ...string) {
	t.Helper()
	got := types(evs)
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Fatalf("events %v: %s missing or out of order (want %v in order)", got, want[i], want)
	}
}

// setup sends a session.update of raw session fields and waits for the
// session.updated.
func (c *rtClient) update(session map[string]any) realtime.SessionUpdatedEvent {
	c.t.Helper()
	c.sendRaw(map[string]any{"type": "session.update", "session": session})
	evs := c.until("session.updated")
	if errs := ofType(evs, "error"); len(errs) > 0 {
		c.t.Fatalf("session.update: %s", errs[0].AsRealtimeErrorEvent().Error.Message)
	}
	return evs[len(evs)-1].AsSessionUpdatedEvent()
}

// rtGreedy is the tiny model's greedy answer to msgs, at most n tokens.
func rtGreedy(t *testing.T, model string, n int, msgs ...engine.Message) string {
	t.Helper()
	res, err := sharedEngine.Chat(t.Context(), engine.ChatRequest{Model: modelsDir + "/" + model + ".gguf", Messages: msgs,
		GenerateOptions: engine.GenerateOptions{MaxTokens: n}}, func(engine.Chunk) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return res.Text
}

// espeakSpeech is espeak-ng's speech of phrases at its own rate: lead
// seconds of silence, then each phrase followed by gap seconds of it.
func espeakSpeech(t *testing.T, lead, gap float64, phrases ...string) ([]float32, int) {
	t.Helper()
	v, err := sharedEngine.OpenVoice(t.Context(), engine.BuiltinVoice, "")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	rate := v.SampleRate()
	all := make([]float32, int(lead*float64(rate)))
	for _, p := range phrases {
		if err := v.Speak(t.Context(), p, engine.SpeakOptions{}, func(a engine.SpokenAudio) error {
			all = append(all, a.Samples...)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		all = append(all, make([]float32, int(gap*float64(rate)))...)
	}
	return all, rate
}

// speech24 is espeak-ng's speech of phrases at 24 kHz pcm16, each followed
// by pause seconds of silence (and as much before the first).
func speech24(t *testing.T, pause float64, phrases ...string) []byte {
	t.Helper()
	samples, rate := espeakSpeech(t, pause, pause, phrases...)
	rs, err := engine.NewResampler(rate, realtimeRate)
	if err != nil {
		t.Fatal(err)
	}
	return encodeOutput(append(rs.Write(samples), rs.Flush()...), rtFormat{Type: "audio/pcm"})
}

// stream appends pcm in 100-ms events, paced at speed × real time.
func (c *rtClient) stream(pcm []byte, speed float64) {
	c.t.Helper()
	const chunk = realtimeRate / 10 * 2
	for len(pcm) > 0 {
		n := min(len(pcm), chunk)
		c.send(realtime.RealtimeClientEventUnionParam{OfInputAudioBufferAppend: &realtime.InputAudioBufferAppendEventParam{
			Audio: base64.StdEncoding.EncodeToString(pcm[:n])}})
		pcm = pcm[n:]
		if speed > 0 {
			time.Sleep(time.Duration(float64(100*time.Millisecond) / speed))
		}
	}
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// words is text's words, single-spaced, with each byte that is not UTF-8
// replaced as JSON replaces it.
func words(text string) string { return strings.Join(strings.Fields(string([]rune(text))), " ") }

// audioOf joins a response's audio deltas.
func audioOf(t *testing.T, evs []realtime.RealtimeServerEventUnion) []byte {
	var out []byte
	for _, ev := range ofType(evs, "response.output_audio.delta") {
		b, err := base64.StdEncoding.DecodeString(ev.AsResponseAudioDeltaEvent().Delta)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

// A typed conversation: a text item, then a response in audio and one in
// text, each event of the API in its place, the answer the model's greedy
// reply, spoken.
func TestRealtimeTextItemsAndResponses(t *testing.T) {
	ts := testServer(t, Config{})
	c, err := dialRealtime(t, ts.URL, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	created := c.until("session.created")[0].AsSessionCreatedEvent()
	sess := created.Session.AsRealtimeSessionCreateRequest()
	if created.EventID == "" || sess.OutputModalities[0] != "audio" || sess.Audio.Output.Format.Rate != realtimeRate || sess.Audio.Output.Voice.AsString() != "alloy" {
		t.Fatalf("session.created: %s", created.RawJSON())
	}
	up := c.update(map[string]any{"type": "realtime", "instructions": "You are brief.", "max_output_tokens": 12, "temperature": 0,
		"audio": map[string]any{"input": map[string]any{"turn_detection": nil, "transcription": map[string]any{"model": "ggml-micro.en"}}}})
	if s := up.Session.AsRealtimeSessionCreateRequest(); s.Instructions != "You are brief." || s.Audio.Input.TurnDetection.Type != "" {
		t.Fatalf("session.updated: %s", up.RawJSON())
	}
	c.send(realtime.RealtimeClientEventUnionParam{OfConversationItemCreate: &realtime.ConversationItemCreateEventParam{
		Item: realtime.ConversationItemUnionParam{OfRealtimeUserMessageItem: &realtime.RealtimeConversationItemUserMessageParam{
			Content: []realtime.RealtimeConversationItemUserMessageContentParam{{Type: "input_text", Text: openai.String("Say hello.")}}}}}})
	evs := c.until("conversation.item.done")
	inOrder(t, evs, "conversation.item.added", "conversation.item.done")
	userID := evs[0].AsConversationItemAdded().Item.AsRealtimeConversationItemUserMessage().ID

	want := rtGreedy(t, "tiny", 12, engine.Message{Role: "system", Content: "You are brief."}, engine.Message{Role: "user", Content: "Say hello."})
	c.send(realtime.RealtimeClientEventUnionParam{OfResponseCreate: &realtime.ResponseCreateEventParam{}})
	evs = c.until("response.done")
	inOrder(t, evs, "response.created", "response.output_item.added", "conversation.item.added", "response.content_part.added",
		"response.output_audio_transcript.delta", "output_audio_buffer.started", "response.output_audio.delta",
		"response.output_audio.done", "response.output_audio_transcript.done", "response.content_part.done",
		"response.output_item.done", "conversation.item.done", "response.done")
	if prev := ofType(evs, "conversation.item.added")[0].AsConversationItemAdded().PreviousItemID; prev != userID {
		t.Errorf("the answer follows %q, want the user's item %q", prev, userID)
	}
	var deltas strings.Builder
	for _, ev := range ofType(evs, "response.output_audio_transcript.delta") {
		deltas.WriteString(ev.AsResponseAudioTranscriptDeltaEvent().Delta)
	}
	transcript := ofType(evs, "response.output_audio_transcript.done")[0].AsResponseAudioTranscriptDoneEvent().Transcript
	if transcript != deltas.String() || words(transcript) != words(want) {
		t.Fatalf("spoken %q (deltas %q), want the greedy answer %q", transcript, deltas.String(), want)
	}
	pcm := audioOf(t, evs)
	if len(pcm) < realtimeRate/10*2 || len(pcm)%2 != 0 {
		t.Fatalf("%d bytes of answer audio", len(pcm))
	}
	done := evs[len(evs)-1].AsResponseDoneEvent().Response
	if done.Status != "completed" && done.Status != "incomplete" || done.Usage.OutputTokens < 1 || done.Usage.InputTokens < 5 ||
		done.Usage.TotalTokens != done.Usage.InputTokens+done.Usage.OutputTokens || len(done.Output) != 1 {
		t.Fatalf("response.done: %s", evs[len(evs)-1].RawJSON())
	}
	// The client plays the audio; the server says when it has played.
	evs = c.until("output_audio_buffer.stopped")
	if d := time.Duration(len(pcm)/2) * time.Second / realtimeRate; c.at[len(c.at)-1].Sub(c.at[len(c.at)-len(evs)-1]) > d+2*time.Second {
		t.Errorf("output_audio_buffer.stopped came late for %v of audio", d)
	}

	// In text, the deltas are the model's own.
	up = c.update(map[string]any{"output_modalities": []string{"text"}})
	want2 := rtGreedy(t, "tiny", 12, engine.Message{Role: "system", Content: "You are brief."}, engine.Message{Role: "user", Content: "Say hello."},
		engine.Message{Role: "assistant", Content: transcript}, engine.Message{Role: "user", Content: "Again."})
	c.sendRaw(map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "message", "role": "user",
		"content": []any{map[string]any{"type": "input_text", "text": "Again."}}}})
	c.until("conversation.item.done")
	c.sendRaw(map[string]any{"type": "response.create"})
	evs = c.until("response.done")
	inOrder(t, evs, "response.created", "response.content_part.added", "response.output_text.delta", "response.output_text.done",
		"response.content_part.done", "response.output_item.done", "response.done")
	var text strings.Builder
	for _, ev := range ofType(evs, "response.output_text.delta") {
		text.WriteString(ev.AsResponseTextDeltaEvent().Delta)
	}
	if got := ofType(evs, "response.output_text.done")[0].AsResponseTextDoneEvent().Text; got != text.String() || got != string([]rune(want2)) {
		t.Fatalf("text answer %q (deltas %q), want %q", got, text.String(), want2)
	}
	if len(ofType(evs, "response.output_audio.delta")) > 0 {
		t.Fatal("a text response sent audio")
	}

	// Items: retrieve, delete; an answer's audio truncated to what was
	// heard keeps the pieces heard whole.
	answerID := ofType(c.events, "response.output_item.done")[0].AsResponseOutputItemDoneEvent().Item.AsRealtimeConversationItemAssistantMessage().ID
	c.sendRaw(map[string]any{"type": "conversation.item.retrieve", "item_id": answerID})
	got := c.until("conversation.item.retrieved")
	if it := got[len(got)-1].AsRealtimeServerEventConversationItemRetrieved().Item.AsRealtimeConversationItemAssistantMessage(); it.ID != answerID || it.Role != "assistant" {
		t.Fatalf("retrieved %s", got[len(got)-1].RawJSON())
	}
	c.sendRaw(map[string]any{"type": "conversation.item.truncate", "item_id": answerID, "content_index": 0, "audio_end_ms": 0})
	got = c.until("conversation.item.truncated")
	if tr := got[len(got)-1].AsConversationItemTruncatedEvent(); tr.ItemID != answerID || tr.AudioEndMs != 0 {
		t.Fatalf("truncated %s", got[len(got)-1].RawJSON())
	}
	c.sendRaw(map[string]any{"type": "conversation.item.retrieve", "item_id": answerID})
	got = c.until("conversation.item.retrieved")
	if it := got[len(got)-1].AsRealtimeServerEventConversationItemRetrieved().Item.AsRealtimeConversationItemAssistantMessage(); it.Content[0].Transcript != "" || it.Status != "incomplete" {
		t.Fatalf("after truncation to 0 ms: %s", got[len(got)-1].RawJSON())
	}
	c.sendRaw(map[string]any{"type": "conversation.item.delete", "item_id": userID})
	got = c.until("conversation.item.deleted")
	if got[len(got)-1].AsConversationItemDeletedEvent().ItemID != userID {
		t.Fatalf("deleted %s", got[len(got)-1].RawJSON())
	}
}

// Spoken turns through the server's turn detection: the user's speech is
// detected, committed, transcribed, and answered aloud with the greedy
// reply to its transcript; speech over the answer cuts it off at once
// and the answer keeps only what was heard.
func TestRealtimeVoiceTurnsAndBargeIn(t *testing.T) {
	ts := testServer(t, Config{})
	c, err := dialRealtime(t, ts.URL, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	c.until("session.created")
	c.send(realtime.RealtimeClientEventUnionParam{OfSessionUpdate: &realtime.SessionUpdateEventParam{
		Session: realtime.SessionUpdateEventSessionUnionParam{OfRealtime: &realtime.RealtimeSessionCreateRequestParam{
			Audio: realtime.RealtimeAudioConfigParam{Input: realtime.RealtimeAudioConfigInputParam{
				Transcription: realtime.AudioTranscriptionParam{Model: "ggml-micro.en"},
				TurnDetection: realtime.RealtimeAudioInputTurnDetectionUnionParam{OfServerVad: &realtime.RealtimeAudioInputTurnDetectionServerVadParam{
					SilenceDurationMs: openai.Int(400), PrefixPaddingMs: openai.Int(200)}}}},
			MaxOutputTokens: realtime.RealtimeSessionCreateRequestMaxOutputTokensUnionParam{OfInt: openai.Int(10)}}}}})
	c.until("session.updated")
	c.sendRaw(map[string]any{"type": "session.update", "session": map[string]any{"temperature": 0}})
	c.until("session.updated")

	c.stream(speech24(t, 1, "What time is it"), 0)
	evs := c.until("response.done")
	inOrder(t, evs, "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
		"conversation.item.added", "conversation.item.input_audio_transcription.completed", "conversation.item.done",
		"response.created", "response.output_audio.delta", "response.done")
	started := ofType(evs, "input_audio_buffer.speech_started")[0].AsInputAudioBufferSpeechStartedEvent()
	stopped := ofType(evs, "input_audio_buffer.speech_stopped")[0].AsInputAudioBufferSpeechStoppedEvent()
	if started.ItemID == "" || stopped.ItemID != started.ItemID || started.AudioStartMs < 500 || stopped.AudioEndMs <= started.AudioStartMs {
		t.Fatalf("speech %d–%d ms, items %q %q", started.AudioStartMs, stopped.AudioEndMs, started.ItemID, stopped.ItemID)
	}
	heard := ofType(evs, "conversation.item.input_audio_transcription.completed")[0].AsConversationItemInputAudioTranscriptionCompletedEvent()
	if heard.ItemID != started.ItemID || heard.Transcript == "" {
		t.Fatalf("transcription: %+v", heard)
	}
	want := rtGreedy(t, "tiny", 10, engine.Message{Role: "user", Content: heard.Transcript})
	said := ofType(evs, "response.output_audio_transcript.done")[0].AsResponseAudioTranscriptDoneEvent().Transcript
	if words(said) != words(want) {
		t.Fatalf("answered %q to %q, want %q", said, heard.Transcript, want)
	}

	// Barge-in: a long answer (no token limit), spoken over once its
	// audio has begun.
	c.sendRaw(map[string]any{"type": "session.update", "session": map[string]any{"max_output_tokens": "inf"}})
	c.until("session.updated")
	c.stream(speech24(t, 1, "Tell me a long story"), 0)
	c.until("response.output_audio.delta")
	interrupt := speech24(t, 0.2, "Stop now please")
	go c.stream(interrupt, 0)
	evs = c.until("response.done")
	startAt := -1
	for i, ev := range evs {
		if ev.Type == "input_audio_buffer.speech_started" {
			startAt = i
		}
	}
	if startAt < 0 {
		t.Fatalf("no speech_started in %v", types(evs))
	}
	done := evs[len(evs)-1].AsResponseDoneEvent().Response
	var details struct {
		Response struct {
			StatusDetails struct{ Type, Reason string } `json:"status_details"`
		}
	}
	json.Unmarshal([]byte(evs[len(evs)-1].RawJSON()), &details)
	if done.Status != "cancelled" || details.Response.StatusDetails.Reason != "turn_detected" {
		t.Fatalf("the spoken-over answer ended %s", evs[len(evs)-1].RawJSON())
	}
	n := len(c.events) - len(evs)
	lag := c.at[n+len(evs)-1].Sub(c.at[n+startAt])
	t.Logf("the answer stopped %v after the user began to speak", lag)
	if lag > 200*time.Millisecond && !raceEnabled {
		t.Errorf("the answer stopped %v after the user began to speak (want within 200 ms)", lag)
	}
	inOrder(t, evs[startAt:], "output_audio_buffer.cleared", "response.done")
	item := ofType(evs, "response.output_item.done")[0].AsResponseOutputItemDoneEvent().Item.AsRealtimeConversationItemAssistantMessage()
	full := words(rtGreedy(t, "tiny", 0, engine.Message{Role: "user", Content: heard.Transcript},
		engine.Message{Role: "assistant", Content: said}, engine.Message{Role: "user", Content: ofType(c.events,
			"conversation.item.input_audio_transcription.completed")[1].AsConversationItemInputAudioTranscriptionCompletedEvent().Transcript}))
	kept := words(item.Content[0].Transcript)
	if item.Status != "incomplete" || !strings.HasPrefix(full, kept) || len(kept) >= len(full) {
		t.Fatalf("the cut answer holds %q (status %s); the whole answer was %q", kept, item.Status, full)
	}
	// The interruption is a turn of its own, answered.
	evs = c.until("response.done")
	if s := evs[len(evs)-1].AsResponseDoneEvent().Response.Status; s != "completed" && s != "incomplete" {
		t.Fatalf("the next turn's answer: %s", evs[len(evs)-1].RawJSON())
	}
}

// Malformed, unknown and misplaced events get error events, and the
// session goes on.
func TestRealtimeBadEvents(t *testing.T) {
	ts := testServer(t, Config{})
	c, err := dialRealtime(t, ts.URL, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	c.until("session.created")
	for _, tc := range []struct {
		event any
		code  string
	}{
		{[]byte(`{"type":`), "invalid_json"},
		{[]byte(`[1,2]`), "invalid_json"},
		{map[string]any{"type": "no.such.event", "event_id": "e1"}, "invalid_value"},
		{map[string]any{"event_id": "e2"}, "missing_required_parameter"},
		{map[string]any{"type": "session.update", "session": map[string]any{"audio": map[string]any{"output": map[string]any{"format": map[string]any{"type": "audio/mp3"}}}}}, "invalid_value"},
		{map[string]any{"type": "session.update", "session": map[string]any{"output_modalities": []string{"video"}}}, "invalid_value"},
		{map[string]any{"type": "session.update", "session": map[string]any{"audio": map[string]any{"input": map[string]any{"turn_detection": map[string]any{"type": "server_vad", "threshold": 7}}}}}, "invalid_value"},
		{map[string]any{"type": "session.update", "session": map[string]any{"audio": map[string]any{"input": map[string]any{"transcription": map[string]any{"model": "tiny"}}}}}, ""},
		{map[string]any{"type": "session.update", "session": map[string]any{"audio": map[string]any{"output": map[string]any{"voice": "zzqq"}}}}, "invalid_value"},
		{map[string]any{"type": "session.update", "session": map[string]any{"tools": []any{map[string]any{"type": "mcp", "server_label": "f"}}}}, "unsupported"},
		{map[string]any{"type": "session.update", "session": map[string]any{"tools": []any{map[string]any{"type": "function", "name": "f"}}, "tool_choice": map[string]any{"type": "function", "name": "g"}}}, "invalid_value"},
		{map[string]any{"type": "input_audio_buffer.append", "audio": "%%%"}, "invalid_value"},
		{map[string]any{"type": "input_audio_buffer.commit"}, "invalid_value"}, // the server's turn detection commits
		{map[string]any{"type": "response.cancel"}, "response_cancel_not_active"},
		{map[string]any{"type": "response.create"}, "invalid_value"}, // nothing to answer
		{map[string]any{"type": "conversation.item.delete", "item_id": "item_nope"}, "item_not_found"},
		{map[string]any{"type": "conversation.item.truncate", "item_id": "item_nope", "audio_end_ms": 5}, "item_not_found"},
		{map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "message", "role": "robot", "content": []any{}}}, "invalid_value"},
		{map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "function_call_output", "output": "{}"}}, "missing_required_parameter"},
		{map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "message", "role": "user",
			"content": []any{map[string]any{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}}}}, ""},
	} {
		c.sendRaw(tc.event)
		t.Logf("sent %v", tc.event)
		evs := c.until("error")
		e := evs[len(evs)-1].AsRealtimeErrorEvent().Error
		if e.Message == "" || e.Type == "" || (tc.code != "" && e.Code != tc.code) {
			t.Errorf("%v: error %+v, want code %q", tc.event, e, tc.code)
		}
		if m, ok := tc.event.(map[string]any); ok && m["event_id"] != nil && e.EventID != m["event_id"] {
			t.Errorf("%v: error for event %q", tc.event, e.EventID)
		}
	}
	if err := c.conn.SendRaw(c.ctx, json.RawMessage(`{"type":"session.update","session":{"instructions":"still here"}}`)); err != nil {
		t.Fatal(err)
	}
	evs := c.until("session.updated")
	if s := evs[len(evs)-1].AsSessionUpdatedEvent().Session.AsRealtimeSessionCreateRequest(); s.Instructions != "still here" {
		t.Fatalf("after the errors: %s", evs[len(evs)-1].RawJSON())
	}
	if err := c.conn.SendRaw(c.ctx, json.RawMessage(`{"type":"input_audio_buffer.clear"}`)); err != nil {
		t.Fatal(err)
	}
	c.until("input_audio_buffer.cleared")
}

// A client that leaves mid-answer frees the text model at once; the
// server's limit on sessions turns the next one away clearly; the API key
// is asked of sessions as of every request, in a header or as the
// browser clients' subprotocol.
func TestRealtimeDisconnectLimitAndKey(t *testing.T) {
	ts := testServer(t, Config{APIKey: "sesame", Limits: Limits{MaxRealtime: 1}})
	if _, err := dialRealtime(t, ts.URL, "tiny"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without the key: %v", err)
	}
	c, err := dialRealtime(t, ts.URL, "tiny", option.WithAPIKey("sesame"))
	if err != nil {
		t.Fatal(err)
	}
	c.until("session.created")
	if _, err := dialRealtime(t, ts.URL, "tiny", option.WithAPIKey("sesame")); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("over the limit: %v", err)
	}
	_, resp, err := websocket.Dial(c.ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/v1/realtime?model=tiny",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer sesame"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("over the limit: %v", err)
	}
	if msg, _, _ := openAIErr(t, readAll(t, resp)); !strings.Contains(msg, "1 realtime sessions are open") {
		t.Fatalf("over the limit: %q", msg)
	}
	c.sendRaw(map[string]any{"type": "session.update", "session": map[string]any{"output_modalities": []string{"text"}, "max_output_tokens": "inf"}})
	c.until("session.updated")
	c.sendRaw(map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "message", "role": "user",
		"content": []any{map[string]any{"type": "input_text", "text": "Count to a thousand."}}}})
	c.sendRaw(map[string]any{"type": "response.create"})
	c.until("response.output_text.delta")
	c.conn.Abort()
	gone := time.Now()
	for {
		busy := false
		for _, m := range sharedEngine.Metrics().Models {
			if strings.HasSuffix(m.Path, "tiny.gguf") && m.Running > 0 {
				busy = true
			}
		}
		if !busy {
			break
		}
		if time.Since(gone) > 2*time.Second {
			t.Fatal("the text model still generates 2 s after the client left")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the generation stopped %v after the client left", time.Since(gone))
	// The session's place is free again, and a browser's subprotocol key
	// opens it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ws, resp, err := websocket.Dial(c.ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/v1/realtime?model=tiny",
			&websocket.DialOptions{Subprotocols: []string{"realtime", "openai-insecure-api-key.sesame"}})
		if err == nil {
			if ws.Subprotocol() != "realtime" {
				t.Errorf("subprotocol %q", ws.Subprotocol())
			}
			_, b, err := ws.Read(c.ctx)
			if err != nil || !bytes.Contains(b, []byte(`"session.created"`)) {
				t.Fatalf("first event %s: %v", b, err)
			}
			ws.Close(websocket.StatusNormalClosure, "")
			break
		}
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("a browser's session: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An image shown in the conversation goes through the projector once,
// however many answers refer to it; G.711 audio goes both ways.
func TestRealtimeImageAndG711(t *testing.T) {
	ts := testServer(t, Config{})
	c, err := dialRealtime(t, ts.URL, "seer")
	if err != nil {
		t.Fatal(err)
	}
	c.until("session.created")
	c.update(map[string]any{"max_output_tokens": 6, "audio": map[string]any{"output": map[string]any{"format": map[string]any{"type": "audio/pcmu"}},
		"input": map[string]any{"turn_detection": nil}}})
	encoded := func() (n int64) {
		for _, m := range sharedEngine.Metrics().Models {
			n += m.ImagesEncoded
		}
		return n
	}
	before := encoded()
	img := "data:image/png;base64," + base64.StdEncoding.EncodeToString(pngImage(t, 24, 16))
	c.sendRaw(map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "message", "role": "user",
		"content": []any{map[string]any{"type": "input_text", "text": "What is in this picture?"}, map[string]any{"type": "input_image", "image_url": img}}}})
	c.until("conversation.item.done")
	var prompts []int64
	for turn := range 3 {
		if turn > 0 {
			c.sendRaw(map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "message", "role": "user",
				"content": []any{map[string]any{"type": "input_text", "text": fmt.Sprintf("And now? %d", turn)}}}})
			c.until("conversation.item.done")
		}
		c.sendRaw(map[string]any{"type": "response.create"})
		evs := c.until("response.done")
		r := evs[len(evs)-1].AsResponseDoneEvent().Response
		prompts = append(prompts, r.Usage.InputTokens)
		if ulaw := audioOf(t, evs); len(ulaw) < 800 {
			t.Fatalf("turn %d: %d bytes of μ-law", turn, len(ulaw))
		} else if pcm := engine.DecodeMuLaw(ulaw); slices.Max(pcm) < 0.01 {
			t.Fatalf("turn %d: silent μ-law", turn)
		}
	}
	if n := encoded() - before; n != 1 {
		t.Fatalf("the image was encoded %d times in 3 answers (want once); prompts %v", n, prompts)
	}
	if prompts[0] < 20 {
		t.Fatalf("the first prompt is %d tokens: the image is not in it", prompts[0])
	}
	// Audio items: G.711 in, committed by hand, transcribed.
	c.update(map[string]any{"audio": map[string]any{"input": map[string]any{"format": map[string]any{"type": "audio/pcma"},
		"transcription": map[string]any{"model": "ggml-micro.en"}}}})
	pcm := speech24(t, 0.3, "Hello there")
	samples := make([]float32, len(pcm)/2)
	for i := range samples {
		samples[i] = float32(int16(binary.LittleEndian.Uint16(pcm[2*i:]))) / 32768
	}
	rs, _ := engine.NewResampler(realtimeRate, engine.G711Rate)
	alaw := engine.EncodeALaw(append(rs.Write(samples), rs.Flush()...))
	c.sendRaw(map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(alaw)})
	c.sendRaw(map[string]any{"type": "input_audio_buffer.commit"})
	evs := c.until("conversation.item.done")
	inOrder(t, evs, "input_audio_buffer.committed", "conversation.item.added", "conversation.item.input_audio_transcription.completed", "conversation.item.done")
	c.sendRaw(map[string]any{"type": "input_audio_buffer.commit"})
	if e := c.until("error"); e[len(e)-1].AsRealtimeErrorEvent().Error.Code != "input_audio_buffer_commit_empty" {
		t.Fatalf("an empty commit: %s", e[len(e)-1].RawJSON())
	}
}

// FuzzRealtimeEvent: any client message gets an event or an error, never
// a panic; a session.update that parses is applied or refused whole.
func FuzzRealtimeEvent(f *testing.F) {
	for _, s := range []string{`{"type":"session.update","session":{"audio":{"input":{"turn_detection":{"type":"semantic_vad","eagerness":"low"}}}}}`,
		`{"type":"input_audio_buffer.append","audio":"AAAA"}`, `{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}}`,
		`{"type":"response.create","response":{"output_modalities":["text"],"max_output_tokens":"inf","conversation":"none","input":[{"type":"item_reference","id":"x"}]}}`,
		`{"type":"conversation.item.truncate","item_id":"a","content_index":0,"audio_end_ms":-1}`, `{"type":"session.update","session":{"max_output_tokens":0}}`} {
		f.Add([]byte(s))
	}
	s, err := New(Config{Engine: sharedEngine, ModelsDir: modelsDir})
	if err != nil {
		f.Fatal(err)
	}
	base := rtConfig{Modalities: []string{"audio"}, MaxTokens: -1, InFormat: rtFormat{Type: "audio/pcm"}, OutFormat: rtFormat{Type: "audio/pcm"}, Turn: defaultTurn()}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, rerr := parseClientEvent(b)
		if rerr != nil {
			if rerr.Message == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		switch ev.Type {
		case "session.update":
			var u rtSessionUpdate
			if json.Unmarshal(ev.Session, &u) == nil {
				next, rerr := s.applySessionUpdate(base, &u)
				if rerr == nil && (len(next.Modalities) != 1 || next.Turn != nil && !(next.Turn.Threshold > 0 && next.Turn.Threshold < 1)) {
					t.Fatalf("accepted %+v", next)
				}
			}
		case "conversation.item.create":
			s.parseItem(ev.Item, "item")
		case "input_audio_buffer.append":
			if raw, err := base64.StdEncoding.DecodeString(ev.Audio); err == nil {
				var odd []byte
				decodeInput(raw, base.InFormat, &odd)
			}
		}
	})
}

// Tools in a session: a required call comes as a function_call item with
// its arguments' events; its output goes back as a function_call_output
// item and the next answer reads it.
func TestRealtimeTools(t *testing.T) {
	ts := callerServer(t)
	rc, err := dialRealtime(t, ts.URL, "caller")
	if err != nil {
		t.Fatal(err)
	}
	rc.until("session.created")
	up := rc.update(map[string]any{"output_modalities": []string{"text"}, "max_output_tokens": 100, "tool_choice": "required",
		"tools": []any{map[string]any{"type": "function", "name": "get_time", "description": "The time in a zone",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{"zone": map[string]any{"type": "string"}}}}}})
	if s := up.Session.AsRealtimeSessionCreateRequest(); len(s.Tools) != 1 {
		t.Fatalf("session tools: %s", up.RawJSON())
	}
	rc.sendRaw(map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "message", "role": "user",
		"content": []any{map[string]any{"type": "input_text", "text": "What time is it?"}}}})
	rc.until("conversation.item.done")
	rc.sendRaw(map[string]any{"type": "response.create"})
	evs := rc.until("response.done")
	inOrder(t, evs, "response.created", "response.output_item.added", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done", "response.done")
	args := ofType(evs, "response.function_call_arguments.done")[0].AsResponseFunctionCallArgumentsDoneEvent()
	if args.Name != "get_time" || args.CallID == "" || !json.Valid([]byte(args.Arguments)) {
		t.Fatalf("call: %s", ofType(evs, "response.function_call_arguments.done")[0].RawJSON())
	}
	done := evs[len(evs)-1].AsResponseDoneEvent().Response
	if len(done.Output) != 2 || done.Output[1].Type != "function_call" {
		t.Fatalf("response output: %s", evs[len(evs)-1].RawJSON())
	}
	// The output goes back; the next answer (tools no longer required)
	// reads it.
	rc.sendRaw(map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "function_call_output",
		"call_id": args.CallID, "output": `{"time": "12:00"}`}})
	rc.until("conversation.item.done")
	rc.update(map[string]any{"tool_choice": "auto"})
	rc.sendRaw(map[string]any{"type": "response.create"})
	evs = rc.until("response.done")
	after := evs[len(evs)-1].AsResponseDoneEvent().Response
	if after.Status != "completed" && after.Status != "incomplete" || after.Usage.InputTokens <= done.Usage.InputTokens {
		t.Fatalf("after the output: %s", evs[len(evs)-1].RawJSON())
	}
}
