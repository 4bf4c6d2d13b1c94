package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/owlengine/owl/internal/natstest"
)

// workerProc is an owl worker process.
type workerProc struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	exited chan struct{}
	err    error
}

// startWorker runs owl worker with args and waits until it takes lines.
func startWorker(t *testing.T, args ...string) *workerProc {
	t.Helper()
	p := &workerProc{cmd: exec.Command(owlBin, append([]string{"worker"}, args...)...), stderr: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = serveEnv()
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.stderr.String(), "worker taking lines from") {
		select {
		case <-p.exited:
			t.Fatalf("owl worker %v exited (%v):\n%s", args, p.err, p.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("owl worker did not start in 30 s:\n%s", p.stderr.String())
		}
	}
	return p
}

// The commands end to end: owl serve --nats puts a batch on the fleet,
// owl worker processes run it; one is killed mid-batch, one stopped by
// SIGTERM (it finishes or hands back its lines and exits 0), a third
// finishes; every line once. The metrics of both show the fleet.
func TestWorkerCommands(t *testing.T) {
	nodes := natstest.Start(t, 1)
	dir := modelsFolder(t)
	nats := []string{"--nats", nodes.URL(), "--nats-ack-wait", "2s", "--models-dir", dir, "--threads", "1"}
	srv := startServe(t, serveEnv(), append([]string{"--host", "127.0.0.1:0"}, nats...)...)
	w1 := startWorker(t, append(nats, "--id", "w1")...)
	w2 := startWorker(t, append(nats, "--id", "w2", "--metrics", "127.0.0.1:0")...)

	const n = 30
	var input bytes.Buffer
	for i := range n {
		body, _ := json.Marshal(map[string]any{"model": "tiny", "temperature": 0, "max_tokens": 8,
			"messages": []any{map[string]any{"role": "user", "content": fmt.Sprintf("Say %d.", i)}}})
		json.NewEncoder(&input).Encode(map[string]any{"custom_id": fmt.Sprint("line-", i), "method": "POST", "url": "/v1/chat/completions", "body": json.RawMessage(body)})
	}
	c := openai.NewClient(option.WithBaseURL(srv.url+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0))
	ctx := t.Context()
	f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(input.Bytes()), "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		t.Fatal(err)
	}
	progress := func(k int64) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			got, err := c.Batches.Get(ctx, b.ID)
			if err != nil {
				t.Fatal(err)
			}
			if (got.RequestCounts.Completed >= k && k < n) || got.Status == "completed" {
				b = got
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("batch: %s %+v", got.Status, got.RequestCounts)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	progress(3)
	w1.cmd.Process.Kill() // dies holding what it held
	progress(8)
	// The metrics while it runs: the server sees the worker, the worker its lines.
	if code, body := httpGet(t, srv.url+"/metrics", ""); code != 200 || !strings.Contains(body, "owl_fleet_workers") || !strings.Contains(body, `owl_batch_requests{batch="`+b.ID+`",state="total"} 30`) {
		t.Fatalf("server /metrics: %d\n%s", code, grepLines(body, "owl_fleet", "owl_batch"))
	}
	m := regexpFind(t, w2.stderr.String(), `metrics on (http://\S+/metrics)`)
	if code, body := httpGet(t, m, ""); code != 200 || !strings.Contains(body, `owl_worker_lines_total{kind="chat",outcome="done"}`) {
		t.Fatalf("worker /metrics: %d\n%s", code, grepLines(body, "owl_worker"))
	}
	w2.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w2.exited:
	case <-time.After(40 * time.Second):
		t.Fatalf("owl worker still running 40 s after SIGTERM:\n%s", w2.stderr.String())
	}
	if w2.err != nil || !strings.HasSuffix(w2.stderr.String(), "owl worker: stopped\n") {
		t.Fatalf("owl worker after SIGTERM: %v\n%s", w2.err, w2.stderr.String())
	}
	startWorker(t, append(nats, "--id", "w3")...)
	progress(n)
	if b.Status != "completed" || b.RequestCounts.Completed != n || b.RequestCounts.Failed != 0 {
		t.Fatalf("batch: %s %+v", b.Status, b.RequestCounts)
	}
	resp, err := c.Files.Content(ctx, b.OutputFileID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	seen := map[string]bool{}
	dec := json.NewDecoder(bytes.NewReader(raw))
	for dec.More() {
		var r struct {
			CustomID string `json:"custom_id"`
			Response struct {
				StatusCode int `json:"status_code"`
			} `json:"response"`
		}
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("%v:\n%s", err, raw)
		}
		if seen[r.CustomID] || r.Response.StatusCode != 200 {
			t.Fatalf("%s: twice, or status %d", r.CustomID, r.Response.StatusCode)
		}
		seen[r.CustomID] = true
	}
	if len(seen) != n {
		t.Fatalf("%d results for %d lines", len(seen), n)
	}
}

func TestWorkerUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "needs --nats URL"},
		{[]string{"--nats", "nats://127.0.0.1:1", "--kinds", "dance", "--models-dir", modelsFolder(t)}, `kind of work "dance"`},
		{[]string{"--nats", "nats://127.0.0.1:1", "--models-dir", modelsFolder(t)}, "connecting to nats://127.0.0.1:1"},
	} {
		cmd := exec.Command(owlBin, append([]string{"worker"}, tc.args...)...)
		cmd.Env = serveEnv()
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("owl worker %v: %v\n%s", tc.args, err, out)
		}
	}
}

// grepLines keeps the lines of text with any of the prefixes.
func grepLines(text string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func regexpFind(t *testing.T, s, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no %s in:\n%s", re, s)
	}
	return m[1]
}

// Two servers on one data folder would both run its batches: the second
// refuses to start.
func TestServeDataDirOwned(t *testing.T) {
	dir := modelsFolder(t)
	startServe(t, serveEnv(), "--host", "127.0.0.1:0", "--models-dir", dir)
	cmd := exec.Command(owlBin, "serve", "--host", "127.0.0.1:0", "--models-dir", dir)
	cmd.Env = serveEnv()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is another owl serve's") {
		t.Fatalf("a second owl serve on the folder: %v\n%s", err, out)
	}
}
