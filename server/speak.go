package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/store"
)

// speechRequest is OpenAI's POST /v1/audio/speech body.
type speechRequest struct {
	Model          string   `json:"model"`
	Input          string   `json:"input"`
	Voice          string   `json:"voice"`
	ResponseFormat string   `json:"response_format"`
	Speed          *float64 `json:"speed"`
	Instructions   string   `json:"instructions"` // accepted, not followed: the voices take no instructions
	StreamFormat   string   `json:"stream_format"`
}

// speechRate is the rate of the audio /v1/audio/speech returns, as
// OpenAI's (its raw pcm is documented as 24 kHz).
const speechRate = 24000

// maxSpeechInput is OpenAI's limit on input, in characters.
const maxSpeechInput = 4096

// speechAliases are OpenAI's speech model names, spoken by the built-in
// voice so that clients written for OpenAI work unchanged.
var speechAliases = []string{"tts-1", "tts-1-hd", "gpt-4o-mini-tts"}

// openAIVoices maps OpenAI's voice names to espeak-ng's English voices and
// variants, so that their requests speak.
var openAIVoices = map[string]string{
	"alloy": "en-us", "ash": "en-us+m3", "ballad": "en-gb+m2", "coral": "en-us+f2", "echo": "en-us+m7",
	"fable": "en-gb", "nova": "en-us+f3", "onyx": "en-us+m1", "sage": "en-us+f4", "shimmer": "en-us+f5", "verse": "en-us+m5",
}

// speechContentTypes are the media types of the formats.
var speechContentTypes = map[string]string{"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac"}

func (s *Server) handleSpeech(w http.ResponseWriter, r *http.Request) error {
	var req speechRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	switch n := utf8.RuneCountInString(req.Input); {
	case strings.TrimSpace(req.Input) == "":
		return badRequest("input", "input is empty: send the text to speak")
	case n > maxSpeechInput:
		return badRequest("input", "input is %d characters, over the limit of %d", n, maxSpeechInput)
	}
	format := req.ResponseFormat
	if format == "" {
		format = "wav"
	}
	if _, ok := speechContentTypes[format]; !ok {
		return badRequest("response_format", "response_format %s: owl writes wav, pcm and flac (mp3, opus and aac need encoders owl does not carry)", quoteShort(format))
	}
	if req.StreamFormat != "" && req.StreamFormat != "audio" && req.StreamFormat != "sse" {
		return badRequest("stream_format", "stream_format %s: want audio or sse", quoteShort(req.StreamFormat))
	}
	opts := engine.SpeakOptions{}
	if req.Speed != nil {
		opts.Speed = *req.Speed
	}
	v, opts, err := s.openVoice(r.Context(), req.Model, req.Voice, opts)
	if err != nil {
		return err
	}
	defer v.Close()
	rs, err := engine.NewResampler(v.SampleRate(), speechRate)
	if err != nil {
		return err
	}
	rc := http.NewResponseController(w)
	var sink func([]byte) error
	var sse *eventStream
	if req.StreamFormat == "sse" {
		sse = newSSE(w)
		sink = func(b []byte) error {
			return sse.send(struct {
				Type  string `json:"type"`
				Audio string `json:"audio"`
			}{"speech.audio.delta", base64.StdEncoding.EncodeToString(b)})
		}
	} else {
		w.Header().Set("Content-Type", speechContentTypes[format])
		w.Header().Set("X-Sample-Rate", "24000")
		sink = func(b []byte) error {
			if _, err := w.Write(b); err != nil {
				return err
			}
			return rc.Flush()
		}
	}
	var buf bytes.Buffer
	aw, err := engine.NewAudioWriter(&buf, format, speechRate)
	if err != nil {
		return err
	}
	flush := func() error {
		if buf.Len() == 0 {
			return nil
		}
		err := sink(bytes.Clone(buf.Bytes()))
		buf.Reset()
		return err
	}
	err = v.Speak(r.Context(), req.Input, opts, func(a engine.SpokenAudio) error {
		if err := aw.Write(rs.Write(a.Samples)); err != nil {
			return err
		}
		return flush()
	})
	if err == nil {
		if err = aw.Write(rs.Flush()); err == nil {
			if err = aw.Close(); err == nil {
				err = flush()
			}
		}
	}
	if err != nil {
		if sse != nil {
			return s.streamError(sse, apiOpenAI, err)
		}
		return err // before the first write it gets its status; after, it is logged
	}
	if sse != nil {
		return sse.send(struct {
			Type string `json:"type"`
		}{"speech.audio.done"})
	}
	return nil
}

// openVoice opens the voice a request names: model is "", an OpenAI
// speech model name or BuiltinVoice for espeak-ng's voice, or a Piper
// voice the store holds; voice is an OpenAI voice name (spoken by an
// espeak-ng variant), an espeak-ng voice, or a Piper voice's speaker (by
// name or number). opts come back with the voice and speaker set, checked.
func (s *Server) openVoice(ctx context.Context, modelName, voice string, opts engine.SpeakOptions) (*engine.Voice, engine.SpeakOptions, error) {
	model, config := modelName, ""
	if model == "" || slices.Contains(speechAliases, model) {
		model = engine.BuiltinVoice
	}
	if model != engine.BuiltinVoice {
		m, err := s.models.modelOfKind(model, "model", store.KindVoice, "a voice")
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
				ae.Message = "voice model " + quoteShort(modelName) + " not found: the voices are " + engine.BuiltinVoice +
					" (espeak-ng's, also as " + strings.Join(speechAliases, ", ") + ") and the Piper voices GET /v1/models lists"
			}
			return nil, opts, err
		}
		model, config = m.Path, m.ProjectorPath
	}
	opts.Voice = voice
	if v, ok := openAIVoices[strings.ToLower(voice)]; ok {
		opts.Voice = v
	}
	piper := model != engine.BuiltinVoice
	if piper {
		opts.Voice = "" // a Piper voice is its model; "voice" may name one of its speakers
	}
	v, err := s.be.OpenVoice(ctx, model, config)
	if err != nil {
		return nil, opts, err
	}
	if names := v.Speakers(); piper && len(names) > 0 && voice != "" {
		if i := slices.Index(names, voice); i >= 0 {
			opts.Speaker = i
		} else if n, err := strconv.Atoi(voice); err == nil {
			opts.Speaker = n
		} else if _, openAI := openAIVoices[strings.ToLower(voice)]; !openAI {
			v.Close()
			return nil, opts, badRequest("voice", "voice %s: the voice's speakers are %s", quoteShort(voice), strings.Join(names[:min(len(names), 8)], ", "))
		}
		if opts.Speaker < 0 || opts.Speaker >= len(names) {
			v.Close()
			return nil, opts, badRequest("voice", "speaker %d: the voice has speakers 0 to %d", opts.Speaker, len(names)-1)
		}
	}
	if err := v.Check(opts); err != nil {
		v.Close()
		if errors.Is(err, engine.ErrUnknownVoice) {
			return nil, opts, badRequest("voice", "voice %s: %v", quoteShort(voice), err)
		}
		return nil, opts, badRequest("speed", "%v", err)
	}
	return v, opts, nil
}

// quoteShort quotes a client's string, cut to 60 bytes.
func quoteShort(s string) string {
	if len(s) > 60 {
		s = s[:60] + "…"
	}
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}
