package speech

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Output formats of a transcript.
const (
	FormatText = "txt"
	FormatJSON = "json"
)

// Formats lists the output formats Write knows.
var Formats = []string{FormatText, FormatJSON}

// Write renders t in format to w.
func Write(w io.Writer, t *Transcript, format string) error {
	switch format {
	case FormatText:
		return WriteText(w, t)
	case FormatJSON:
		return WriteJSON(w, t)
	}
	return fmt.Errorf("unknown output format %q (want %s)", format, strings.Join(Formats, ", "))
}

// WriteText writes one line per segment, without timestamps.
func WriteText(w io.Writer, t *Transcript) error {
	for _, s := range t.Segments {
		if _, err := fmt.Fprintln(w, strings.TrimSpace(s.Text)); err != nil {
			return err
		}
	}
	return nil
}

type jsonToken struct {
	ID      int     `json:"id"`
	Text    string  `json:"text"`
	Prob    float32 `json:"p"`
	LogProb float32 `json:"logprob"`
}

type jsonSegment struct {
	ID     int         `json:"id"`
	Start  float64     `json:"start"`
	End    float64     `json:"end"`
	Text   string      `json:"text"`
	Tokens []jsonToken `json:"tokens"`
}

type jsonTranscript struct {
	Language string        `json:"language"`
	Duration float64       `json:"duration"`
	Text     string        `json:"text"`
	Segments []jsonSegment `json:"segments"`
}

func seconds(d time.Duration) float64 { return float64(d.Milliseconds()) / 1000 }

// WriteJSON writes the transcript with its segments (start and end in
// seconds) and their tokens with probabilities.
func WriteJSON(w io.Writer, t *Transcript) error {
	out := jsonTranscript{Language: t.Language, Duration: seconds(t.Duration), Text: t.Text(), Segments: []jsonSegment{}}
	for i, s := range t.Segments {
		js := jsonSegment{ID: i, Start: seconds(s.Start), End: seconds(s.End), Text: s.Text, Tokens: []jsonToken{}}
		for _, tok := range s.Tokens {
			js.Tokens = append(js.Tokens, jsonToken{ID: tok.ID, Text: tok.Text, Prob: tok.Prob, LogProb: tok.LogProb})
		}
		out.Segments = append(out.Segments, js)
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
