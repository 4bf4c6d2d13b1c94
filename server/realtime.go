package server

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	ollama "github.com/ollama/ollama/api"

	"github.com/owlengine/owl/assist"
	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/store"
)

// The OpenAI Realtime API (its GA protocol) over a WebSocket:
// GET /v1/realtime?model=MODEL. A session is a voice conversation in the
// assist package's loop: the client streams audio (pcm16 at 24 kHz, or
// G.711), the server's turn detection finds the user's turns, Whisper
// transcribes them, the text model answers, and the answer comes back as
// audio (and its transcript) sentence by sentence while the rest is still
// being generated; speech during an answer cuts it off. docs/realtime.md
// lists the events and how owl fills each field.

// realtimeRate is the rate of the API's pcm16 audio, both ways.
const realtimeRate = 24000

// Bounds of a session.
const (
	maxRealtimeItems   = 1000            // conversation items held
	maxRealtimeBuffer  = 5 * time.Minute // of input audio waiting for a commit
	maxRealtimeMessage = 32 << 20        // bytes of one client event
	maxRealtimeTokens  = 4096            // the most max_output_tokens may ask
	realtimeAudioChunk = 500 * time.Millisecond
)

// realtimeAliases are OpenAI's model names for the text model a session
// runs, and transcriptionAliases those of its transcription model: each
// stands for the store's only model of that kind.
var (
	realtimeAliases      = []string{"gpt-realtime", "gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview", "gpt-realtime-mini"}
	transcriptionAliases = []string{"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize"}
)

func isAlias(name string, aliases []string) bool {
	for _, a := range aliases {
		if name == a || strings.HasPrefix(name, a+"-") {
			return true
		}
	}
	return false
}

// onlyOfKind is the store's one model of kind; what names the kind and
// param the request field for the errors.
func (c *modelIndex) onlyOfKind(kind store.Kind, what, param string) (model, error) {
	all, err := c.list()
	if err != nil {
		return model{}, err
	}
	var found []model
	for _, m := range all {
		if m.Kind == kind {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return model{}, badRequest(param, "the models folder holds no %s (owl pull one)", what)
	}
	names := make([]string, 0, len(found))
	for _, m := range found[:min(len(found), 6)] {
		names = append(names, m.Name)
	}
	return model{}, badRequest(param, "the models folder holds several of %s: name one of %s", what, strings.Join(names, ", "))
}

// handleRealtime upgrades to a Realtime session.
func (s *Server) handleRealtime(w http.ResponseWriter, r *http.Request) error {
	name := r.URL.Query().Get("model")
	var m model
	var err error
	if name == "" || isAlias(name, realtimeAliases) {
		m, err = s.models.onlyOfKind(store.KindLLM, "text models", "model")
	} else {
		m, err = s.models.textModel(name)
	}
	if err != nil {
		return err
	}
	if q := r.URL.Query(); q.Has("intent") || q.Has("call_id") {
		return badRequest("intent", "owl's realtime sessions are conversations: drop intent and call_id from the query")
	}
	select {
	case s.realtime <- struct{}{}:
		defer func() { <-s.realtime }()
	default:
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeBusy, Code: "server_busy", RetryAfter: true,
			Message: fmt.Sprintf("the server is busy: %d realtime sessions are open, the most it takes", s.lim.MaxRealtime)}
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"realtime"}})
	if err != nil {
		return nil // Accept has answered the client
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxRealtimeMessage)
	ss, err := s.newRealtimeSession(r.Context(), conn, m)
	if err != nil {
		ae := s.classify(err)
		b, _ := json.Marshal(map[string]any{"type": "error", "event_id": newID("event_"),
			"error": &rtError{Type: ae.Type, Code: ae.Code, Message: ae.Message}})
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		conn.Write(ctx, websocket.MessageText, b)
		conn.Close(websocket.StatusInternalError, truncate(ae.Message, 100))
		return nil
	}
	ss.run()
	return nil
}

// rtError is a Realtime error event's error.
type rtError struct {
	Type    string  `json:"type"`
	Code    string  `json:"code,omitempty"`
	Message string  `json:"message"`
	Param   string  `json:"param,omitempty"`
	EventID *string `json:"event_id"` // the client event that caused it
}

func (e *rtError) Error() string { return e.Message }

// rtInvalid is an invalid_request_error about param.
func rtInvalid(code, param, format string, args ...any) *rtError {
	return &rtError{Type: typeInvalidRequest, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

// rtFormat is an audio format: audio/pcm (16-bit little-endian at 24 kHz),
// audio/pcmu or audio/pcma (G.711 at 8 kHz).
type rtFormat struct {
	Type string `json:"type"`
	Rate int    `json:"rate,omitempty"`
}

func (f rtFormat) rate() int {
	if f.Type == "audio/pcm" {
		return realtimeRate
	}
	return engine.G711Rate
}

func checkFormat(f rtFormat, param string) (rtFormat, *rtError) {
	switch f.Type {
	case "audio/pcm", "pcm16":
		if f.Rate != 0 && f.Rate != realtimeRate {
			return f, rtInvalid("invalid_value", param+".rate", "audio/pcm rate %d: the API's PCM is 24000 Hz", f.Rate)
		}
		return rtFormat{Type: "audio/pcm", Rate: realtimeRate}, nil
	case "audio/pcmu", "g711_ulaw":
		return rtFormat{Type: "audio/pcmu"}, nil
	case "audio/pcma", "g711_alaw":
		return rtFormat{Type: "audio/pcma"}, nil
	}
	return f, rtInvalid("invalid_value", param+".type", "audio format %s: want audio/pcm, audio/pcmu or audio/pcma", quoteShort(f.Type))
}

// rtTranscription is the input transcription's settings.
type rtTranscription struct {
	Model    string `json:"model"`
	Language string `json:"language,omitempty"`
	Prompt   string `json:"prompt,omitempty"`
}

// rtTurn is the server's turn detection.
type rtTurn struct {
	Type              string  `json:"type"` // server_vad or semantic_vad
	Threshold         float64 `json:"threshold"`
	PrefixPaddingMs   int     `json:"prefix_padding_ms"`
	SilenceDurationMs int     `json:"silence_duration_ms"`
	CreateResponse    bool    `json:"create_response"`
	InterruptResponse bool    `json:"interrupt_response"`
	IdleTimeoutMs     *int    `json:"idle_timeout_ms"`
	Eagerness         string  `json:"eagerness,omitempty"`
}

// vadParams are the turn detection's voice activity parameters.
func (t *rtTurn) vadParams() engine.VADParams {
	p := engine.DefaultStreamVADParams()
	p.Threshold = t.Threshold
	p.Pad = time.Duration(t.PrefixPaddingMs) * time.Millisecond
	p.MinSilence = time.Duration(t.SilenceDurationMs) * time.Millisecond
	return p
}

// rtConfig is a session's settings, as session.update changes them.
type rtConfig struct {
	Instructions  string
	Modalities    []string // ["audio"] or ["text"]
	MaxTokens     int      // -1: "inf"
	Temperature   float64
	InFormat      rtFormat
	OutFormat     rtFormat
	Transcription *rtTranscription // nil: no transcription events
	SpeechModel   model            // the whisper model of the user's audio ("" Path: none)
	Turn          *rtTurn          // nil: the client commits the audio
	Voice         string
	Speed         float64
	Tools         []engine.Tool
	ToolsRaw      []json.RawMessage // as the client sent them
	ToolChoice    string            // "", auto, none, required, or a tool's name
}

func (c *rtConfig) audioOut() bool { return c.Modalities[0] == "audio" }

// object is the session as session.created and session.updated show it.
func (c *rtConfig) object(id, modelName string) map[string]any {
	var maxTokens any = "inf"
	if c.MaxTokens > 0 {
		maxTokens = c.MaxTokens
	}
	var transcription any
	if c.Transcription != nil {
		transcription = c.Transcription
	}
	var turn any
	if c.Turn != nil {
		turn = c.Turn
	}
	return map[string]any{
		"type": "realtime", "object": "realtime.session", "id": id, "model": modelName,
		"output_modalities": c.Modalities, "instructions": c.Instructions,
		"tools": toolsShown(c.ToolsRaw), "tool_choice": toolChoiceShown(c.ToolChoice), "max_output_tokens": maxTokens,
		"temperature": c.Temperature, "tracing": nil, "prompt": nil, "include": nil, "truncation": "auto",
		"expires_at": 0,
		"audio": map[string]any{
			"input": map[string]any{"format": c.InFormat, "transcription": transcription,
				"noise_reduction": nil, "turn_detection": turn},
			"output": map[string]any{"format": c.OutFormat, "voice": c.Voice, "speed": c.Speed},
		},
	}
}

func toolsShown(raw []json.RawMessage) any {
	if raw == nil {
		return []any{}
	}
	return raw
}

func toolChoiceShown(c string) any {
	switch c {
	case "", "auto":
		return "auto"
	case "none", "required":
		return c
	}
	return map[string]any{"type": "function", "name": c}
}

// parseRealtimeTools reads a session's or response's tools (the Realtime
// API's flat form: {"type": "function", "name", "description",
// "parameters"}) and tool_choice.
func parseRealtimeTools(raw []json.RawMessage, choice json.RawMessage, param string) ([]engine.Tool, string, *rtError) {
	var tools []engine.Tool
	seen := map[string]bool{}
	for i, r := range raw {
		var t struct {
			Type        string          `json:"type"`
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Parameters  json.RawMessage `json:"parameters"`
		}
		if err := json.Unmarshal(r, &t); err != nil {
			return nil, "", rtInvalid("invalid_value", fmt.Sprintf("%s.tools[%d]", param, i), "tools[%d]: %v", i, err)
		}
		if t.Type != "function" && t.Type != "" {
			return nil, "", rtInvalid("unsupported", fmt.Sprintf("%s.tools[%d].type", param, i), "tools[%d]: type %s (owl takes function tools)", i, quoteShort(t.Type))
		}
		if t.Name == "" || seen[t.Name] {
			return nil, "", rtInvalid("invalid_value", fmt.Sprintf("%s.tools[%d].name", param, i), "tools[%d]: a name missing or given twice", i)
		}
		seen[t.Name] = true
		nested, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]any{"name": t.Name, "description": t.Description, "parameters": t.Parameters}})
		var et engine.Tool
		if len(t.Parameters) == 0 {
			nested, _ = json.Marshal(map[string]any{"type": "function", "function": map[string]any{"name": t.Name, "description": t.Description}})
		}
		if err := json.Unmarshal(nested, &et); err != nil {
			return nil, "", rtInvalid("invalid_value", fmt.Sprintf("%s.tools[%d].parameters", param, i), "tools[%d].parameters: %v", i, err)
		}
		tools = append(tools, et)
	}
	c := ""
	if len(choice) > 0 && !isNull(choice) {
		var sv string
		if json.Unmarshal(choice, &sv) == nil {
			if sv != "auto" && sv != "none" && sv != "required" {
				return nil, "", rtInvalid("invalid_value", param+".tool_choice", "tool_choice %s: want auto, none, required or a function", quoteShort(sv))
			}
			c = sv
		} else {
			var f struct {
				Name string `json:"name"`
			}
			if json.Unmarshal(choice, &f) != nil || f.Name == "" || !seen[f.Name] {
				return nil, "", rtInvalid("invalid_value", param+".tool_choice", "tool_choice must be auto, none, required or {\"type\": \"function\", \"name\"} of a tool offered")
			}
			c = f.Name
		}
	}
	return tools, c, nil
}

// rtSessionUpdate is session.update's session: absent fields keep their
// value; for transcription and turn_detection, null turns them off.
type rtSessionUpdate struct {
	Type             string            `json:"type"`
	Model            string            `json:"model"`
	Instructions     *string           `json:"instructions"`
	OutputModalities []string          `json:"output_modalities"`
	Modalities       []string          `json:"modalities"` // the beta protocol's name
	MaxOutputTokens  json.RawMessage   `json:"max_output_tokens"`
	Temperature      *float64          `json:"temperature"`
	Tools            []json.RawMessage `json:"tools"`
	ToolChoice       json.RawMessage   `json:"tool_choice"`
	Voice            json.RawMessage   `json:"voice"` // the beta protocol's place for it
	Audio            *struct {
		Input *struct {
			Format        *rtFormat       `json:"format"`
			Transcription json.RawMessage `json:"transcription"`
			TurnDetection json.RawMessage `json:"turn_detection"`
		} `json:"input"`
		Output *struct {
			Format *rtFormat       `json:"format"`
			Voice  json.RawMessage `json:"voice"`
			Speed  *float64        `json:"speed"`
		} `json:"output"`
	} `json:"audio"`
}

// parseVoice reads a voice: its name, or {"id": NAME}.
func parseVoice(b json.RawMessage, param string) (string, *rtError) {
	var name string
	if json.Unmarshal(b, &name) == nil && name != "" {
		return name, nil
	}
	var id struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(b, &id) == nil && id.ID != "" {
		return id.ID, nil
	}
	return "", rtInvalid("invalid_value", param, "%s: want a voice's name (or {\"id\": NAME})", param)
}

func isNull(b json.RawMessage) bool { return strings.TrimSpace(string(b)) == "null" }

// parseMaxTokens reads max_output_tokens: a count, or "inf" (-1).
func parseMaxTokens(b json.RawMessage, param string) (int, *rtError) {
	var inf string
	if json.Unmarshal(b, &inf) == nil {
		if inf != "inf" {
			return 0, rtInvalid("invalid_value", param, "%s %s: want a number of tokens or \"inf\"", param, quoteShort(inf))
		}
		return -1, nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil || n < 1 || n > maxRealtimeTokens {
		return 0, rtInvalid("invalid_value", param, "%s: want 1 to %d tokens or \"inf\"", param, maxRealtimeTokens)
	}
	return n, nil
}

// parseModalities reads output_modalities: audio (with its transcript) or
// text.
func parseModalities(m []string, param string) ([]string, *rtError) {
	switch {
	case slices.Contains(m, "audio"):
		return []string{"audio"}, nil
	case len(m) == 1 && m[0] == "text":
		return []string{"text"}, nil
	}
	return nil, rtInvalid("invalid_value", param, "%s %v: want [\"audio\"] or [\"text\"]", param, m)
}

// apply returns c changed by u; the speech model is resolved here, the
// voice by the session, which opens it.
func (s *Server) applySessionUpdate(c rtConfig, u *rtSessionUpdate) (rtConfig, *rtError) {
	if u.Type != "" && u.Type != "realtime" {
		return c, rtInvalid("invalid_value", "session.type", "session type %s: owl's sessions are conversations (type realtime)", quoteShort(u.Type))
	}
	if u.Tools != nil || u.ToolChoice != nil {
		raw := c.ToolsRaw
		if u.Tools != nil {
			raw = u.Tools
		}
		choice := u.ToolChoice
		tools, tc, err := parseRealtimeTools(raw, choice, "session")
		if err != nil {
			return c, err
		}
		if choice == nil {
			tc = c.ToolChoice
		}
		c.Tools, c.ToolsRaw, c.ToolChoice = tools, raw, tc
	}
	if u.Instructions != nil {
		c.Instructions = *u.Instructions
	}
	mods := u.OutputModalities
	if mods == nil {
		mods = u.Modalities
	}
	if mods != nil {
		m, err := parseModalities(mods, "session.output_modalities")
		if err != nil {
			return c, err
		}
		c.Modalities = m
	}
	if u.MaxOutputTokens != nil {
		n, err := parseMaxTokens(u.MaxOutputTokens, "session.max_output_tokens")
		if err != nil {
			return c, err
		}
		c.MaxTokens = n
	}
	if u.Temperature != nil {
		if t := *u.Temperature; t < 0 || t > 2 {
			return c, rtInvalid("invalid_value", "session.temperature", "temperature %v: want 0 to 2", t)
		}
		c.Temperature = *u.Temperature
	}
	if u.Voice != nil {
		v, err := parseVoice(u.Voice, "session.voice")
		if err != nil {
			return c, err
		}
		c.Voice = v
	}
	if u.Audio == nil {
		return c, nil
	}
	if in := u.Audio.Input; in != nil {
		if in.Format != nil {
			f, err := checkFormat(*in.Format, "session.audio.input.format")
			if err != nil {
				return c, err
			}
			c.InFormat = f
		}
		if in.Transcription != nil {
			if isNull(in.Transcription) {
				c.Transcription = nil
			} else {
				var t rtTranscription
				if err := json.Unmarshal(in.Transcription, &t); err != nil {
					return c, rtInvalid("invalid_value", "session.audio.input.transcription", "transcription: %v", err)
				}
				m, err := s.transcriptionModel(t.Model)
				if err != nil {
					return c, err
				}
				if t.Model == "" {
					t.Model = m.Name
				}
				if t.Language != "" && engine.LanguageName(t.Language) == "" {
					return c, rtInvalid("invalid_value", "session.audio.input.transcription.language", "language %s: Whisper does not know it", quoteShort(t.Language))
				}
				c.Transcription, c.SpeechModel = &t, m
			}
		}
		if in.TurnDetection != nil {
			if isNull(in.TurnDetection) {
				c.Turn = nil
			} else {
				t, err := parseTurn(in.TurnDetection, c.Turn)
				if err != nil {
					return c, err
				}
				c.Turn = t
			}
		}
	}
	if out := u.Audio.Output; out != nil {
		if out.Format != nil {
			f, err := checkFormat(*out.Format, "session.audio.output.format")
			if err != nil {
				return c, err
			}
			c.OutFormat = f
		}
		if out.Voice != nil {
			v, err := parseVoice(out.Voice, "session.audio.output.voice")
			if err != nil {
				return c, err
			}
			c.Voice = v
		}
		if out.Speed != nil {
			if v := *out.Speed; v < 0.25 || v > 1.5 {
				return c, rtInvalid("invalid_value", "session.audio.output.speed", "speed %v: want 0.25 to 1.5", v)
			}
			c.Speed = *out.Speed
		}
	}
	return c, nil
}

// defaultTurn is OpenAI's server_vad defaults.
func defaultTurn() *rtTurn {
	return &rtTurn{Type: "server_vad", Threshold: 0.5, PrefixPaddingMs: 300, SilenceDurationMs: 500, CreateResponse: true, InterruptResponse: true}
}

// parseTurn reads turn_detection over cur's values (or the defaults).
func parseTurn(b json.RawMessage, cur *rtTurn) (*rtTurn, *rtError) {
	t := defaultTurn()
	if cur != nil {
		c := *cur
		t = &c
	}
	var u struct {
		Type              string   `json:"type"`
		Threshold         *float64 `json:"threshold"`
		PrefixPaddingMs   *int     `json:"prefix_padding_ms"`
		SilenceDurationMs *int     `json:"silence_duration_ms"`
		CreateResponse    *bool    `json:"create_response"`
		InterruptResponse *bool    `json:"interrupt_response"`
		IdleTimeoutMs     *int     `json:"idle_timeout_ms"`
		Eagerness         string   `json:"eagerness"`
	}
	if err := json.Unmarshal(b, &u); err != nil {
		return nil, rtInvalid("invalid_value", "session.audio.input.turn_detection", "turn_detection: %v", err)
	}
	switch u.Type {
	case "server_vad", "":
		t.Type, t.Eagerness = "server_vad", ""
	case "semantic_vad":
		// Turns end on silence here too; eagerness sets how long.
		t.Type, t.Eagerness = "semantic_vad", u.Eagerness
		switch u.Eagerness {
		case "low":
			t.SilenceDurationMs = 1200
		case "high":
			t.SilenceDurationMs = 300
		case "medium", "auto", "":
			t.SilenceDurationMs, t.Eagerness = 600, cmp.Or(u.Eagerness, "auto")
		default:
			return nil, rtInvalid("invalid_value", "session.audio.input.turn_detection.eagerness", "eagerness %s: want low, medium, high or auto", quoteShort(u.Eagerness))
		}
	default:
		return nil, rtInvalid("invalid_value", "session.audio.input.turn_detection.type", "turn detection %s: want server_vad or semantic_vad", quoteShort(u.Type))
	}
	if u.Threshold != nil {
		if v := *u.Threshold; !(v > 0 && v < 1) {
			return nil, rtInvalid("invalid_value", "session.audio.input.turn_detection.threshold", "threshold %v: want between 0 and 1", v)
		}
		t.Threshold = *u.Threshold
	}
	if u.PrefixPaddingMs != nil {
		if v := *u.PrefixPaddingMs; v < 0 || v > 5000 {
			return nil, rtInvalid("invalid_value", "session.audio.input.turn_detection.prefix_padding_ms", "prefix_padding_ms %d: want 0 to 5000", v)
		}
		t.PrefixPaddingMs = *u.PrefixPaddingMs
	}
	if u.SilenceDurationMs != nil {
		if v := *u.SilenceDurationMs; v < 0 || v > 10000 {
			return nil, rtInvalid("invalid_value", "session.audio.input.turn_detection.silence_duration_ms", "silence_duration_ms %d: want 0 to 10000", v)
		}
		t.SilenceDurationMs = *u.SilenceDurationMs
	}
	if u.CreateResponse != nil {
		t.CreateResponse = *u.CreateResponse
	}
	if u.InterruptResponse != nil {
		t.InterruptResponse = *u.InterruptResponse
	}
	if u.IdleTimeoutMs != nil {
		t.IdleTimeoutMs = u.IdleTimeoutMs
	}
	return t, nil
}

// transcriptionModel resolves a transcription model name: a whisper model
// of the store, or "" or one of OpenAI's names for the store's only one.
func (s *Server) transcriptionModel(name string) (model, *rtError) {
	var m model
	var err error
	if name == "" || isAlias(name, transcriptionAliases) {
		m, err = s.models.onlyOfKind(store.KindWhisper, "speech models", "session.audio.input.transcription.model")
	} else {
		m, err = s.models.speechModel(name)
	}
	if err != nil {
		ae := s.classify(err)
		return m, &rtError{Type: ae.Type, Code: cmp.Or(ae.Code, "invalid_value"), Param: "session.audio.input.transcription.model", Message: ae.Message}
	}
	return m, nil
}

// rtClientEvent is any client event; each type uses its own fields.
type rtClientEvent struct {
	Type           string          `json:"type"`
	EventID        string          `json:"event_id"`
	Session        json.RawMessage `json:"session"`
	Audio          string          `json:"audio"`
	Item           json.RawMessage `json:"item"`
	ItemID         string          `json:"item_id"`
	PreviousItemID *string         `json:"previous_item_id"`
	ContentIndex   int             `json:"content_index"`
	AudioEndMs     *int64          `json:"audio_end_ms"`
	Response       json.RawMessage `json:"response"`
	ResponseID     string          `json:"response_id"`
}

// clientEventTypes are the client events a session takes.
var clientEventTypes = []string{"session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
	"conversation.item.create", "conversation.item.delete", "conversation.item.truncate", "conversation.item.retrieve",
	"response.create", "response.cancel", "output_audio_buffer.clear"}

// parseClientEvent decodes one client message.
func parseClientEvent(b []byte) (*rtClientEvent, *rtError) {
	var ev rtClientEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, rtInvalid("invalid_json", "", "the event is not valid JSON: %v", err)
	}
	if ev.Type == "" {
		return &ev, rtInvalid("missing_required_parameter", "type", "the event has no type")
	}
	if !slices.Contains(clientEventTypes, ev.Type) {
		return &ev, rtInvalid("invalid_value", "type", "unknown event type %s: the types are %s", quoteShort(ev.Type), strings.Join(clientEventTypes, ", "))
	}
	return &ev, nil
}

// rtContent is one part of an item's content.
type rtContent struct {
	Type       string // input_text, input_audio, input_image, output_text, output_audio
	Text       string
	Transcript *string // input_audio: nil until transcribed
	ImageURL   string
	Detail     string
	image      []byte
	audio      []byte // input_audio as sent, until transcribed
}

func (c rtContent) MarshalJSON() ([]byte, error) {
	m := map[string]any{"type": c.Type}
	switch c.Type {
	case "input_text", "output_text":
		m["text"] = c.Text
	case "input_audio", "output_audio":
		m["transcript"] = c.Transcript
	case "input_image":
		m["image_url"] = c.ImageURL
		if c.Detail != "" {
			m["detail"] = c.Detail
		}
	}
	return json.Marshal(m)
}

// text is what the part says to the text model.
func (c rtContent) text() string {
	if c.Transcript != nil {
		return *c.Transcript
	}
	return c.Text
}

// rtItem is a conversation item: a message.
type rtItem struct {
	ID      string      `json:"id"`
	Object  string      `json:"object"`
	Type    string      `json:"type"` // message, function_call or function_call_output
	Status  string      `json:"status"`
	Role    string      `json:"role,omitempty"`
	Content []rtContent `json:"content,omitempty"`
	// A function call and its output.
	CallID    string `json:"call_id,omitempty"`
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
	Output    string `json:"output,omitempty"`

	// An answer's audio: its pieces and length, for truncation.
	sentences []assist.Sentence
	audioLen  time.Duration
}

func newItem(role string, content ...rtContent) *rtItem {
	return &rtItem{ID: newID("item_"), Object: "realtime.item", Type: "message", Status: "completed", Role: role, Content: content}
}

// clone copies it for an event (the session goes on changing the item).
func (it *rtItem) clone() *rtItem {
	c := *it
	c.Content = slices.Clone(it.Content)
	return &c
}

// parseItem reads a conversation item the client sends; images are
// decoded and audio transcribed by the session.
func (s *Server) parseItem(b json.RawMessage, param string) (*rtItem, *rtError) {
	var in struct {
		ID        string `json:"id"`
		Type      string `json:"type"`
		Role      string `json:"role"`
		CallID    string `json:"call_id"`
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
		Output    string `json:"output"`
		Content   []struct {
			Type       string  `json:"type"`
			Text       string  `json:"text"`
			Audio      string  `json:"audio"`
			Transcript *string `json:"transcript"`
			ImageURL   string  `json:"image_url"`
			Detail     string  `json:"detail"`
		} `json:"content"`
	}
	if len(b) == 0 || isNull(b) {
		return nil, rtInvalid("missing_required_parameter", param, "%s is missing", param)
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, rtInvalid("invalid_value", param, "%s: %v", param, err)
	}
	switch in.Type {
	case "message", "":
	case "function_call", "function_call_output":
		if in.CallID == "" {
			return nil, rtInvalid("missing_required_parameter", param+".call_id", "a %s item needs its call_id", in.Type)
		}
		it := &rtItem{ID: newID("item_"), Object: "realtime.item", Type: in.Type, Status: "completed", CallID: in.CallID, Output: in.Output}
		if in.Type == "function_call" {
			if in.Name == "" {
				return nil, rtInvalid("missing_required_parameter", param+".name", "a function_call item needs the function's name")
			}
			if a := strings.TrimSpace(in.Arguments); a != "" && !json.Valid([]byte(a)) {
				return nil, rtInvalid("invalid_value", param+".arguments", "arguments must be a JSON text")
			}
			it.Name, it.Arguments = in.Name, in.Arguments
		}
		if in.ID != "" && len(in.ID) <= 64 {
			it.ID = in.ID
		}
		return it, nil
	default:
		return nil, rtInvalid("invalid_value", param+".type", "item type %s: want message", quoteShort(in.Type))
	}
	allowed := map[string][]string{
		"user":      {"input_text", "input_audio", "input_image"},
		"system":    {"input_text"},
		"assistant": {"output_text", "output_audio", "text", "audio"},
	}[in.Role]
	if allowed == nil {
		return nil, rtInvalid("invalid_value", param+".role", "role %s: want user, assistant or system", quoteShort(in.Role))
	}
	if len(in.Content) == 0 {
		return nil, rtInvalid("missing_required_parameter", param+".content", "the message has no content")
	}
	it := newItem(in.Role)
	if in.ID != "" {
		if len(in.ID) > 64 {
			return nil, rtInvalid("invalid_value", param+".id", "item id is over 64 characters")
		}
		it.ID = in.ID
	}
	images := 0
	for i, p := range in.Content {
		pp := fmt.Sprintf("%s.content[%d]", param, i)
		if !slices.Contains(allowed, p.Type) {
			return nil, rtInvalid("invalid_value", pp+".type", "a %s message's content is %s, not %s", in.Role, strings.Join(allowed, ", "), quoteShort(p.Type))
		}
		c := rtContent{Type: p.Type}
		switch p.Type {
		case "input_text", "output_text", "text":
			c.Type = map[string]string{"input_text": "input_text", "output_text": "output_text", "text": "output_text"}[p.Type]
			c.Text = p.Text
		case "input_audio":
			c.Transcript = p.Transcript
			if p.Transcript == nil {
				if p.Audio == "" {
					return nil, rtInvalid("missing_required_parameter", pp+".audio", "input_audio needs its audio or a transcript")
				}
				raw, err := base64.StdEncoding.DecodeString(p.Audio)
				if err != nil {
					return nil, rtInvalid("invalid_value", pp+".audio", "audio is not base64: %v", err)
				}
				c.audio = raw // decoded by the session, in its input format
			}
		case "output_audio", "audio":
			c.Type = "output_audio"
			t := ""
			if p.Transcript != nil {
				t = *p.Transcript
			}
			c.Transcript = &t
		case "input_image":
			images++
			if images > s.lim.MaxImages {
				return nil, rtInvalid("invalid_value", pp, "more than %d images in one item", s.lim.MaxImages)
			}
			img, err := s.imageFromURL(p.ImageURL, pp+".image_url")
			if err != nil {
				ae := s.classify(err)
				return nil, &rtError{Type: ae.Type, Code: cmp.Or(ae.Code, "invalid_value"), Param: pp + ".image_url", Message: ae.Message}
			}
			c.ImageURL, c.Detail, c.image = p.ImageURL, p.Detail, img
		}
		it.Content = append(it.Content, c)
	}
	return it, nil
}

// decodeInput turns audio in format f into 16-kHz samples; odd holds a
// pcm16 byte left over from the last message.
func decodeInput(raw []byte, f rtFormat, odd *[]byte) []float32 {
	switch f.Type {
	case "audio/pcmu":
		return engine.DecodeMuLaw(raw)
	case "audio/pcma":
		return engine.DecodeALaw(raw)
	}
	if odd != nil && len(*odd) > 0 {
		raw = append(*odd, raw...)
	}
	out := engine.DecodePCM16(raw) // before odd, which may share raw's bytes, is reused
	if odd != nil {
		*odd = (*odd)[:0]
		if len(raw)%2 == 1 {
			*odd = append(*odd, raw[len(raw)-1])
		}
	}
	return out
}

// encodeOutput turns samples (at f's rate) into f's bytes.
func encodeOutput(samples []float32, f rtFormat) []byte {
	switch f.Type {
	case "audio/pcmu":
		return engine.EncodeMuLaw(samples)
	case "audio/pcma":
		return engine.EncodeALaw(samples)
	}
	return engine.AppendPCM16(nil, samples)
}

// errTooShort is the commit of an input buffer under 100 ms.
var errTooShort = rtInvalid("input_audio_buffer_commit_empty", "", "the input audio buffer holds under 100 ms of audio: append audio before committing it")

// rtSession is one Realtime connection.
type rtSession struct {
	s      *Server
	conn   *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc
	id     string
	chat   model
	wmu    sync.Mutex // guards writes to conn
	wg     sync.WaitGroup

	mu       sync.Mutex // guards the fields below
	cfg      rtConfig
	conv     *assist.Conversation // the text model and the voice
	items    []*rtItem
	resp     *rtResponse // the answer under way
	playing  *rtPlayback // the client's estimated playback of the last answer
	listener *rtListener // the turn detection running
	inRS     *engine.Resampler
	inOdd    []byte
	inTotal  int64     // 16-kHz samples of input received
	buf      []float32 // with no turn detection: the input since the last commit
	bufStart int64     // inTotal where buf began
	warned   bool      // the missing speech model was reported
}

// rtResponse is an answer under way.
type rtResponse struct {
	id     string
	cancel context.CancelFunc
	done   chan struct{}
	reason string // why it was cancelled
}

// rtPlayback is an answer's audio as the client plays it, estimated: from
// its first delta, in real time.
type rtPlayback struct {
	respID string
	item   *rtItem
	start  time.Time
	timer  *time.Timer // sends output_audio_buffer.stopped (nil until the answer is whole)
}

func (p *rtPlayback) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}

// rtListener is the server's turn detection over the input stream.
type rtListener struct {
	src    *liveSource
	cancel context.CancelFunc
	done   chan struct{}
	offset int64  // inTotal when it began
	item   string // the id of the turn under way
	delta  string // its transcript sent as deltas so far
}

func (s *Server) newRealtimeSession(ctx context.Context, conn *websocket.Conn, chat model) (*rtSession, error) {
	ctx, cancel := context.WithCancel(ctx)
	ss := &rtSession{s: s, conn: conn, ctx: ctx, cancel: cancel, id: newID("sess_"), chat: chat}
	ss.cfg = rtConfig{Modalities: []string{"audio"}, MaxTokens: -1, Temperature: 0.8,
		InFormat: rtFormat{Type: "audio/pcm", Rate: realtimeRate}, OutFormat: rtFormat{Type: "audio/pcm", Rate: realtimeRate},
		Turn: defaultTurn(), Voice: "alloy", Speed: 1}
	if m, err := s.transcriptionModel(""); err == nil {
		ss.cfg.SpeechModel = m
		ss.cfg.Transcription = &rtTranscription{Model: m.Name}
	}
	conv, err := ss.openConversation(ss.cfg)
	if err != nil {
		cancel()
		return ss, err
	}
	ss.conv = conv
	return ss, nil
}

// openConversation opens the text model's conversation with cfg's voice.
func (ss *rtSession) openConversation(cfg rtConfig) (*assist.Conversation, error) {
	modelName, voice := "", cfg.Voice
	if m, err := ss.s.models.modelOfKind(cfg.Voice, "voice", store.KindVoice, "a voice"); cfg.Voice != "" && err == nil {
		modelName, voice = m.Name, ""
	}
	v, opts, err := ss.s.openVoice(ss.ctx, modelName, voice, engine.SpeakOptions{Speed: cfg.Speed})
	if err != nil {
		return nil, err
	}
	sampling := engine.DefaultSampling()
	sampling.Temperature = float32(cfg.Temperature)
	c, err := assist.NewWithVoice(ss.s.be, assist.Config{ChatModel: ss.chat.Path, Projector: ss.chat.ProjectorPath,
		Speak: opts, MaxTokens: maxRealtimeTokens, Sampling: sampling}, v)
	if err != nil {
		v.Close()
		return nil, err
	}
	return c, nil
}

// send writes a server event: fields and its type, with an event id.
func (ss *rtSession) send(typ string, fields map[string]any) error {
	if fields == nil {
		fields = map[string]any{}
	}
	fields["type"], fields["event_id"] = typ, newID("event_")
	b, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	ctx, cancel := context.WithTimeout(ss.ctx, 10*time.Second)
	defer cancel()
	if err := ss.conn.Write(ctx, websocket.MessageText, b); err != nil {
		ss.cancel() // a client that cannot be written to is gone
		return err
	}
	return nil
}

func (ss *rtSession) sendError(e *rtError) {
	ss.send("error", map[string]any{"error": e})
}

// sendErr reports an engine or API error as an error event.
func (ss *rtSession) sendErr(err error, eventID string) {
	var re *rtError
	if !errors.As(err, &re) {
		ae := ss.s.classify(err)
		re = &rtError{Type: ae.Type, Code: ae.Code, Param: ae.Param, Message: ae.Message}
	}
	e := *re
	if eventID != "" {
		e.EventID = &eventID
	}
	ss.sendError(&e)
}

// run serves the session until the client leaves, then stops everything
// it started and frees its models.
func (ss *rtSession) run() {
	defer func() {
		ss.cancel()
		ss.mu.Lock()
		l := ss.listener
		if ss.playing != nil {
			ss.playing.stop()
		}
		ss.mu.Unlock()
		if l != nil {
			<-l.done
		}
		ss.wg.Wait()
		ss.conv.Close()
	}()
	ss.mu.Lock()
	obj := ss.cfg.object(ss.id, ss.chat.Name)
	ss.mu.Unlock()
	if ss.send("session.created", map[string]any{"session": obj}) != nil {
		return
	}
	ss.mu.Lock()
	ss.startListener()
	conv := ss.conv
	ss.mu.Unlock()
	// The text model loads while the user speaks, not after.
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		if err := conv.Prepare(ss.ctx); err != nil && ss.ctx.Err() == nil {
			ss.sendErr(err, "")
		}
	}()
	for {
		typ, b, err := ss.conn.Read(ss.ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			ss.sendError(rtInvalid("invalid_value", "", "binary messages are not events: send JSON text events (audio goes base64 in input_audio_buffer.append)"))
			continue
		}
		ev, rerr := parseClientEvent(b)
		if rerr != nil {
			id := ""
			if ev != nil {
				id = ev.EventID
			}
			ss.sendErr(rerr, id)
			continue
		}
		if err := ss.handle(ev); err != nil {
			ss.sendErr(err, ev.EventID)
		}
	}
}

// handle acts on one client event.
func (ss *rtSession) handle(ev *rtClientEvent) error {
	switch ev.Type {
	case "session.update":
		return ss.update(ev.Session)
	case "input_audio_buffer.append":
		return ss.appendAudio(ev.Audio)
	case "input_audio_buffer.commit":
		return ss.commit()
	case "input_audio_buffer.clear":
		ss.mu.Lock()
		ss.buf, ss.bufStart = nil, ss.inTotal
		if ss.listener != nil {
			ss.stopListener()
			ss.startListener()
		}
		ss.mu.Unlock()
		return ss.send("input_audio_buffer.cleared", nil)
	case "conversation.item.create":
		return ss.createItem(ev)
	case "conversation.item.delete":
		return ss.deleteItem(ev.ItemID)
	case "conversation.item.truncate":
		return ss.truncateItem(ev)
	case "conversation.item.retrieve":
		ss.mu.Lock()
		i := ss.find(ev.ItemID)
		var it *rtItem
		if i >= 0 {
			it = ss.items[i].clone()
		}
		ss.mu.Unlock()
		if it == nil {
			return rtInvalid("item_not_found", "item_id", "no item %s in the conversation", quoteShort(ev.ItemID))
		}
		return ss.send("conversation.item.retrieved", map[string]any{"item": it})
	case "response.create":
		return ss.createResponse(ev.Response)
	case "response.cancel":
		ss.mu.Lock()
		r := ss.resp
		ss.mu.Unlock()
		if r == nil {
			return rtInvalid("response_cancel_not_active", "", "no response is under way")
		}
		if ev.ResponseID != "" && ev.ResponseID != r.id {
			return rtInvalid("invalid_value", "response_id", "response %s is not the one under way (%s)", quoteShort(ev.ResponseID), r.id)
		}
		ss.stopResponse(r, "client_cancelled")
		return nil
	case "output_audio_buffer.clear":
		ss.mu.Lock()
		r, p := ss.resp, ss.playing
		ss.playing = nil
		ss.mu.Unlock()
		if r != nil {
			ss.stopResponse(r, "client_cancelled")
		}
		id := ""
		if p != nil {
			p.stop()
			id = p.respID
		} else if r != nil {
			id = r.id
		}
		return ss.send("output_audio_buffer.cleared", map[string]any{"response_id": id})
	}
	return nil
}

// update applies session.update.
func (ss *rtSession) update(b json.RawMessage) error {
	if len(b) == 0 || isNull(b) {
		return rtInvalid("missing_required_parameter", "session", "session.update needs a session")
	}
	var u rtSessionUpdate
	if err := json.Unmarshal(b, &u); err != nil {
		return rtInvalid("invalid_value", "session", "session: %v", err)
	}
	ss.mu.Lock()
	cur := ss.cfg
	ss.mu.Unlock()
	next, rerr := ss.s.applySessionUpdate(cur, &u)
	if rerr != nil {
		return rerr
	}
	var conv *assist.Conversation
	if next.Voice != cur.Voice || next.Speed != cur.Speed || next.Temperature != cur.Temperature {
		c, err := ss.openConversation(next)
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.Param == "voice" {
				return rtInvalid("invalid_value", "session.audio.output.voice", "%s", ae.Message)
			}
			return err
		}
		conv = c
	}
	ss.mu.Lock()
	restart := ss.listener != nil && (next.Turn == nil || cur.Turn == nil || *next.Turn != *cur.Turn ||
		next.SpeechModel.Path != cur.SpeechModel.Path || next.InFormat != cur.InFormat || transcriptionLanguage(next) != transcriptionLanguage(cur))
	if next.InFormat != cur.InFormat {
		ss.inRS, ss.inOdd = nil, nil
	}
	ss.cfg = next
	if conv != nil {
		old := ss.conv
		ss.conv = conv
		if ss.resp == nil {
			old.Close()
		} else {
			// The answer under way goes on with its voice, closed after.
			r := ss.resp
			go func() { <-r.done; old.Close() }()
		}
	}
	if restart {
		ss.stopListener()
	}
	if ss.listener == nil {
		ss.startListener()
	}
	obj := ss.cfg.object(ss.id, ss.chat.Name)
	ss.mu.Unlock()
	return ss.send("session.updated", map[string]any{"session": obj})
}

func transcriptionLanguage(c rtConfig) string {
	if c.Transcription == nil {
		return ""
	}
	return c.Transcription.Language
}

// appendAudio takes input_audio_buffer.append.
func (ss *rtSession) appendAudio(b64 string) error {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return rtInvalid("invalid_value", "audio", "audio is not base64: %v", err)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	samples := decodeInput(raw, ss.cfg.InFormat, &ss.inOdd)
	if ss.inRS == nil {
		if ss.inRS, err = engine.NewResampler(ss.cfg.InFormat.rate(), engine.SampleRate); err != nil {
			return err
		}
	}
	samples = ss.inRS.Write(samples)
	ss.inTotal += int64(len(samples))
	if ss.cfg.Turn != nil {
		if ss.listener == nil {
			if !ss.warned {
				ss.warned = true
				return rtInvalid("invalid_value", "session.audio.input.transcription.model",
					"no speech model to hear the audio with: set session.audio.input.transcription.model to a whisper model (GET /v1/models)")
			}
			return nil
		}
		ss.listener.src.push(samples)
		return nil
	}
	if len(ss.buf)+len(samples) > int(maxRealtimeBuffer.Seconds()*engine.SampleRate) {
		return rtInvalid("input_audio_buffer_full", "", "the input audio buffer is full (%s): commit or clear it", maxRealtimeBuffer)
	}
	ss.buf = append(ss.buf, samples...)
	return nil
}

// lastID is the id of the conversation's last item ("" when empty); ss.mu
// is held.
func (ss *rtSession) lastID() any {
	if len(ss.items) == 0 {
		return nil
	}
	return ss.items[len(ss.items)-1].ID
}

// find is the index of item id (-1: none); ss.mu is held.
func (ss *rtSession) find(id string) int {
	return slices.IndexFunc(ss.items, func(it *rtItem) bool { return it.ID == id })
}

// addItem appends it to the conversation (after prev when given: "root"
// puts it first) and reports conversation.item.added; ss.mu is held.
func (ss *rtSession) addItem(it *rtItem, prev *string) (map[string]any, *rtError) {
	if len(ss.items) >= maxRealtimeItems {
		return nil, rtInvalid("conversation_full", "", "the conversation holds %d items, the most it takes: delete some", maxRealtimeItems)
	}
	if ss.find(it.ID) >= 0 {
		return nil, rtInvalid("invalid_value", "item.id", "the conversation already has an item %s", quoteShort(it.ID))
	}
	at := len(ss.items)
	var before any = ss.lastID()
	if prev != nil {
		switch *prev {
		case "root":
			at, before = 0, nil
		default:
			i := ss.find(*prev)
			if i < 0 {
				return nil, rtInvalid("item_not_found", "previous_item_id", "no item %s in the conversation", quoteShort(*prev))
			}
			at, before = i+1, *prev
		}
	}
	ss.items = slices.Insert(ss.items, at, it)
	return map[string]any{"previous_item_id": before, "item": it.clone()}, nil
}

// commit takes input_audio_buffer.commit: the buffer becomes a user item,
// transcribed.
func (ss *rtSession) commit() error {
	ss.mu.Lock()
	if ss.cfg.Turn != nil {
		ss.mu.Unlock()
		return rtInvalid("invalid_value", "", "the server's turn detection commits the audio: set session.audio.input.turn_detection to null to commit it yourself")
	}
	if len(ss.buf) < engine.SampleRate/10 {
		ss.mu.Unlock()
		return errTooShort
	}
	samples, cfg := ss.buf, ss.cfg
	ss.buf, ss.bufStart = nil, ss.inTotal
	it := newItem("user", rtContent{Type: "input_audio"})
	added, rerr := ss.addItem(it, nil)
	ss.mu.Unlock()
	if rerr != nil {
		return rerr
	}
	ss.send("input_audio_buffer.committed", map[string]any{"previous_item_id": added["previous_item_id"], "item_id": it.ID})
	ss.send("conversation.item.added", added)
	return ss.transcribeItem(it, 0, samples, cfg)
}

// transcribeItem transcribes an item's audio part, reporting it.
func (ss *rtSession) transcribeItem(it *rtItem, part int, samples []float32, cfg rtConfig) error {
	if cfg.SpeechModel.Path == "" {
		ss.failTranscription(it, part, rtInvalid("invalid_value", "session.audio.input.transcription.model",
			"no speech model to hear the audio with: set session.audio.input.transcription.model to a whisper model"))
		return nil
	}
	req := engine.TranscribeRequest{Model: cfg.SpeechModel.Path, Samples: samples,
		TranscribeOptions: engine.TranscribeOptions{Language: transcriptionLanguage(cfg), Priority: int(engine.PriorityInteractive)}}
	if cfg.Transcription != nil {
		req.Prompt = cfg.Transcription.Prompt
		req.OnSegment = func(seg engine.Segment) {
			if seg.Text != "" {
				ss.send("conversation.item.input_audio_transcription.delta", map[string]any{"item_id": it.ID, "content_index": part, "delta": seg.Text})
			}
		}
	}
	tr, err := ss.s.be.Transcribe(ss.ctx, req)
	if err != nil {
		ae := ss.s.classify(err)
		ss.failTranscription(it, part, &rtError{Type: ae.Type, Code: ae.Code, Message: ae.Message})
		return nil
	}
	ss.completeTranscription(it, part, strings.TrimSpace(tr.Text()), float64(len(samples))/engine.SampleRate, cfg)
	return nil
}

// completeTranscription sets an audio part's transcript and reports it
// and the item done.
func (ss *rtSession) completeTranscription(it *rtItem, part int, text string, seconds float64, cfg rtConfig) {
	ss.mu.Lock()
	if part < len(it.Content) {
		it.Content[part].Transcript = &text
	}
	done := map[string]any{"item": it.clone()}
	ss.mu.Unlock()
	if cfg.Transcription != nil {
		ss.send("conversation.item.input_audio_transcription.completed", map[string]any{"item_id": it.ID, "content_index": part,
			"transcript": text, "usage": map[string]any{"type": "duration", "seconds": seconds}})
	}
	ss.send("conversation.item.done", done)
}

func (ss *rtSession) failTranscription(it *rtItem, part int, e *rtError) {
	ss.send("conversation.item.input_audio_transcription.failed", map[string]any{"item_id": it.ID, "content_index": part, "error": e})
	ss.mu.Lock()
	done := map[string]any{"item": it.clone()}
	ss.mu.Unlock()
	ss.send("conversation.item.done", done)
}

// createItem takes conversation.item.create.
func (ss *rtSession) createItem(ev *rtClientEvent) error {
	it, rerr := ss.s.parseItem(ev.Item, "item")
	if rerr != nil {
		return rerr
	}
	var raws [][]byte // the audio parts to transcribe, in the input format
	for i := range it.Content {
		if a := it.Content[i].audio; a != nil {
			raws = append(raws, a)
			it.Content[i].audio = nil
		}
	}
	ss.mu.Lock()
	cfg := ss.cfg
	added, rerr := ss.addItem(it, ev.PreviousItemID)
	ss.mu.Unlock()
	if rerr != nil {
		return rerr
	}
	if err := ss.send("conversation.item.added", added); err != nil {
		return err
	}
	if len(raws) == 0 {
		return ss.send("conversation.item.done", map[string]any{"item": it.clone()})
	}
	k := 0
	for part, c := range it.Content {
		if c.Type != "input_audio" || c.Transcript != nil {
			continue
		}
		samples := decodeInput(raws[k], cfg.InFormat, nil)
		k++
		rs, err := engine.NewResampler(cfg.InFormat.rate(), engine.SampleRate)
		if err != nil {
			return err
		}
		samples = append(rs.Write(samples), rs.Flush()...)
		if err := ss.transcribeItem(it, part, samples, cfg); err != nil {
			return err
		}
	}
	return nil
}

// deleteItem takes conversation.item.delete.
func (ss *rtSession) deleteItem(id string) error {
	ss.mu.Lock()
	i := ss.find(id)
	if i < 0 {
		ss.mu.Unlock()
		return rtInvalid("item_not_found", "item_id", "no item %s in the conversation", quoteShort(id))
	}
	if ss.items[i].Status == "in_progress" {
		ss.mu.Unlock()
		return rtInvalid("invalid_value", "item_id", "item %s is being answered: cancel the response first", quoteShort(id))
	}
	ss.items = slices.Delete(ss.items, i, i+1)
	ss.mu.Unlock()
	return ss.send("conversation.item.deleted", map[string]any{"item_id": id})
}

// truncateItem takes conversation.item.truncate: an answer's audio cut
// where the client stopped playing it, and its transcript to the pieces
// heard whole.
func (ss *rtSession) truncateItem(ev *rtClientEvent) error {
	if ev.AudioEndMs == nil || *ev.AudioEndMs < 0 {
		return rtInvalid("missing_required_parameter", "audio_end_ms", "conversation.item.truncate needs audio_end_ms (0 or more)")
	}
	ss.mu.Lock()
	i := ss.find(ev.ItemID)
	if i < 0 {
		ss.mu.Unlock()
		return rtInvalid("item_not_found", "item_id", "no item %s in the conversation", quoteShort(ev.ItemID))
	}
	it := ss.items[i]
	if it.Role != "assistant" || ev.ContentIndex != 0 || len(it.Content) == 0 || it.Content[0].Type != "output_audio" {
		ss.mu.Unlock()
		return rtInvalid("invalid_value", "item_id", "only an assistant item's audio (content_index 0) can be truncated")
	}
	r := ss.resp
	ss.mu.Unlock()
	if r != nil && it.Status == "in_progress" {
		ss.stopResponse(r, "client_cancelled")
	}
	end := time.Duration(*ev.AudioEndMs) * time.Millisecond
	ss.mu.Lock()
	if end > it.audioLen {
		ss.mu.Unlock()
		return rtInvalid("invalid_value", "audio_end_ms", "audio_end_ms %d is past the item's audio (%d ms)", *ev.AudioEndMs, it.audioLen.Milliseconds())
	}
	it.truncate(end)
	ss.mu.Unlock()
	return ss.send("conversation.item.truncated", map[string]any{"item_id": it.ID, "content_index": 0, "audio_end_ms": *ev.AudioEndMs})
}

// truncate keeps the pieces of the answer heard whole by end; ss.mu is
// held.
func (it *rtItem) truncate(end time.Duration) {
	keep := 0
	for keep < len(it.sentences) && it.sentences[keep].End <= end {
		keep++
	}
	it.sentences = it.sentences[:keep]
	if end < it.audioLen {
		it.Status = "incomplete"
		it.audioLen = end
	}
	words := make([]string, keep)
	for i, s := range it.sentences {
		words[i] = s.Text
	}
	t := strings.Join(words, " ")
	it.Content[0].Transcript = &t
}

// messages turns items into the text model's messages, after the
// instructions.
func messagesOf(instructions string, items []*rtItem) []engine.Message {
	var out []engine.Message
	if instructions != "" {
		out = append(out, engine.Message{Role: "system", Content: instructions})
	}
	names := map[string]string{} // call ids → the functions called
	for _, it := range items {
		switch it.Type {
		case "function_call":
			args := ollama.NewToolCallFunctionArguments()
			json.Unmarshal([]byte(cmp.Or(it.Arguments, "{}")), &args)
			names[it.CallID] = it.Name
			out = append(out, engine.Message{Role: "assistant", ToolCalls: []engine.ToolCall{{ID: it.CallID,
				Function: ollama.ToolCallFunction{Name: it.Name, Arguments: args}}}})
			continue
		case "function_call_output":
			out = append(out, engine.Message{Role: "tool", Content: it.Output, ToolCallID: it.CallID, ToolName: names[it.CallID]})
			continue
		}
		m := engine.Message{Role: it.Role}
		var parts []string
		for _, c := range it.Content {
			if t := strings.TrimSpace(c.text()); t != "" {
				parts = append(parts, t)
			}
			if c.image != nil {
				m.Images = append(m.Images, c.image)
			}
		}
		m.Content = strings.Join(parts, " ")
		if m.Content != "" || len(m.Images) > 0 {
			out = append(out, m)
		}
	}
	return out
}

// rtResponseParams is response.create's response.
type rtResponseParams struct {
	OutputModalities []string          `json:"output_modalities"`
	Modalities       []string          `json:"modalities"`
	Instructions     *string           `json:"instructions"`
	MaxOutputTokens  json.RawMessage   `json:"max_output_tokens"`
	Conversation     string            `json:"conversation"` // auto or none
	Input            []json.RawMessage `json:"input"`
	Metadata         map[string]string `json:"metadata"`
	Tools            []json.RawMessage `json:"tools"`
	ToolChoice       json.RawMessage   `json:"tool_choice"`
	Audio            *struct {
		Output *struct {
			Format *rtFormat       `json:"format"`
			Voice  json.RawMessage `json:"voice"`
		} `json:"output"`
	} `json:"audio"`
}

// createResponse takes response.create.
func (ss *rtSession) createResponse(b json.RawMessage) error {
	var p rtResponseParams
	if len(b) > 0 && !isNull(b) {
		if err := json.Unmarshal(b, &p); err != nil {
			return rtInvalid("invalid_value", "response", "response: %v", err)
		}
	}
	ss.mu.Lock()
	cfg := ss.cfg
	ss.mu.Unlock()
	mods, instructions, maxTokens, outFormat := cfg.Modalities, cfg.Instructions, cfg.MaxTokens, cfg.OutFormat
	if m := cmpOrSlice(p.OutputModalities, p.Modalities); m != nil {
		var rerr *rtError
		if mods, rerr = parseModalities(m, "response.output_modalities"); rerr != nil {
			return rerr
		}
	}
	if p.Instructions != nil {
		instructions = *p.Instructions
	}
	if p.MaxOutputTokens != nil {
		var rerr *rtError
		if maxTokens, rerr = parseMaxTokens(p.MaxOutputTokens, "response.max_output_tokens"); rerr != nil {
			return rerr
		}
	}
	tools, toolChoice := cfg.Tools, cfg.ToolChoice
	if p.Tools != nil || p.ToolChoice != nil {
		raw := cfg.ToolsRaw
		if p.Tools != nil {
			raw = p.Tools
		}
		ts, tc, rerr := parseRealtimeTools(raw, p.ToolChoice, "response")
		if rerr != nil {
			return rerr
		}
		tools = ts
		if p.ToolChoice != nil {
			toolChoice = tc
		}
	}
	if p.Audio != nil && p.Audio.Output != nil {
		if v := p.Audio.Output.Voice; v != nil {
			if name, rerr := parseVoice(v, "response.audio.output.voice"); rerr != nil {
				return rerr
			} else if name != cfg.Voice {
				return rtInvalid("invalid_value", "response.audio.output.voice", "a response speaks with the session's voice (%s): change it with session.update", cfg.Voice)
			}
		}
		if f := p.Audio.Output.Format; f != nil {
			var rerr *rtError
			if outFormat, rerr = checkFormat(*f, "response.audio.output.format"); rerr != nil {
				return rerr
			}
		}
	}
	inConversation := true
	switch p.Conversation {
	case "", "auto":
	case "none":
		inConversation = false
	default:
		return rtInvalid("invalid_value", "response.conversation", "conversation %s: want auto or none", quoteShort(p.Conversation))
	}
	var input []*rtItem
	if p.Input != nil {
		ss.mu.Lock()
		for i, raw := range p.Input {
			var ref struct {
				Type string `json:"type"`
				ID   string `json:"id"`
			}
			json.Unmarshal(raw, &ref)
			if ref.Type == "item_reference" {
				j := ss.find(ref.ID)
				if j < 0 {
					ss.mu.Unlock()
					return rtInvalid("item_not_found", fmt.Sprintf("response.input[%d].id", i), "no item %s in the conversation", quoteShort(ref.ID))
				}
				input = append(input, ss.items[j])
				continue
			}
			it, rerr := ss.s.parseItem(raw, fmt.Sprintf("response.input[%d]", i))
			if rerr == nil && slices.ContainsFunc(it.Content, func(c rtContent) bool { return c.audio != nil }) {
				rerr = rtInvalid("invalid_value", fmt.Sprintf("response.input[%d]", i), "audio in a response's input needs its transcript")
			}
			if rerr != nil {
				ss.mu.Unlock()
				return rerr
			}
			input = append(input, it)
		}
		ss.mu.Unlock()
	}
	o := rtRespOptions{modalities: mods, instructions: instructions, maxTokens: maxTokens, format: outFormat,
		inConversation: inConversation, input: input, useInput: p.Input != nil, metadata: p.Metadata, tools: tools, toolChoice: toolChoice}
	return ss.startResponse(o)
}

func cmpOrSlice(a, b []string) []string {
	if a != nil {
		return a
	}
	return b
}

// rtRespOptions are one response's settings.
type rtRespOptions struct {
	modalities     []string
	instructions   string
	maxTokens      int
	format         rtFormat
	inConversation bool
	input          []*rtItem
	useInput       bool // input replaces the conversation as the prompt
	metadata       map[string]string
	tools          []engine.Tool
	toolChoice     string
}

// startResponse begins an answer, unless one is under way.
func (ss *rtSession) startResponse(o rtRespOptions) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.resp != nil {
		return rtInvalid("conversation_already_has_active_response", "", "response %s is under way: cancel it or wait for its response.done", ss.resp.id)
	}
	items := ss.items
	if o.useInput {
		items = o.input
	}
	msgs := messagesOf(o.instructions, items)
	if len(msgs) == 0 || msgs[len(msgs)-1].Role == "system" && len(items) == 0 {
		return rtInvalid("invalid_value", "", "the conversation is empty: add an item (or speak) before asking for a response")
	}
	ctx, cancel := context.WithCancel(ss.ctx)
	r := &rtResponse{id: newID("resp_"), cancel: cancel, done: make(chan struct{})}
	ss.resp = r
	conv := ss.conv
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		defer close(r.done)
		defer cancel()
		ss.runResponse(ctx, r, conv, msgs, o)
	}()
	return nil
}

// stopResponse cancels r for reason and waits until it has stopped.
func (ss *rtSession) stopResponse(r *rtResponse, reason string) {
	ss.mu.Lock()
	if r.reason == "" {
		r.reason = reason
	}
	ss.mu.Unlock()
	r.cancel()
	<-r.done
}

// responseObject is the response as response.created and .done show it.
func (ss *rtSession) responseObject(r *rtResponse, o rtRespOptions, status string, details, usage any, output []*rtItem) map[string]any {
	var maxTokens any = "inf"
	if o.maxTokens > 0 {
		maxTokens = o.maxTokens
	}
	conversation := any("conv_" + strings.TrimPrefix(ss.id, "sess_"))
	if !o.inConversation {
		conversation = nil
	}
	if output == nil {
		output = []*rtItem{}
	}
	ss.mu.Lock()
	voice := ss.cfg.Voice
	ss.mu.Unlock()
	return map[string]any{"id": r.id, "object": "realtime.response", "status": status, "status_details": details,
		"output": output, "output_modalities": o.modalities, "conversation_id": conversation, "max_output_tokens": maxTokens,
		"metadata": o.metadata, "usage": usage,
		"audio": map[string]any{"output": map[string]any{"format": o.format, "voice": voice}}}
}

// runResponse generates and speaks one answer, reporting it as the API
// does; on its end the answer item holds what was said.
func (ss *rtSession) runResponse(ctx context.Context, r *rtResponse, conv *assist.Conversation, msgs []engine.Message, o rtRespOptions) {
	defer func() {
		ss.mu.Lock()
		if ss.resp == r {
			ss.resp = nil
		}
		ss.mu.Unlock()
	}()
	audioOut := o.modalities[0] == "audio"
	ss.send("response.created", map[string]any{"response": ss.responseObject(r, o, "in_progress", nil, nil, nil)})
	it := newItem("assistant")
	it.Status = "in_progress"
	ss.mu.Lock()
	var added map[string]any
	if o.inConversation {
		var rerr *rtError
		if added, rerr = ss.addItem(it, nil); rerr != nil {
			ss.mu.Unlock()
			ss.send("response.done", map[string]any{"response": ss.responseObject(r, o, "failed",
				map[string]any{"type": "failed", "error": rerr}, nil, nil)})
			return
		}
	}
	first := it.clone()
	ss.mu.Unlock()
	ref := map[string]any{"response_id": r.id, "item_id": it.ID, "output_index": 0, "content_index": 0}
	with := func(kv ...any) map[string]any {
		m := make(map[string]any, len(ref)+len(kv)/2)
		for k, v := range ref {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	ss.send("response.output_item.added", map[string]any{"response_id": r.id, "output_index": 0, "item": first})
	if added != nil {
		ss.send("conversation.item.added", added)
	}
	part := map[string]any{"type": "text", "text": ""}
	content := rtContent{Type: "output_text"}
	if audioOut {
		part = map[string]any{"type": "audio", "transcript": ""}
		empty := ""
		content = rtContent{Type: "output_audio", Transcript: &empty}
	}
	ss.mu.Lock()
	it.Content = []rtContent{content}
	ss.mu.Unlock()
	ss.send("response.content_part.added", with("part", part))

	var rs *engine.Resampler
	var transcript strings.Builder
	var firstAudio time.Time
	var sent time.Duration // audio sent, at the output rate
	sendAudio := func(samples []float32) error {
		chunk := int(realtimeAudioChunk.Seconds() * float64(o.format.rate()))
		for len(samples) > 0 {
			n := min(len(samples), chunk)
			b := encodeOutput(samples[:n], o.format)
			samples = samples[n:]
			sent += time.Duration(n) * time.Second / time.Duration(o.format.rate())
			if err := ss.send("response.output_audio.delta", with("delta", base64.StdEncoding.EncodeToString(b))); err != nil {
				return err
			}
		}
		return nil
	}
	reply, err := conv.Reply(ctx, 0, msgs, assist.ReplyOptions{TextOnly: !audioOut, MaxTokens: o.maxTokens, Tools: o.tools, ToolChoice: o.toolChoice}, func(ev assist.Event) error {
		if err := ctx.Err(); err != nil {
			return err // cut off: nothing more goes out
		}
		switch ev.Type {
		case assist.EventAnswerDelta:
			if !audioOut {
				return ss.send("response.output_text.delta", with("delta", ev.Text))
			}
		case assist.EventAudio:
			if rs == nil {
				var err error
				if rs, err = engine.NewResampler(ev.SampleRate, o.format.rate()); err != nil {
					return err
				}
			}
			if ev.Begins {
				d := ev.Text
				if transcript.Len() > 0 {
					d = " " + d
				}
				transcript.WriteString(d)
				if err := ss.send("response.output_audio_transcript.delta", with("delta", d)); err != nil {
					return err
				}
			}
			if firstAudio.IsZero() {
				firstAudio = time.Now()
				ss.setPlaying(r.id, it, firstAudio)
				if err := ss.send("output_audio_buffer.started", map[string]any{"response_id": r.id}); err != nil {
					return err
				}
			}
			return sendAudio(rs.Write(ev.Samples))
		}
		return nil
	})
	if err == nil && rs != nil {
		err = sendAudio(rs.Flush())
	}

	status, details := "completed", any(nil)
	ss.mu.Lock()
	reason := r.reason
	ss.mu.Unlock()
	switch {
	case err == nil:
	case ctx.Err() != nil && ss.ctx.Err() == nil:
		status = "cancelled"
		details = map[string]any{"type": "cancelled", "reason": cmp.Or(reason, "client_cancelled")}
	case ss.ctx.Err() != nil:
		return // the client is gone: nobody to tell
	default:
		status = "incomplete"
		ae := ss.s.classify(err)
		details = map[string]any{"type": "failed", "error": &rtError{Type: ae.Type, Code: ae.Code, Message: ae.Message}}
		if errors.Is(err, engine.ErrContextFull) {
			details = map[string]any{"type": "incomplete", "reason": "max_output_tokens"}
		} else {
			status = "failed"
		}
	}
	if err == nil && reply.Usage.FinishReason == engine.FinishLength {
		status, details = "incomplete", map[string]any{"type": "incomplete", "reason": "max_output_tokens"}
	}
	if status == "cancelled" && !firstAudio.IsZero() {
		ss.clearPlaying(r.id) // the client stops playing it
	}

	ss.mu.Lock()
	it.Status = "completed"
	if status != "completed" {
		it.Status = "incomplete"
	}
	if audioOut {
		said := transcript.String()
		it.sentences, it.audioLen = reply.Sentences, sent
		if status == "cancelled" && reason == "turn_detected" && !firstAudio.IsZero() {
			// Cut off by the user's speech: they heard what played since
			// the first audio went out.
			it.truncate(min(time.Since(firstAudio), sent))
		} else {
			if status != "completed" {
				said = reply.Said
			}
			it.Content[0].Transcript = &said
		}
	} else {
		it.Content[0].Text = reply.Said
	}
	final := it.clone()
	ss.mu.Unlock()
	if audioOut {
		ss.send("response.output_audio.done", with())
		ss.send("response.output_audio_transcript.done", with("transcript", *final.Content[0].Transcript))
		ss.send("response.content_part.done", with("part", map[string]any{"type": "audio", "transcript": *final.Content[0].Transcript}))
	} else {
		ss.send("response.output_text.done", with("text", final.Content[0].Text))
		ss.send("response.content_part.done", with("part", map[string]any{"type": "text", "text": final.Content[0].Text}))
	}
	ss.send("response.output_item.done", map[string]any{"response_id": r.id, "output_index": 0, "item": final})
	if o.inConversation {
		ss.send("conversation.item.done", map[string]any{"item": final})
	}
	// The tools the answer called: a function_call item each, after the
	// message.
	output := []*rtItem{final}
	for i, call := range reply.Usage.ToolCalls {
		if status == "cancelled" {
			break
		}
		args, _ := json.Marshal(call.Function.Arguments)
		fc := &rtItem{ID: newID("item_"), Object: "realtime.item", Type: "function_call", Status: "completed",
			CallID: call.ID, Name: call.Function.Name, Arguments: string(args)}
		idx := i + 1
		var addedFC map[string]any
		ss.mu.Lock()
		if o.inConversation {
			addedFC, _ = ss.addItem(fc, nil)
		}
		shown := fc.clone()
		ss.mu.Unlock()
		ss.send("response.output_item.added", map[string]any{"response_id": r.id, "output_index": idx, "item": shown})
		if addedFC != nil {
			ss.send("conversation.item.added", addedFC)
		}
		ids := map[string]any{"response_id": r.id, "item_id": fc.ID, "output_index": idx, "call_id": fc.CallID}
		delta := map[string]any{"delta": fc.Arguments}
		done := map[string]any{"name": fc.Name, "arguments": fc.Arguments}
		for k, v := range ids {
			delta[k], done[k] = v, v
		}
		ss.send("response.function_call_arguments.delta", delta)
		ss.send("response.function_call_arguments.done", done)
		ss.send("response.output_item.done", map[string]any{"response_id": r.id, "output_index": idx, "item": shown})
		if addedFC != nil {
			ss.send("conversation.item.done", map[string]any{"item": shown})
		}
		output = append(output, shown)
	}
	u := reply.Usage
	usage := map[string]any{"total_tokens": u.PromptTokens + len(u.Tokens), "input_tokens": u.PromptTokens, "output_tokens": len(u.Tokens),
		"input_token_details": map[string]any{"text_tokens": u.PromptTokens, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": u.CachedTokens,
			"cached_tokens_details": map[string]any{"text_tokens": u.CachedTokens, "audio_tokens": 0, "image_tokens": 0}},
		"output_token_details": map[string]any{"text_tokens": len(u.Tokens), "audio_tokens": 0}}
	ss.send("response.done", map[string]any{"response": ss.responseObject(r, o, status, details, usage, output)})
	if status != "cancelled" && !firstAudio.IsZero() {
		ss.schedulePlaybackEnd(r.id, firstAudio.Add(sent))
	}
}

// setPlaying notes that an answer's audio began to play.
func (ss *rtSession) setPlaying(respID string, it *rtItem, start time.Time) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.playing != nil {
		ss.playing.stop()
	}
	ss.playing = &rtPlayback{respID: respID, item: it, start: start}
}

// schedulePlaybackEnd sends output_audio_buffer.stopped when the client
// will have played the answer's audio.
func (ss *rtSession) schedulePlaybackEnd(respID string, end time.Time) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	p := ss.playing
	if p == nil || p.respID != respID {
		return
	}
	p.stop()
	p.timer = time.AfterFunc(time.Until(end), func() {
		ss.mu.Lock()
		if ss.playing != p {
			ss.mu.Unlock()
			return
		}
		ss.playing = nil
		ss.mu.Unlock()
		ss.send("output_audio_buffer.stopped", map[string]any{"response_id": respID})
	})
}

// clearPlaying ends an answer's playback early (barge-in, cancel).
func (ss *rtSession) clearPlaying(respID string) {
	ss.mu.Lock()
	p := ss.playing
	if p == nil || p.respID != respID {
		ss.mu.Unlock()
		return
	}
	p.stop()
	ss.playing = nil
	ss.mu.Unlock()
	ss.send("output_audio_buffer.cleared", map[string]any{"response_id": respID})
}

// startListener starts the turn detection when the session has one and a
// speech model; ss.mu is held.
func (ss *rtSession) startListener() {
	if ss.cfg.Turn == nil || ss.cfg.SpeechModel.Path == "" || ss.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(ss.ctx)
	l := &rtListener{src: newLiveSource(int(liveBuffer.Seconds() * engine.SampleRate)), cancel: cancel, done: make(chan struct{}), offset: ss.inTotal}
	ss.listener = l
	cfg := ss.cfg
	req := engine.ListenRequest{Model: cfg.SpeechModel.Path, Source: l.src, VAD: "energy",
		StreamOptions: engine.StreamOptions{VADParams: cfg.Turn.vadParams(), SpeechEvents: true, EagerFinal: true,
			Options: engine.TranscribeOptions{Language: transcriptionLanguage(cfg)}}}
	go func() {
		defer close(l.done)
		_, err := ss.s.be.Listen(ctx, req, func(ev engine.ListenEvent) error { return ss.onListen(l, cfg, ev) })
		if err != nil && ctx.Err() == nil {
			ss.sendErr(err, "")
			ss.mu.Lock()
			if ss.listener == l {
				ss.listener = nil // the next session.update starts another
			}
			ss.mu.Unlock()
		}
	}()
}

// stopListener stops the turn detection; ss.mu is held (and released
// while waiting).
func (ss *rtSession) stopListener() {
	l := ss.listener
	if l == nil {
		return
	}
	ss.listener = nil
	l.cancel()
	ss.mu.Unlock()
	<-l.done
	ss.mu.Lock()
}

// onListen turns the turn detection's events into the API's.
func (ss *rtSession) onListen(l *rtListener, cfg rtConfig, ev engine.ListenEvent) error {
	ms := func(d time.Duration) int64 {
		return (l.offset*1000)/engine.SampleRate + d.Milliseconds()
	}
	switch ev.Type {
	case engine.EventSpeechStarted:
		l.item, l.delta = newID("item_"), ""
		ss.send("input_audio_buffer.speech_started", map[string]any{"audio_start_ms": ms(ev.Start), "item_id": l.item})
		if cfg.Turn.InterruptResponse {
			ss.bargeIn()
		}
	case engine.EventSpeechStopped:
		ss.send("input_audio_buffer.speech_stopped", map[string]any{"audio_end_ms": ms(ev.End), "item_id": l.item})
		it := newItem("user", rtContent{Type: "input_audio"})
		it.ID = l.item
		ss.mu.Lock()
		added, rerr := ss.addItem(it, nil)
		ss.mu.Unlock()
		if rerr != nil {
			ss.sendError(rerr)
			l.item = ""
			return nil
		}
		ss.send("input_audio_buffer.committed", map[string]any{"previous_item_id": added["previous_item_id"], "item_id": it.ID})
		ss.send("conversation.item.added", added)
	case engine.EventPartial:
		if cfg.Transcription != nil && l.item != "" && strings.HasPrefix(ev.Committed, l.delta) && len(ev.Committed) > len(l.delta) {
			d := ev.Committed[len(l.delta):]
			l.delta = ev.Committed
			ss.send("conversation.item.input_audio_transcription.delta", map[string]any{"item_id": l.item, "content_index": 0, "delta": d})
		}
	case engine.EventFinal:
		ss.mu.Lock()
		i := ss.find(l.item)
		var it *rtItem
		if i >= 0 {
			it = ss.items[i]
		}
		ss.mu.Unlock()
		l.item = ""
		if it == nil {
			return nil // deleted meanwhile
		}
		text := strings.TrimSpace(ev.Text)
		ss.completeTranscription(it, 0, text, (ev.End - ev.Start).Seconds(), cfg)
		if cfg.Turn.CreateResponse && text != "" {
			ss.mu.Lock()
			o := rtRespOptions{modalities: ss.cfg.Modalities, instructions: ss.cfg.Instructions, maxTokens: ss.cfg.MaxTokens,
				format: ss.cfg.OutFormat, inConversation: true, tools: ss.cfg.Tools, toolChoice: ss.cfg.ToolChoice}
			ss.mu.Unlock()
			if err := ss.startResponse(o); err != nil {
				ss.sendErr(err, "")
			}
		}
	}
	return nil
}

// bargeIn stops the answer the user speaks over: its generation and
// speech at once, its item holding what was heard.
func (ss *rtSession) bargeIn() {
	ss.mu.Lock()
	r, p := ss.resp, ss.playing
	ss.mu.Unlock()
	if r != nil {
		ss.stopResponse(r, "turn_detected")
		return // the response's end clears its playback
	}
	if p == nil {
		return
	}
	// The answer is generated but still playing: cut it where the user
	// spoke.
	heard := time.Since(p.start)
	ss.mu.Lock()
	if ss.playing != p {
		ss.mu.Unlock()
		return
	}
	cut := heard < p.item.audioLen
	if cut {
		p.item.truncate(heard)
	}
	ss.mu.Unlock()
	ss.clearPlaying(p.respID)
	if cut {
		ss.send("conversation.item.truncated", map[string]any{"item_id": p.item.ID, "content_index": 0, "audio_end_ms": heard.Milliseconds()})
	}
}
