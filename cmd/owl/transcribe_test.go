package main

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

// wavFile writes 16-kHz mono PCM samples as a WAV file.
func wavFile(t *testing.T, path string, samples []int16) {
	t.Helper()
	le := binary.LittleEndian
	var b []byte
	b = append(b, "RIFF"...)
	b = le.AppendUint32(b, uint32(36+2*len(samples)))
	b = append(b, "WAVEfmt "...)
	b = le.AppendUint32(b, 16)
	b = le.AppendUint16(b, 1)
	b = le.AppendUint16(b, 1)
	b = le.AppendUint32(b, 16000)
	b = le.AppendUint32(b, 32000)
	b = le.AppendUint16(b, 2)
	b = le.AppendUint16(b, 16)
	b = append(b, "data"...)
	b = le.AppendUint32(b, uint32(2*len(samples)))
	for _, s := range samples {
		b = le.AppendUint16(b, uint16(s))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func whisperModel(t *testing.T, dir, name string, c testmodel.WhisperConfig) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := testmodel.WriteWhisperFile(p, c); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTranscribeSilenceAndEmpty(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("OWL_CACHE_DIR", filepath.Join(dir, "cache"))
	model := whisperModel(t, dir, "ggml-micro.en.bin", testmodel.WhisperMicro(testmodel.VocabEnglish, 1))
	empty, silent := filepath.Join(dir, "empty.wav"), filepath.Join(dir, "silent.wav")
	wavFile(t, empty, nil)
	wavFile(t, silent, make([]int16, 5*16000))
	for _, a := range []string{empty, silent} {
		r := owl(t, "", "transcribe", "-m", model, a)
		if r.code != 0 || strings.TrimSpace(r.stdout) != "" {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", a, r.code, r.stdout, r.stderr)
		}
		j := owl(t, "", "transcribe", "-m", model, a, "--json")
		var out struct {
			Segments []any `json:"segments"`
			Text     string
		}
		if j.code != 0 || json.Unmarshal([]byte(j.stdout), &out) != nil || len(out.Segments) != 0 || out.Text != "" {
			t.Fatalf("%s --json: exit %d, %q", a, j.code, j.stdout)
		}
	}
}

func TestTranscribeJFKWritesFiles(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("OWL_CACHE_DIR", filepath.Join(dir, "cache"))
	model := whisperModel(t, dir, "ggml-micro.en.bin", testmodel.WhisperMicro(testmodel.VocabEnglish, 1))
	jfk, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	r := owl(t, "", "transcribe", "-m", model, jfk, "-o", "txt", "-o", "json", "-o", "srt", "-o", "vtt", "-o", "lrc", "--output-dir", out, "-t", "2", "--beam-size", "1")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if r.stderr != "" {
		t.Fatalf("stderr not empty (no progress bar without a terminal): %q", r.stderr)
	}
	for _, ext := range []string{"srt", "vtt", "lrc"} {
		if st, err := os.Stat(filepath.Join(out, "jfk."+ext)); err != nil || st.Size() == 0 && strings.TrimSpace(r.stdout) != "" {
			t.Fatalf("jfk.%s: %v", ext, err)
		}
	}
	txt, err := os.ReadFile(filepath.Join(out, "jfk.txt"))
	if err != nil || string(txt) != r.stdout {
		t.Fatalf("jfk.txt %q differs from stdout %q (%v)", txt, r.stdout, err)
	}
	js, err := os.ReadFile(filepath.Join(out, "jfk.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		Language string
		Duration float64
		Segments []struct {
			Start, End float64
			Tokens     []struct{ P float64 }
		}
	}
	if err := json.Unmarshal(js, &tr); err != nil {
		t.Fatal(err)
	}
	if tr.Language != "en" || tr.Duration < 10.9 || tr.Duration > 11.1 {
		t.Fatalf("json: language %q, duration %v", tr.Language, tr.Duration)
	}
}

func TestTranscribeBadInput(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("OWL_CACHE_DIR", filepath.Join(dir, "cache"))
	model := whisperModel(t, dir, "ggml-micro.en.bin", testmodel.WhisperMicro(testmodel.VocabEnglish, 1))
	good, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	audio := filepath.Join(dir, "a.wav")
	wavFile(t, audio, make([]int16, 1600))
	le := binary.LittleEndian
	put := func(off int, v uint32) []byte {
		b := append([]byte(nil), good...)
		le.PutUint32(b[off:], v)
		return b
	}
	// The first tensor record starts after the header, filters and vocabulary.
	nTok := int(le.Uint32(good[48+8+4*80*201:]))
	off := 48 + 8 + 4*80*201 + 4
	for range nTok {
		off += 4 + int(le.Uint32(good[off:]))
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"bad magic", put(0, 0x12345678), "not a whisper.cpp model"},
		{"truncated header", good[:30], "truncated"},
		{"truncated tensor data", good[:len(good)-5000], "truncated"},
		{"wrong tensor shape", put(off+12, 77), "shape"},
		{"five dimensions", put(off, 5), "5 dimensions"},
		{"absurd name length", put(off+4, 1<<30), "name of"},
		{"unknown ggml type", put(off+8, 77), "unknown ggml type 77"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".bin")
			if err := os.WriteFile(p, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			r := owl(t, "", "transcribe", "-m", p, audio)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if r.code == 0 || len(lines) != 1 || !strings.Contains(lines[0], p) || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("exit %d, stderr %q: want one line naming %s and %q", r.code, r.stderr, p, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"transcribe", "-m", model, filepath.Join(dir, "missing.wav")}, "no such file"},
		{[]string{"transcribe", "-m", model, model}, "unsupported audio format"},
		{[]string{"transcribe", "-m", model, audio, "--translate"}, "cannot translate"},
		{[]string{"transcribe", "-m", model, audio, "-o", "docx"}, "docx"},
		{[]string{"transcribe", "-m", model, audio, "--beam-size", "0"}, "--beam-size 0"},
		{[]string{"transcribe", "-m", model, audio, "--beam-size", "100"}, "--beam-size 100"},
		{[]string{"transcribe", "-m", model, audio, "-l", "klingon"}, "English-only"},
		{[]string{"transcribe", "-m", model, audio, "--backend", "whispercpp"}, "whispercpp"},
	} {
		r := owl(t, "", tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q", tc.args, r.code, r.stderr)
		}
	}
}

// Transcribing jfk.wav with a tiny-sized model stays within 250 MB.
func TestTranscribeMemory(t *testing.T) {
	dir := t.TempDir()
	model := whisperModel(t, dir, "ggml-tiny.en.bin", testmodel.WhisperTiny(testmodel.VocabEnglish, 1))
	jfk, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(owlBin, "transcribe", "-m", model, jfk, "-t", "2")
	cmd.Env = append(os.Environ(), "OWL_CACHE_DIR="+filepath.Join(dir, "cache"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss * 1024
	t.Logf("peak RSS %d MiB", rss>>20)
	if rss > 250<<20 {
		t.Fatalf("peak RSS %d MiB exceeds 250 MiB", rss>>20)
	}
}

func TestBenchSpeech(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("OWL_CACHE_DIR", filepath.Join(dir, "cache"))
	model := whisperModel(t, dir, "ggml-micro.en.bin", testmodel.WhisperMicro(testmodel.VocabEnglish, 1))
	r := owl(t, "", "bench", "speech", "-m", model, "-t", "2")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	for _, want := range []string{"mel:", "encode:", "per window", "decode:", "per step", "RTF:", "peak RSS"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("bench output lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestTranscribeMultilingualErrors(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("OWL_CACHE_DIR", filepath.Join(dir, "cache"))
	model := whisperModel(t, dir, "ggml-micro.bin", testmodel.WhisperMicro(testmodel.VocabMultilingual, 1))
	audio := filepath.Join(dir, "a.wav")
	wavFile(t, audio, make([]int16, 1600))
	r := owl(t, "", "transcribe", "-m", model, audio, "-l", "xx")
	if r.code == 0 || !strings.Contains(r.stderr, `unknown language "xx"`) {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	r = owl(t, "", "transcribe", "-m", model, audio, "-l", "de", "--translate", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"language": "de"`) {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
