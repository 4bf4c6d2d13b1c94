package speech

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

// sampleTranscript covers hours, a long cue, a word-aligned segment and a
// text that could break a cue.
func sampleTranscript() *Transcript {
	return &Transcript{
		Language: "en", LanguageProb: 0.9731, Duration: ms(3725500),
		Segments: []Segment{
			{Start: 0, End: ms(2480), Text: " And so, my fellow Americans,", Temperature: 0, AvgLogProb: -0.2345, CompressionRatio: 1.1, NoSpeechProb: 0.01,
				Tokens: []Token{{ID: 50363, Text: "<|0.00|>", Prob: 0.9, LogProb: -0.1}, {ID: 843, Text: " And", Prob: 0.8, LogProb: -0.2231, Start: 0, End: ms(320)}},
				Words:  []Word{{Text: "And", Start: 0, End: ms(320), Prob: 0.8}}},
			{Start: ms(3601005), End: ms(3725499), Text: " ask not --> what\n\nyour country can do", Temperature: 0.2, AvgLogProb: -0.5, CompressionRatio: 1.3, NoSpeechProb: 0.02},
		},
	}
}

func TestGoldenOutputs(t *testing.T) {
	for _, f := range Formats {
		t.Run(f, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, sampleTranscript(), f); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "transcript."+f)
			if *update {
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("%s differs from %s:\n%s", f, path, buf.String())
			}
		})
	}
	if err := Write(&bytes.Buffer{}, sampleTranscript(), "docx"); err == nil {
		t.Fatal("unknown format accepted")
	}
}

// The subtitle files follow their formats: SRT cues numbered from 1 with
// HH:MM:SS,mmm --> HH:MM:SS,mmm; VTT opens with WEBVTT and uses a dot.
func TestSubtitleSyntax(t *testing.T) {
	var srt, vtt bytes.Buffer
	WriteSRT(&srt, sampleTranscript())
	WriteVTT(&vtt, sampleTranscript())
	srtCue := regexp.MustCompile(`^(\d+)\n(\d{2}:\d{2}:\d{2},\d{3}) --> (\d{2}:\d{2}:\d{2},\d{3})\n(.+\n?)+$`)
	for i, cue := range strings.Split(strings.TrimSpace(srt.String()), "\n\n") {
		m := srtCue.FindStringSubmatch(cue)
		if m == nil || m[1] != strconv.Itoa(i+1) {
			t.Fatalf("SRT cue %d malformed:\n%s", i+1, cue)
		}
		if strings.Contains(cue[strings.Index(cue, "\n")+1:][30:], "-->") {
			t.Fatalf("SRT cue %d text contains -->", i+1)
		}
	}
	if !strings.HasPrefix(vtt.String(), "WEBVTT\n\n") {
		t.Fatal("VTT lacks its header")
	}
	vttCue := regexp.MustCompile(`^\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}\n(.+\n?)+$`)
	for _, cue := range strings.Split(strings.TrimSpace(strings.TrimPrefix(vtt.String(), "WEBVTT\n\n")), "\n\n") {
		if !vttCue.MatchString(cue) {
			t.Fatalf("VTT cue malformed:\n%s", cue)
		}
	}
	if !strings.Contains(srt.String(), "01:00:01,005 --> 01:02:05,499") {
		t.Fatalf("hours not rendered:\n%s", srt.String())
	}
}
