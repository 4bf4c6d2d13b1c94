package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/testmodel"
)

// speechParams asks for text in format with the SDK.
func speechParams(text, voice string, format openai.AudioSpeechNewParamsResponseFormat) openai.AudioSpeechNewParams {
	return openai.AudioSpeechNewParams{Model: openai.SpeechModelTTS1, Input: text,
		Voice: openai.AudioSpeechNewParamsVoiceUnion{OfString: openai.String(voice)}, ResponseFormat: format}
}

// Each format decodes to 24-kHz audio as long as the speech: the espeak-ng
// voice speaks the sentence in about 2.3 s at its pace, twice as fast at
// speed 2.
func TestSpeechFormats(t *testing.T) {
	ts := testServer(t, Config{})
	c := openAIClient(ts.URL)
	const text = "Hello there. This is owl, speaking."
	lengths := map[string]float64{}
	for _, format := range []openai.AudioSpeechNewParamsResponseFormat{"wav", "flac", "pcm"} {
		resp, err := c.Audio.Speech.New(context.Background(), speechParams(text, "alloy", format))
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := speechContentTypes[string(format)]; resp.Header.Get("Content-Type") != want {
			t.Errorf("%s: content type %q", format, resp.Header.Get("Content-Type"))
		}
		var samples []float32
		if format == "pcm" {
			for i := 0; i+1 < len(body); i += 2 {
				samples = append(samples, float32(int16(binary.LittleEndian.Uint16(body[i:])))/32768)
			}
		} else {
			a, err := audio.Decode(bytes.NewReader(body), int64(len(body)), audio.Limits{})
			if err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			if a.SampleRate != speechRate || a.Channels != 1 {
				t.Fatalf("%s: %d Hz, %d channels", format, a.SampleRate, a.Channels)
			}
			samples = a.Samples
		}
		seconds := float64(len(samples)) / speechRate
		peak := 0.0
		for _, v := range samples {
			peak = math.Max(peak, math.Abs(float64(v)))
		}
		lengths[string(format)] = seconds
		if seconds < 1.5 || seconds > 4 || peak < 0.05 {
			t.Errorf("%s: %.2f s of audio, peak %.2f", format, seconds, peak)
		}
	}
	if math.Abs(lengths["wav"]-lengths["pcm"]) > 0.3 || math.Abs(lengths["flac"]-lengths["pcm"]) > 0.3 {
		t.Errorf("formats differ in length: %v", lengths)
	}
	p := speechParams(text, "nova", "pcm")
	p.Speed = openai.Float(2)
	resp, err := c.Audio.Speech.New(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if fast := float64(len(body)/2) / speechRate; fast > 0.7*lengths["pcm"] {
		t.Errorf("speed 2: %.2f s, at speed 1 %.2f s", fast, lengths["pcm"])
	}
}

// Audio arrives sentence by sentence: the first sentence's bytes come
// before the last sentence is made.
func TestSpeechStreams(t *testing.T) {
	ts := testServer(t, Config{})
	text := strings.Repeat("This sentence is one of many that owl speaks one after another. ", 30)
	body, _ := json.Marshal(map[string]any{"model": "espeak", "input": text, "voice": "en-us", "response_format": "pcm"})
	start := time.Now()
	resp, err := http.Post(ts.URL+"/v1/audio/speech", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	first := make([]byte, 4096)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	firstAt := time.Since(start)
	rest, err := io.ReadAll(resp.Body)
	total := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first bytes after %v, all %d bytes after %v", firstAt, len(first)+len(rest), total)
	// Thirty sentences take thirty syntheses; the first needs one.
	if firstAt > total/4 {
		t.Errorf("the first audio came after %v of %v: not streamed", firstAt, total)
	}

	// stream_format=sse: speech.audio.delta events with base64 audio, then
	// speech.audio.done.
	body, _ = json.Marshal(map[string]any{"model": "tts-1", "input": "One. Two. Three.", "voice": "en-us", "response_format": "pcm", "stream_format": "sse"})
	resp, err = http.Post(ts.URL+"/v1/audio/speech", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	deltas, bytesIn, done := 0, 0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev struct{ Type, Audio string }
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("event %q: %v", line, err)
		}
		switch ev.Type {
		case "speech.audio.delta":
			b, err := base64.StdEncoding.DecodeString(ev.Audio)
			if err != nil {
				t.Fatal(err)
			}
			deltas++
			bytesIn += len(b)
		case "speech.audio.done":
			done = true
		}
	}
	if deltas < 3 || bytesIn < speechRate || !done || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("sse: %d deltas, %d bytes, done %v, %s", deltas, bytesIn, done, resp.Header.Get("Content-Type"))
	}
}

func TestSpeechErrors(t *testing.T) {
	ts := testServer(t, Config{})
	c := openAIClient(ts.URL)
	for _, tc := range []struct {
		name   string
		p      openai.AudioSpeechNewParams
		status int
		param  string
	}{
		{"unknown voice", speechParams("hi", "klaxon", "wav"), 400, "voice"},
		{"empty input", speechParams("  ", "alloy", "wav"), 400, "input"},
		{"oversize input", speechParams(strings.Repeat("a", maxSpeechInput+1), "alloy", "wav"), 400, "input"},
		{"unknown format", speechParams("hi", "alloy", "mp3"), 400, "response_format"},
		{"bad speed", func() openai.AudioSpeechNewParams {
			p := speechParams("hi", "alloy", "wav")
			p.Speed = openai.Float(9)
			return p
		}(), 400, "speed"},
		{"unknown model", func() openai.AudioSpeechNewParams {
			p := speechParams("hi", "alloy", "wav")
			p.Model = "piper:nope"
			return p
		}(), 404, "model"},
	} {
		_, err := c.Audio.Speech.New(context.Background(), tc.p)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != tc.status || apiErr.Param != tc.param || apiErr.Message == "" {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// The built-in voice is listed among the models.
	list, err := c.Models.List(context.Background())
	if err != nil || len(list.Data) == 0 || list.Data[0].ID != "espeak" {
		t.Fatalf("models: %+v %v", list, err)
	}
}

// A Piper voice lying in the models folder speaks through the same route,
// named by its file, and is listed among the models.
func TestSpeechPiperVoice(t *testing.T) {
	dir := t.TempDir()
	if _, err := testmodel.WritePiperVoice(dir, "small-voice", testmodel.PiperSmall()); err != nil {
		t.Fatal(err)
	}
	e := engine.New(engine.Options{Threads: 2, CacheDir: filepath.Join(dir, "cache")})
	t.Cleanup(func() { e.Close() })
	ts := testServer(t, Config{ModelsDir: dir, Engine: e})
	c := openAIClient(ts.URL)
	p := speechParams("Hello there. This is a Piper voice.", "alloy", "wav")
	p.Model = "small-voice"
	resp, err := c.Audio.Speech.New(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	a, err := audio.Decode(bytes.NewReader(body), int64(len(body)), audio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	// Two sentences, each with Piper's 0.2 s of silence after it.
	if a.SampleRate != speechRate || a.Duration() < 0.5 {
		t.Fatalf("%d Hz, %.2f s", a.SampleRate, a.Duration())
	}
	list, err := c.Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range list.Data {
		found = found || m.ID == "small-voice"
	}
	if !found {
		t.Fatalf("the voice is not listed: %+v", list.Data)
	}
}

// A multi-speaker voice's speakers are named by "voice".
func TestSpeechPiperSpeakers(t *testing.T) {
	dir := t.TempDir()
	if _, err := testmodel.WritePiperVoice(dir, "multi", testmodel.PiperMulti()); err != nil {
		t.Fatal(err)
	}
	e := engine.New(engine.Options{Threads: 2, CacheDir: filepath.Join(dir, "cache")})
	t.Cleanup(func() { e.Close() })
	ts := testServer(t, Config{ModelsDir: dir, Engine: e})
	c := openAIClient(ts.URL)
	for voice, status := range map[string]int{"speaker2": 200, "1": 200, "alloy": 200, "nobody": 400, "7": 400} {
		p := speechParams("Hello.", voice, "pcm")
		p.Model = "multi"
		resp, err := c.Audio.Speech.New(context.Background(), p)
		var apiErr *openai.Error
		switch {
		case status == 200 && err != nil:
			t.Errorf("%s: %v", voice, err)
		case status == 200:
			resp.Body.Close()
		case !errors.As(err, &apiErr) || apiErr.StatusCode != status || apiErr.Param != "voice":
			t.Errorf("%s: %v", voice, err)
		}
	}
}
