package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/models/testmodel"
)

func TestSayWithPiperVoice(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("OWL_CACHE_DIR", filepath.Join(dir, "cache"))
	voice, err := testmodel.WritePiperVoice(dir, "voice", testmodel.PiperSmall())
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.wav")
	r := owl(t, "", "say", "-m", voice, "-o", out, "Hello there. How are you?")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	a, err := audio.DecodeFile(out, audio.Limits{})
	if err != nil || a.SampleRate != 16000 || a.Duration() < 0.5 {
		t.Fatalf("%s: %v %+v", out, err, a.SampleRate)
	}
	info := owl(t, "", "models", "info", voice)
	if info.code != 0 || !strings.Contains(info.stdout, "voice") || !strings.Contains(info.stdout, "32 channels") || !strings.Contains(info.stdout, "hop 256") {
		t.Fatalf("info: %+v", info)
	}
	bench := owl(t, "", "bench", "speak", "-m", voice, "-r", "1", "-t", "2")
	if bench.code != 0 || !strings.Contains(bench.stdout, "real-time factor") {
		t.Fatalf("bench: %+v", bench)
	}
}

// Broken voice files end in one clear error each, never a crash.
func TestSayBadVoices(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("OWL_CACHE_DIR", filepath.Join(dir, "cache"))
	good, err := testmodel.WritePiperVoice(dir, "good", testmodel.PiperSmall())
	if err != nil {
		t.Fatal(err)
	}
	onnx, _ := os.ReadFile(good)
	js, _ := os.ReadFile(good + ".json")
	write := func(name string, model, config []byte) string {
		p := filepath.Join(dir, name+".onnx")
		if err := os.WriteFile(p, model, 0o644); err != nil {
			t.Fatal(err)
		}
		if config != nil {
			if err := os.WriteFile(p+".json", config, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"truncated", write("truncated", onnx[:len(onnx)/3], js), "corrupt"},
		{"not a voice", write("other", testmodel.EncodeONNX(testmodel.PiperONNX(testmodel.PiperSmall()))[:200], js), "voice"},
		{"no config", write("noconfig", onnx, nil), "configuration"},
		{"no id map", write("nomap", onnx, []byte(strings.Replace(string(js), `"phoneme_id_map"`, `"phoneme_id_mapx"`, 1))), "phoneme_id_map"},
	} {
		r := owl(t, "", "say", "-m", tc.path, "-o", filepath.Join(dir, "x.wav"), "hello")
		if r.code == 0 || !strings.Contains(strings.ToLower(r.stderr), tc.want) || strings.Contains(r.stderr, "panic") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("%s: %+v", tc.name, r)
		}
	}
}

// owl pull piper:VOICE fetches the voice and its configuration from Piper's
// repository layout (FAMILY/CODE/NAME/QUALITY/VOICE.onnx and .onnx.json),
// pairs them, and the voice speaks by its store name.
func TestPullPiperVoice(t *testing.T) {
	srv, _ := storeEnv(t)
	c := testmodel.PiperSmall()
	js, err := testmodel.PiperConfigJSON(c)
	if err != nil {
		t.Fatal(err)
	}
	const file = "en/en_US/lessac/medium/en_US-lessac-medium.onnx"
	srv.AddLFS("rhasspy/piper-voices", file, testmodel.EncodeONNX(testmodel.PiperONNX(c)))
	srv.AddGit("rhasspy/piper-voices", file+".json", js)
	r := owl(t, "", "pull", "piper:en_US-lessac-medium")
	if r.code != 0 || !strings.Contains(r.stdout, "piper:en_US-lessac-medium") {
		t.Fatalf("pull: %+v", r)
	}
	out := filepath.Join(t.TempDir(), "hi.wav")
	if r := owl(t, "", "say", "-m", "piper:en_US-lessac-medium", "-o", out, "Hello there."); r.code != 0 {
		t.Fatalf("say: %+v", r)
	}
	if a, err := audio.DecodeFile(out, audio.Limits{}); err != nil || a.SampleRate != 16000 {
		t.Fatalf("%v", err)
	}
	if v := owl(t, "", "voices"); !strings.Contains(v.stdout, "piper:en_US-lessac-medium") || strings.Contains(v.stdout, "-config") {
		t.Fatalf("voices: %+v", v)
	}
	if r := owl(t, "", "pull", "piper:not-a-voice"); r.code == 0 {
		t.Fatalf("a malformed voice name: %+v", r)
	}
}
