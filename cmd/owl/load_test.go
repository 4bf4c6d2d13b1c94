package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

// The short form of `make soak`: owl serve, as a process, under many more
// clients than it runs requests at once, with the mix that once brought it
// down (long transcriptions with beam search and fallback among chats,
// completions, pictures, abandoned streams, cancelled requests and
// malformed bodies), driven by owl bench serve. Every request is answered
// (200, 503 with Retry-After, or 400 for the malformed), the server stays
// up and ends holding nothing, within its memory budget.
func TestServeUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("a load of several seconds; make soak runs it for minutes")
	}
	dir := t.TempDir()
	for _, w := range []struct {
		name  string
		write func(string) error
	}{
		{"tiny.gguf", func(p string) error { return testmodel.WriteLlamaFile(p, testmodel.TinyLlama()) }},
		{"tiny-mmproj.gguf", func(p string) error { return testmodel.WriteProjectorFile(p, testmodel.TinyLlavaProjector()) }},
		{"ggml-micro.en.bin", func(p string) error {
			return testmodel.WriteWhisperFile(p, testmodel.WhisperMicro(testmodel.VocabEnglish, 1))
		}},
	} {
		if err := w.write(filepath.Join(dir, w.name)); err != nil {
			t.Fatal(err)
		}
	}
	jfk, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	p := startServe(t, serveEnv("OWL_CACHE_DIR="+filepath.Join(dir, "cache")), "--models-dir", dir, "--host", "127.0.0.1:0",
		"--queue-wait", "3s", "--max-memory", "1GiB")
	r := owl(t, "", "bench", "serve", "--url", p.url, "--model", "tiny", "--speech-model", "ggml-micro.en", "--audio", jfk,
		"--kinds", "chat-stream,ollama-chat,completion,transcription,disconnect,malformed,image,cancel,transcription-beams,ollama-generate",
		"--clients", "48", "--duration", "6s", "--timeout", "120s", "--json")
	var res benchServeResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("bench serve (exit %d): %v\nstdout: %s\nstderr: %s", r.code, err, r.stdout, r.stderr)
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	t.Logf("%s", out)
	if r.code != 0 {
		t.Errorf("bench serve exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"openai chat stream", "ollama chat", "openai completion", "transcription", "malformed", "openai chat image"} {
		if k, ok := res.Kinds[want]; !ok || k.Outcomes["ok"] == 0 {
			t.Errorf("no %s answered: %+v", want, k)
		}
	}
	if res.Outcomes["failed"] != 0 || !res.Server.Alive || !res.Server.Idle {
		t.Errorf("failures %v, server alive %v and idle %v", res.Failures, res.Server.Alive, res.Server.Idle)
	}
	select {
	case <-p.exited:
		t.Fatalf("owl serve exited: %v\n%s", p.err, p.stderr.String())
	default:
	}
	p.stop(t, os.Interrupt)
}
