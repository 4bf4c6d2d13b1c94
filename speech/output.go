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
	FormatSRT  = "srt"
	FormatVTT  = "vtt"
	FormatLRC  = "lrc"
)

// Formats lists the output formats Write knows.
var Formats = []string{FormatText, FormatSRT, FormatVTT, FormatJSON, FormatLRC}

// Write renders t in format to w.
func Write(w io.Writer, t *Transcript, format string) error {
	switch format {
	case FormatText:
		return WriteText(w, t)
	case FormatJSON:
		return WriteJSON(w, t)
	case FormatSRT:
		return WriteSRT(w, t)
	case FormatVTT:
		return WriteVTT(w, t)
	case FormatLRC:
		return WriteLRC(w, t)
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

// clock formats d as HH:MM:SS followed by sep and milliseconds.
func clock(d time.Duration, sep string) string {
	if d < 0 {
		d = 0
	}
	ms := d.Milliseconds()
	return fmt.Sprintf("%02d:%02d:%02d%s%03d", ms/3600000, ms/60000%60, ms/1000%60, sep, ms%1000)
}

// WriteSRT writes SubRip subtitles: numbered cues with HH:MM:SS,mmm times.
func WriteSRT(w io.Writer, t *Transcript) error {
	for i, s := range t.Segments {
		if _, err := fmt.Fprintf(w, "%d\n%s --> %s\n%s\n\n", i+1, clock(s.Start, ","), clock(s.End, ","), cueText(s.Text)); err != nil {
			return err
		}
	}
	return nil
}

// WriteVTT writes WebVTT subtitles: the header, then cues with HH:MM:SS.mmm times.
func WriteVTT(w io.Writer, t *Transcript) error {
	if _, err := io.WriteString(w, "WEBVTT\n\n"); err != nil {
		return err
	}
	for _, s := range t.Segments {
		if _, err := fmt.Fprintf(w, "%s --> %s\n%s\n\n", clock(s.Start, "."), clock(s.End, "."), cueText(s.Text)); err != nil {
			return err
		}
	}
	return nil
}

// cueText is a segment's text fit for a subtitle cue: trimmed, without the
// blank lines and "-->" that would end or confuse a cue.
func cueText(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "-->", "->")
	for strings.Contains(s, "\n\n") {
		s = strings.ReplaceAll(s, "\n\n", "\n")
	}
	return s
}

// WriteLRC writes LRC lyrics: one [mm:ss.xx] line per segment.
func WriteLRC(w io.Writer, t *Transcript) error {
	if _, err := io.WriteString(w, "[by:owl]\n"); err != nil {
		return err
	}
	for _, s := range t.Segments {
		cs := s.Start.Milliseconds() / 10
		if _, err := fmt.Fprintf(w, "[%02d:%02d.%02d]%s\n", cs/6000, cs/100%60, cs%100, strings.ReplaceAll(strings.TrimSpace(s.Text), "\n", " ")); err != nil {
			return err
		}
	}
	return nil
}

type jsonToken struct {
	ID      int      `json:"id"`
	Text    string   `json:"text"`
	Prob    float32  `json:"p"`
	LogProb float32  `json:"logprob"`
	Start   *float64 `json:"start,omitempty"`
	End     *float64 `json:"end,omitempty"`
}

type jsonWord struct {
	Word  string  `json:"word"`
	Start float64 `json:"start"`
	End   float64 `json:"end"`
	Prob  float32 `json:"probability"`
}

type jsonSegment struct {
	ID               int         `json:"id"`
	Start            float64     `json:"start"`
	End              float64     `json:"end"`
	Text             string      `json:"text"`
	Tokens           []jsonToken `json:"tokens"`
	Words            []jsonWord  `json:"words,omitempty"`
	Temperature      float64     `json:"temperature"`
	AvgLogProb       float64     `json:"avg_logprob"`
	CompressionRatio float64     `json:"compression_ratio"`
	NoSpeechProb     float64     `json:"no_speech_prob"`
}

type jsonTranscript struct {
	Language     string        `json:"language"`
	LanguageProb float64       `json:"language_probability,omitempty"`
	Duration     float64       `json:"duration"`
	Text         string        `json:"text"`
	Segments     []jsonSegment `json:"segments"`
}

func seconds(d time.Duration) float64 { return float64(d.Milliseconds()) / 1000 }

// round4 keeps numbers short and stable in JSON.
func round4(x float64) float64 { return float64(int64(x*10000+0.5*sign(x))) / 10000 }

func sign(x float64) float64 {
	if x < 0 {
		return -1
	}
	return 1
}

// WriteJSON writes the transcript verbosely: language and its probability,
// segments with times (seconds), decoding statistics, tokens with their
// probabilities (and times when aligned), and words when aligned.
func WriteJSON(w io.Writer, t *Transcript) error {
	out := jsonTranscript{Language: t.Language, LanguageProb: round4(t.LanguageProb), Duration: seconds(t.Duration), Text: t.Text(), Segments: []jsonSegment{}}
	for i, s := range t.Segments {
		js := jsonSegment{ID: i, Start: seconds(s.Start), End: seconds(s.End), Text: s.Text, Tokens: []jsonToken{},
			Temperature: s.Temperature, AvgLogProb: round4(s.AvgLogProb), CompressionRatio: round4(s.CompressionRatio), NoSpeechProb: round4(s.NoSpeechProb)}
		for _, tok := range s.Tokens {
			jt := jsonToken{ID: tok.ID, Text: tok.Text, Prob: float32(round4(float64(tok.Prob))), LogProb: float32(round4(float64(tok.LogProb)))}
			if tok.End > 0 {
				st, en := seconds(tok.Start), seconds(tok.End)
				jt.Start, jt.End = &st, &en
			}
			js.Tokens = append(js.Tokens, jt)
		}
		for _, wd := range s.Words {
			js.Words = append(js.Words, jsonWord{Word: wd.Text, Start: seconds(wd.Start), End: seconds(wd.End), Prob: float32(round4(float64(wd.Prob)))})
		}
		out.Segments = append(out.Segments, js)
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
