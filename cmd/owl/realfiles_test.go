package main

import (
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

// whisper.cpp's segments for jfk.wav with the real Silero v6.2.0 and the
// default parameters (its VAD test), in seconds.
var jfkSpeech = [][2]float64{{0.32, 2.27}, {3.27, 4.41}, {5.38, 7.68}, {8.16, 10.62}}

func TestVADCommandOnRealModel(t *testing.T) {
	silero := testmodel.RealFile(t, "whispercpp/for-tests-silero-v6.2.0-ggml.bin")
	mp3 := testmodel.RealFile(t, "whispercpp/jfk.mp3")
	wav, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("OWL_CACHE_DIR", t.TempDir())
	r := owl(t, "", "vad", "--json", "--vad-model", silero, wav, mp3)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	for _, file := range []string{wav, mp3} {
		var got jsonSpeech
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("%s: %v in %q", file, err, r.stdout)
		}
		if got.File != file || got.Detector != "silero-16k v6.2.0" || math.Abs(got.Duration-11) > 0.001 {
			t.Errorf("%s: file %q, detector %q, duration %v", file, got.File, got.Detector, got.Duration)
		}
		if len(got.Segments) != len(jfkSpeech) {
			t.Fatalf("%s: %d segments %v, want %v", filepath.Base(file), len(got.Segments), got.Segments, jfkSpeech)
		}
		for i, s := range got.Segments {
			if math.Abs(s.Start-jfkSpeech[i][0]) > 0.02 || math.Abs(s.End-jfkSpeech[i][1]) > 0.02 {
				t.Errorf("%s: segment %d is %.3f–%.3f, whisper.cpp's %.2f–%.2f", filepath.Base(file), i, s.Start, s.End, jfkSpeech[i][0], jfkSpeech[i][1])
			}
		}
	}
	// The text form: one "start<TAB>end" line per segment.
	txt := owl(t, "", "vad", "--vad-model", silero, wav)
	if lines := strings.Split(strings.TrimSpace(txt.stdout), "\n"); txt.code != 0 || len(lines) != 4 || lines[0] != "0.322\t2.270" {
		t.Fatalf("text output %+v", txt)
	}
	// Tighter parameters change the segments the same way in both forms.
	long := owl(t, "", "vad", "--vad-model", silero, "--vad-min-silence", "2s", wav)
	if n := strings.Count(long.stdout, "\n"); long.code != 0 || n >= 4 {
		t.Fatalf("with 2 s pauses: %+v", long)
	}
	bad := owl(t, "", "vad", "--vad-threshold", "1.5", wav)
	if bad.code != 2 || !strings.Contains(bad.stderr, "threshold") {
		t.Fatalf("bad threshold: %+v", bad)
	}
}

func TestVADCommandEnergy(t *testing.T) {
	wav, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	r := owl(t, "", "vad", "--json", wav)
	var got jsonSpeech
	if err := json.Unmarshal([]byte(r.stdout), &got); r.code != 0 || err != nil {
		t.Fatalf("exit %d, %v: %s", r.code, err, r.stderr)
	}
	if got.Detector != "energy" || len(got.Segments) == 0 || got.Segments[0].Start > 0.4 || got.Segments[len(got.Segments)-1].End < 10.5 {
		t.Fatalf("energy segments of jfk.wav: %+v", got)
	}
}

// whisper.cpp's for-tests files hold a real header, mel filters and
// vocabulary but no weights: owl describes them and refuses to run them,
// saying why.
func TestVocabularyOnlyFiles(t *testing.T) {
	file := testmodel.RealFile(t, "whispercpp/for-tests-ggml-tiny.en.bin")
	info := owl(t, "", "models", "info", file)
	if info.code != 0 || !strings.Contains(info.stdout, "vocabulary only, no weights") || !strings.Contains(info.stdout, "51864 tokens") {
		t.Fatalf("info: %+v", info)
	}
	wav, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("OWL_CACHE_DIR", t.TempDir())
	r := owl(t, "", "transcribe", "-m", file, wav)
	if r.code == 0 || !strings.Contains(r.stderr, "vocabulary only, no weights") || strings.Contains(r.stderr, "panic") {
		t.Fatalf("transcribe with a vocabulary-only file: %+v", r)
	}
}

// A transcription keeps only what the real Silero calls speech.
func TestTranscribeWithRealSilero(t *testing.T) {
	silero := testmodel.RealFile(t, "whispercpp/for-tests-silero-v6.2.0-ggml.bin")
	dir := t.TempDir()
	t.Setenv("OWL_CACHE_DIR", filepath.Join(dir, "cache"))
	model := whisperModel(t, dir, "ggml-micro.en.bin", testmodel.WhisperMicro(testmodel.VocabEnglish, 1))
	wav, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	r := owl(t, "", "transcribe", "-m", model, "--vad-model", silero, "--json", "--beam-size", "1", wav)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var tr struct {
		Segments []struct{ Start, End float64 }
	}
	if err := json.Unmarshal([]byte(r.stdout), &tr); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if len(tr.Segments) == 0 {
		t.Fatalf("no segments: %s", r.stdout)
	}
	for _, s := range tr.Segments {
		if s.Start < jfkSpeech[0][0]-0.05 || s.End > jfkSpeech[3][1]+0.05 {
			t.Fatalf("segment %.2f–%.2f lies outside the speech Silero found (%v)", s.Start, s.End, jfkSpeech)
		}
	}
}

// owl listen --vad silero ends an utterance where the real Silero finds a
// pause: one final event per segment of jfk.wav (the last one runs to the
// end of the file, the pause after it being shorter than --vad-min-silence).
func TestListenWithRealSilero(t *testing.T) {
	silero := testmodel.RealFile(t, "whispercpp/for-tests-silero-v6.2.0-ggml.bin")
	dir := t.TempDir()
	t.Setenv("OWL_CACHE_DIR", filepath.Join(dir, "cache"))
	model := whisperModel(t, dir, "ggml-micro.en.bin", testmodel.WhisperMicro(testmodel.VocabEnglish, 1))
	wav, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	r := owl(t, "", "listen", "-m", model, "--file", wav, "--vad", "silero", "--vad-model", silero, "--json", "-t", "2")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var finals []jsonEvent
	for line := range strings.Lines(r.stdout) {
		var ev jsonEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("not a JSON event: %q", line)
		}
		if ev.Type == "final" {
			finals = append(finals, ev)
		}
	}
	if len(finals) != len(jfkSpeech) {
		t.Fatalf("%d final events %+v, want one per segment %v", len(finals), finals, jfkSpeech)
	}
	for i, f := range finals {
		end := jfkSpeech[i][1]
		if i == len(finals)-1 {
			end = 11
		}
		if math.Abs(f.Start-jfkSpeech[i][0]) > 0.02 || math.Abs(f.End-end) > 0.02 {
			t.Errorf("utterance %d at %.3f–%.3f, want %.2f–%.2f", i, f.Start, f.End, jfkSpeech[i][0], end)
		}
	}
}
