package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/owlengine/owl/engine"
)

// transcriptionForm is the multipart form of /v1/audio/transcriptions and
// /v1/audio/translations.
type transcriptionForm struct {
	File           []byte
	FileName       string
	Model          string
	Language       string
	Prompt         string
	Temperature    *float64
	ResponseFormat string
	Granularities  []string
	Stream         bool
}

// Transcription response formats.
var transcriptionFormats = []string{"json", "text", "srt", "vtt", "verbose_json"}

// maxFormField bounds a text field of the form.
const maxFormField = 64 << 10

// parseTranscriptionForm reads the multipart form; the body is already
// bounded by the server's limit.
func parseTranscriptionForm(r *http.Request) (*transcriptionForm, error) {
	if err := requireContentType(r, "multipart/form-data"); err != nil {
		return nil, err
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, badRequest("", "malformed multipart form: %v", err)
	}
	return readTranscriptionForm(mr)
}

func readTranscriptionForm(mr *multipart.Reader) (*transcriptionForm, error) {
	f := &transcriptionForm{}
	hasFile := false
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, err
			}
			return nil, badRequest("", "malformed multipart form: %v", err)
		}
		name := p.FormName()
		if name == "file" {
			if hasFile {
				return nil, badRequest("file", "more than one file in the form")
			}
			hasFile = true
			f.FileName = p.FileName()
			if f.File, err = io.ReadAll(p); err != nil {
				var mbe *http.MaxBytesError
				if errors.As(err, &mbe) {
					return nil, err
				}
				return nil, badRequest("file", "reading the file part: %v", err)
			}
			continue
		}
		b, err := io.ReadAll(io.LimitReader(p, maxFormField+1))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, err
			}
			return nil, badRequest(name, "reading form field %q: %v", truncate(name, 40), err)
		}
		if len(b) > maxFormField {
			return nil, badRequest(name, "form field %q is over %d bytes", truncate(name, 40), maxFormField)
		}
		v := strings.TrimSpace(string(b))
		switch name {
		case "model":
			f.Model = v
		case "language":
			f.Language = v
		case "prompt":
			f.Prompt = v
		case "temperature":
			t, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsNaN(t) || t < 0 || t > 1 {
				return nil, badRequest("temperature", "temperature %q: want a number from 0 to 1", truncate(v, 40))
			}
			f.Temperature = &t
		case "response_format":
			f.ResponseFormat = v
		case "timestamp_granularities[]", "timestamp_granularities":
			f.Granularities = append(f.Granularities, v)
		case "stream":
			s, err := strconv.ParseBool(v)
			if err != nil {
				return nil, badRequest("stream", "stream %q: want true or false", truncate(v, 40))
			}
			f.Stream = s
		}
	}
	if !hasFile {
		return nil, badRequest("file", "no file: send the audio as the multipart field \"file\"")
	}
	if len(f.File) == 0 {
		return nil, badRequest("file", "the file is empty")
	}
	if f.ResponseFormat == "" {
		f.ResponseFormat = "json"
	}
	ok := false
	for _, t := range transcriptionFormats {
		ok = ok || f.ResponseFormat == t
	}
	if !ok {
		return nil, badRequest("response_format", "response_format %q: want %s", truncate(f.ResponseFormat, 40), strings.Join(transcriptionFormats, ", "))
	}
	for _, g := range f.Granularities {
		switch g {
		case "segment":
		case "word":
			if f.ResponseFormat != "verbose_json" {
				return nil, badRequest("timestamp_granularities", "word timestamps need response_format verbose_json")
			}
		default:
			return nil, badRequest("timestamp_granularities", "timestamp granularity %q: want segment or word", truncate(g, 40))
		}
	}
	return f, nil
}

func (f *transcriptionForm) wants(granularity string) bool {
	for _, g := range f.Granularities {
		if g == granularity {
			return true
		}
	}
	return false
}

// temperatures is the fallback ladder from the form's temperature: 0 (or
// none) starts at 0 and rises as decoding fails, as OpenAI's does.
func (f *transcriptionForm) temperatures() []float64 {
	if f.Temperature == nil || *f.Temperature == 0 {
		return nil // the engine's default ladder
	}
	var out []float64
	for t := *f.Temperature; t <= 1.0001; t += 0.2 {
		out = append(out, math.Round(t*100)/100)
	}
	return out
}

func (s *Server) handleTranscriptions(w http.ResponseWriter, r *http.Request) error {
	return s.transcribe(w, r, false)
}

func (s *Server) handleTranslations(w http.ResponseWriter, r *http.Request) error {
	return s.transcribe(w, r, true)
}

func (s *Server) transcribe(w http.ResponseWriter, r *http.Request, translate bool) error {
	f, err := parseTranscriptionForm(r)
	if err != nil {
		return err
	}
	m, err := s.models.speechModel(f.Model)
	if err != nil {
		return err
	}
	samples, err := engine.DecodeAudio(bytes.NewReader(f.File), int64(len(f.File)), s.lim.MaxAudio)
	if err != nil {
		return err
	}
	f.File = nil // the samples are what is needed now
	req := engine.TranscribeRequest{Model: m.Path, Samples: samples, TranscribeOptions: engine.TranscribeOptions{
		Language: f.Language, Translate: translate, Prompt: f.Prompt, Temperatures: f.temperatures(),
		WordTimestamps: f.wants("word"), Priority: int(priority(r)),
	}}
	task := "transcribe"
	if translate {
		task = "translate"
	}
	if !f.Stream {
		tr, err := s.be.Transcribe(r.Context(), req)
		if err != nil {
			return err
		}
		return writeTranscript(w, tr, f, task)
	}
	// Streaming: each segment as it is decoded, then the whole text.
	ev := newSSE(w)
	var mu sync.Mutex // guards ev: segments may be reported from the decoder's goroutine
	var sendErr error
	req.OnSegment = func(seg engine.Segment) {
		mu.Lock()
		defer mu.Unlock()
		if sendErr == nil && seg.Text != "" {
			sendErr = ev.send(transcriptDelta{Type: "transcript.text.delta", Delta: seg.Text})
		}
	}
	tr, err := s.be.Transcribe(r.Context(), req)
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		return s.streamError(ev, apiOpenAI, err)
	}
	if sendErr != nil {
		return nil // the client is gone
	}
	ev.send(transcriptDone{Type: "transcript.text.done", Text: tr.Text(), Usage: audioUsage(tr)})
	return nil
}

// writeTranscript sends tr in the form's response format.
func writeTranscript(w http.ResponseWriter, tr *engine.Transcript, f *transcriptionForm, task string) error {
	use := audioUsage(tr)
	switch f.ResponseFormat {
	case "json":
		writeJSON(w, http.StatusOK, transcriptJSON{Text: tr.Text(), Usage: use})
	case "text":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, strings.ToValidUTF8(tr.Text(), "\uFFFD"))
	case "srt", "vtt":
		var b bytes.Buffer
		if err := engine.WriteTranscript(&b, tr, f.ResponseFormat); err != nil {
			return err
		}
		ct := "application/x-subrip"
		if f.ResponseFormat == "vtt" {
			ct = "text/vtt"
		}
		w.Header().Set("Content-Type", ct+"; charset=utf-8")
		w.Write(bytes.ToValidUTF8(b.Bytes(), []byte("\uFFFD")))
	case "verbose_json":
		segs := []verboseSegment{}
		words := []verboseWord{}
		for i, s := range tr.Segments {
			toks := []int{}
			for _, t := range s.Tokens {
				toks = append(toks, t.ID)
			}
			segs = append(segs, verboseSegment{ID: i, Seek: int(s.Start / (10 * time.Millisecond)), Start: s.Start.Seconds(), End: s.End.Seconds(),
				Text: s.Text, Tokens: toks, Temperature: s.Temperature, AvgLogProb: s.AvgLogProb,
				CompressionRatio: s.CompressionRatio, NoSpeechProb: s.NoSpeechProb})
			for _, wd := range s.Words {
				words = append(words, verboseWord{Word: strings.TrimSpace(wd.Text), Start: wd.Start.Seconds(), End: wd.End.Seconds()})
			}
		}
		lang := engine.LanguageName(tr.Language)
		if lang == "" {
			lang = tr.Language
		}
		out := verboseTranscript{Task: task, Language: lang, Duration: tr.Duration.Seconds(), Text: tr.Text(), Usage: use}
		if len(f.Granularities) == 0 || f.wants("segment") {
			out.Segments = &segs
		}
		if f.wants("word") {
			out.Words = &words
		}
		writeJSON(w, http.StatusOK, out)
	}
	return nil
}

// OpenAI's transcription bodies.
type (
	// audioUsageBody is a transcription's usage: the audio's seconds,
	// rounded up.
	audioUsageBody struct {
		Type    string  `json:"type"` // "duration"
		Seconds float64 `json:"seconds"`
	}
	transcriptJSON struct {
		Text  string         `json:"text"`
		Usage audioUsageBody `json:"usage"`
	}
	transcriptDelta struct {
		Type  string `json:"type"` // "transcript.text.delta"
		Delta string `json:"delta"`
	}
	transcriptDone struct {
		Type  string         `json:"type"` // "transcript.text.done"
		Text  string         `json:"text"`
		Usage audioUsageBody `json:"usage"`
	}
	verboseTranscript struct {
		Task     string            `json:"task"`
		Language string            `json:"language"`
		Duration float64           `json:"duration"`
		Text     string            `json:"text"`
		Usage    audioUsageBody    `json:"usage"`
		Segments *[]verboseSegment `json:"segments,omitempty"` // when asked for (the default)
		Words    *[]verboseWord    `json:"words,omitempty"`    // with timestamp_granularities[]=word
	}
	verboseSegment struct {
		ID               int     `json:"id"`
		Seek             int     `json:"seek"`
		Start            float64 `json:"start"`
		End              float64 `json:"end"`
		Text             string  `json:"text"`
		Tokens           []int   `json:"tokens"`
		Temperature      float64 `json:"temperature"`
		AvgLogProb       float64 `json:"avg_logprob"`
		CompressionRatio float64 `json:"compression_ratio"`
		NoSpeechProb     float64 `json:"no_speech_prob"`
	}
	verboseWord struct {
		Word  string  `json:"word"`
		Start float64 `json:"start"`
		End   float64 `json:"end"`
	}
)

func audioUsage(tr *engine.Transcript) audioUsageBody {
	return audioUsageBody{Type: "duration", Seconds: math.Ceil(tr.Duration.Seconds())}
}
