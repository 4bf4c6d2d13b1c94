package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/fleet"
	"github.com/owlengine/owl/internal/natstest"
)

// testWorker is an owl worker in the test's process: its own engine and
// server (its Runner), its own connection to the cluster.
type testWorker struct {
	id     string
	nc     *nats.Conn
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// startWorker runs a worker on models (the shared folder when ""),
// until the test ends.
func startWorker(t testing.TB, url string, cfg fleet.Config, id, models string, o fleet.WorkerOptions, memory uint64) *testWorker {
	t.Helper()
	if models == "" {
		models = modelsDir
	}
	e := engine.New(engine.Options{Threads: 1, NumCtx: 1024, Parallel: 4, MaxMemory: memory, MemoryWait: time.Second, CacheDir: filepath.Join(t.TempDir(), "cache")})
	s, err := New(Config{Engine: e, ModelsDir: models, DataDir: t.TempDir(), Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	c, err := fleet.Open(t.Context(), nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	o.ID, o.Logger = id, quietLog
	if o.Models == nil {
		if o.Models, err = s.FleetModels(nil); err != nil {
			t.Fatal(err)
		}
	}
	w := &testWorker{id: id, nc: nc, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	o.Registerer = w.reg
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		err := c.Work(ctx, s, o)
		if err != nil {
			t.Errorf("worker %s: %v", id, err)
		}
		w.done <- err
	}()
	t.Cleanup(func() {
		w.stop()
		nc.Close()
		s.Close()
		e.Close()
	})
	return w
}

// stop asks the worker to stop, as SIGTERM does, and waits.
func (w *testWorker) stop() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
		w.cancel = nil
	}
}

// kill cuts the worker off at once, as a process that died: nothing it
// held is acknowledged or handed back.
func (w *testWorker) kill() {
	w.nc.Close()
	w.stop()
}

// metric is the sum of the worker's metric name with the labels given.
func (w *testWorker) metric(name string, labels ...string) float64 {
	mfs, _ := w.reg.Gather()
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			found = found || (l.GetName() == kv[i] && l.GetValue() == kv[i+1])
		}
		if !found {
			return false
		}
	}
	return true
}

var quietLog = func() *slog.Logger {
	if os.Getenv("OWL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}()

// fleetServer serves the shared models and puts its batches on the
// cluster at url.
func fleetServer(t *testing.T, data, url string, cfg fleet.Config) (*httptest.Server, *Server, openai.Client) {
	t.Helper()
	c, err := fleet.Connect(t.Context(), url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Engine: sharedEngine, ModelsDir: modelsDir, DataDir: data, Fleet: c, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() { ts.Close(); s.Close(); c.Close() })
	return ts, s, openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0))
}

// submit uploads input and starts a batch of it.
func submit(t testing.TB, c openai.Client, input []byte) *openai.Batch {
	t.Helper()
	f, err := c.Files.New(t.Context(), openai.FileNewParams{File: openai.File(bytes.NewReader(input), "requests.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Batches.New(t.Context(), openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// upload stores data as a user_data file for transcription lines.
func upload(t *testing.T, c openai.Client, name string, data []byte) string {
	t.Helper()
	f, err := c.Files.New(t.Context(), openai.FileNewParams{File: openai.File(bytes.NewReader(data), name, "audio/wav"), Purpose: openai.FilePurposeUserData})
	if err != nil {
		t.Fatal(err)
	}
	return f.ID
}

// fleetLines is a mixed batch: chats, completions, transcriptions of a
// short recording and of espeak-ng's speech (whose file is large enough
// to travel through the object store).
func fleetLines(t *testing.T, c openai.Client, n int) ([]byte, map[string]batchLine) {
	t.Helper()
	jfk := upload(t, c, "jfk.wav", jfkShort)
	speech, rate := espeakSpeech(t, 0.2, 0.3, "Batches run on many machines.", "Every line once.")
	spoken := upload(t, c, "spoken.wav", audio.EncodeWAV(speech, rate))
	heard, spokenN := 2, 2 // random-weight speech models decode slowly: a few suffice
	if testing.Short() {
		heard, spokenN = 1, 0
	}
	input, lines := batchLines(n*6/10, n-n*6/10-heard-spokenN, heard, jfk)
	var buf bytes.Buffer
	buf.Write(input)
	for i := range spokenN {
		b, _ := json.Marshal(map[string]any{"model": "ggml-micro.en", "file": spoken, "temperature": 0, "response_format": "json"})
		l := batchLine{CustomID: fmt.Sprintf("spoken-%d", i), Method: "POST", URL: "/v1/audio/transcriptions", Body: b}
		lines[l.CustomID] = l
		json.NewEncoder(&buf).Encode(l)
	}
	if len(lines) != n {
		t.Fatalf("%d lines, want %d", len(lines), n)
	}
	return buf.Bytes(), lines
}

// byCustomID indexes lines by their custom ids.
func byCustomID(lines []batchLine) map[string]batchLine {
	m := map[string]batchLine{}
	for _, l := range lines {
		m[l.CustomID] = l
	}
	return m
}

// checkAll checks that batch b completed with every line's result once,
// each equal to its request run alone.
func checkAll(t *testing.T, ts *httptest.Server, s *Server, c openai.Client, b *openai.Batch, lines map[string]batchLine) {
	t.Helper()
	if b.Status != "completed" || b.RequestCounts.Completed != int64(len(lines)) || b.RequestCounts.Failed != 0 {
		t.Fatalf("batch: %s %+v", b.Status, b.RequestCounts)
	}
	got := results(t, c, b.OutputFileID) // fails on a line seen twice
	if len(got) != len(lines) {
		t.Fatalf("%d results for %d lines", len(got), len(lines))
	}
	for id, l := range lines {
		r := got[id]
		if r.Response == nil || r.Response.StatusCode != 200 || r.Error != nil {
			t.Fatalf("%s: %+v", id, r)
		}
		if a, want := answerOf(t, l.URL, r.Response.Body), alone(t, ts.URL, s, l); a != want {
			t.Fatalf("%s: %q in the batch, %q alone", id, a, want)
		}
	}
}

// 200 mixed lines (40 in the short run) through the OpenAI SDK, run by
// three workers over a three-node cluster: one worker killed while it
// runs lines, then one node; every line's result is in the output once,
// equal to its request run alone.
func TestFleetBatch(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 40
	}
	nodes := natstest.Start(t, 3)
	cfg := fleet.Config{Replicas: 3, AckWait: 2 * time.Second, Heartbeat: 500 * time.Millisecond}
	ts, s, c := fleetServer(t, t.TempDir(), nodes.URL(), cfg)
	input, lines := fleetLines(t, c, n)
	var workers []*testWorker
	for i := range 3 {
		workers = append(workers, startWorker(t, nodes.URL(), cfg, fmt.Sprintf("w%d", i+1), "", fleet.WorkerOptions{}, 0))
	}
	b := submit(t, c, input)

	// Worker 1 dies while it runs lines.
	deadline := time.Now().Add(2 * time.Minute)
	for workers[0].metric("owl_worker_lines_in_flight") == 0 || workers[0].metric("owl_worker_lines_total", "outcome", "done") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("worker 1 ran no lines")
		}
		time.Sleep(5 * time.Millisecond)
	}
	held := workers[0].metric("owl_worker_lines_in_flight")
	workers[0].kill()
	t.Logf("worker 1 killed holding %v lines", held)

	// Then a node goes.
	waitBatch(t, c, b.ID, func(b *openai.Batch) bool { return done(b) || b.RequestCounts.Completed >= int64(n/2) })
	nodes.Kill(2)
	t.Log("node 3 killed")

	b = waitBatch(t, c, b.ID, done)
	checkAll(t, ts, s, c, b, lines)
	var redone float64
	for _, w := range workers {
		t.Logf("%s: %v lines done, %v handed back", w.id, w.metric("owl_worker_lines_total", "outcome", "done"), w.metric("owl_worker_lines_total", "outcome", "retried"))
		redone += w.metric("owl_worker_lines_total", "outcome", "done")
	}
	if redone < float64(n) {
		t.Fatalf("the workers wrote %v results for %d lines", redone, n)
	}
}

// hang runs nothing: it holds every line until its worker stops, as a
// worker that dies on a line does.
type hang struct{}

func (hang) RunRequest(ctx context.Context, r fleet.Request) (batchResult, bool) {
	<-ctx.Done()
	return batchResult{}, false
}

// ghostWorker is a worker of model "ghost" that dies on every line.
func ghostWorker(t *testing.T, url string, cfg fleet.Config, id string) *testWorker {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	c, err := fleet.Open(t.Context(), nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := &testWorker{id: id, nc: nc, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		w.done <- c.Work(ctx, hang{}, fleet.WorkerOptions{ID: id, Logger: quietLog, Registerer: w.reg, DrainTimeout: 50 * time.Millisecond,
			Models: []fleet.ModelInfo{{Name: "ghost", Work: []string{fleet.KindChat}}}})
	}()
	t.Cleanup(func() { w.kill() })
	return w
}

// waitWorkers waits until the workers ids advertise themselves to s's fleet.
func waitWorkers(t *testing.T, s *Server, ids ...string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ws, err := s.cfg.Fleet.Workers(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, w := range ws {
			if slices.Contains(ids, w.ID) {
				n++
			}
		}
		if n == len(ids) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers %v did not all come up: %+v", ids, ws)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// errorsOf reads a batch's error file by custom id.
func errorsOf(t *testing.T, c openai.Client, b *openai.Batch) map[string]batchResult {
	t.Helper()
	if b.ErrorFileID == "" {
		t.Fatalf("batch %s has no error file", b.ID)
	}
	return results(t, c, b.ErrorFileID)
}

func chatLine(id, model string) batchLine {
	b, _ := json.Marshal(map[string]any{"model": model, "temperature": 0, "max_tokens": 6,
		"messages": []any{map[string]any{"role": "user", "content": "Say " + id + "."}}})
	return batchLine{CustomID: id, Method: "POST", URL: "/v1/chat/completions", Body: b}
}

func jsonl(lines ...batchLine) []byte {
	var buf bytes.Buffer
	for _, l := range lines {
		json.NewEncoder(&buf).Encode(l)
	}
	return buf.Bytes()
}

// Faults on one node: poison lines end in the error file with their
// reasons while the rest complete; a full result store holds the answers
// back until it has room, with nothing lost or run twice; a server
// restarted mid-batch resumes it, nothing lost or run twice.
func TestFleetFaults(t *testing.T) {
	nodes := natstest.Start(t, 1)
	cfg := fleet.Config{AckWait: 2 * time.Second, MaxDeliver: 2, Heartbeat: 300 * time.Millisecond, ResultsMaxBytes: 64 << 10}
	data := t.TempDir()
	ts, s, c := fleetServer(t, data, nodes.URL(), cfg)

	w := startWorker(t, nodes.URL(), cfg, "w1", "", fleet.WorkerOptions{}, 0)
	// A worker holding a model too large for its memory.
	big := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(modelsDir, "tiny.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(big, "big.gguf"), raw, 0o644)
	startWorker(t, nodes.URL(), cfg, "small", big, fleet.WorkerOptions{}, 1<<20)
	ran := func() float64 {
		return w.metric("owl_worker_lines_total", "outcome", "done") + w.metric("owl_worker_lines_total", "outcome", "dead")
	}

	t.Run("poison", func(t *testing.T) {
		corrupt := upload(t, c, "corrupt.wav", append([]byte("RIFF\xff\xff\xff\xffWAVEfmt "), bytes.Repeat([]byte{0xAB}, 4000)...))
		body, _ := json.Marshal(map[string]any{"model": "ggml-micro.en", "file": corrupt})
		good := []batchLine{chatLine("good-1", "tiny"), chatLine("good-2", "tiny.gguf"), chatLine("good-3", "tiny:latest")}
		lines := append(good, batchLine{CustomID: "corrupt-audio", Method: "POST", URL: "/v1/audio/transcriptions", Body: body},
			chatLine("unknown-model", "nope"), chatLine("too-big", "big"), chatLine("dies-every-time", "ghost"))
		// The ghost's line: each worker that takes it dies, until it runs
		// out of deliveries (JetStream gives up on a line when it would
		// hand it out again: a worker of the model still asks for lines).
		g := ghostWorker(t, nodes.URL(), cfg, "ghost1")
		waitWorkers(t, s, "w1", "small", "ghost1") // else their lines' models are unknown
		b := submit(t, c, jsonl(lines...))
		deadline := time.Now().Add(2 * time.Minute)
		for i := 2; ; {
			got, err := c.Batches.Get(t.Context(), b.ID)
			if err != nil {
				t.Fatal(err)
			}
			if done(got) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("batch: %s %+v", got.Status, got.RequestCounts)
			}
			if g.metric("owl_worker_lines_in_flight") > 0 {
				g.kill()
				g = ghostWorker(t, nodes.URL(), cfg, fmt.Sprintf("ghost%d", i))
				i++
			}
			time.Sleep(10 * time.Millisecond)
		}
		b = waitBatch(t, c, b.ID, done)
		if b.Status != "completed" || b.RequestCounts.Completed != 3 || b.RequestCounts.Failed != 4 {
			t.Fatalf("batch: %s %+v", b.Status, b.RequestCounts)
		}
		for id, r := range results(t, c, b.OutputFileID) {
			if a, want := answerOf(t, "/v1/chat/completions", r.Response.Body), alone(t, ts.URL, s, chatLine(id, "tiny")); a != want {
				t.Fatalf("%s: %q, alone %q", id, a, want)
			}
		}
		bad := errorsOf(t, c, b)
		want := map[string]string{
			"corrupt-audio":   "400",
			"unknown-model":   "no worker of the fleet runs chat lines of model",
			"too-big":         "failed on each of 2 deliveries; the last: status 503",
			"dies-every-time": "no worker finished this line in 2 deliveries",
		}
		for id, reason := range want {
			r, ok := bad[id]
			if !ok {
				t.Fatalf("%s is not in the error file", id)
			}
			text, _ := json.Marshal(r)
			if !strings.Contains(string(text), reason) {
				t.Errorf("%s: %s, want %q in it", id, text, reason)
			}
			t.Logf("%s: %s", id, text)
		}
		// The lines that ran out of deliveries are on the dead-letter stream.
		js, _ := jetstream.New(w.nc)
		info, err := js.Stream(t.Context(), fleet.DeadStream)
		if err != nil {
			t.Fatal(err)
		}
		if st := info.CachedInfo().State; st.Msgs < 2 {
			t.Fatalf("%d dead letters, want 2", st.Msgs)
		}
	})

	t.Run("store full", func(t *testing.T) {
		js, _ := jetstream.New(w.nc)
		kv, err := js.KeyValue(t.Context(), fleet.ResultsBucket)
		if err != nil {
			t.Fatal(err)
		}
		// The bucket filled to within 200 bytes: no result fits.
		st, err := kv.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(t.Context(), "filler", make([]byte, int(cfg.ResultsMaxBytes)-int(st.Bytes())-200)); err != nil {
			t.Fatal(err)
		}
		var lines []batchLine
		for i := range 6 {
			lines = append(lines, chatLine(fmt.Sprintf("full-%d", i), "tiny"))
		}
		before := ran()
		b := submit(t, c, jsonl(lines...))
		deadline := time.Now().Add(time.Minute)
		for w.metric("owl_worker_lines_total", "outcome", "store_failed") == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no result failed to be stored")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if got, _ := c.Batches.Get(t.Context(), b.ID); got.RequestCounts.Completed+got.RequestCounts.Failed != 0 {
			t.Fatalf("results with the store full: %+v", got.RequestCounts)
		}
		kv.Purge(t.Context(), "filler")
		b = waitBatch(t, c, b.ID, done)
		checkAll(t, ts, s, c, b, byCustomID(lines))
		if n := ran() - before; n != float64(len(lines)) {
			t.Fatalf("%v lines ran for %d", n, len(lines))
		}
	})

	t.Run("server restarted", func(t *testing.T) {
		var lines []batchLine
		for i := range 24 {
			lines = append(lines, chatLine(fmt.Sprintf("restart-%d", i), "tiny"))
		}
		before := ran()
		b := submit(t, c, jsonl(lines...))
		waitBatch(t, c, b.ID, func(b *openai.Batch) bool { return b.RequestCounts.Completed >= 4 })
		ts.Close()
		s.Close()
		t.Log("server stopped")
		ts2, s2, c2 := fleetServer(t, data, nodes.URL(), cfg)
		b = waitBatch(t, c2, b.ID, done)
		checkAll(t, ts2, s2, c2, b, byCustomID(lines))
		if n := ran() - before; n != float64(len(lines)) {
			t.Fatalf("%v lines ran for %d", n, len(lines))
		}
	})
}

// BenchmarkFleetThroughput runs a batch of chat lines with 1, 2 and 3
// workers over one NATS node, and in the server's own engine, and
// reports lines per second. Here every worker shares the machine's cores.
func BenchmarkFleetThroughput(b *testing.B) {
	const n = 480
	var lines []batchLine
	for i := range n {
		lines = append(lines, chatLine(fmt.Sprintf("bench-%d", i), "tiny"))
	}
	input := jsonl(lines...)
	run := func(b *testing.B, c openai.Client) {
		for b.Loop() {
			start := time.Now()
			got := waitBatch(b, c, submit(b, c, input).ID, done)
			if got.RequestCounts.Completed != n {
				b.Fatalf("batch: %s %+v", got.Status, got.RequestCounts)
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "lines/s")
		}
	}
	b.Run("local", func(b *testing.B) {
		// The engine as a worker's: one thread per model.
		e := engine.New(engine.Options{Threads: 1, NumCtx: 1024, Parallel: 4, CacheDir: filepath.Join(b.TempDir(), "cache")})
		defer e.Close()
		s, err := New(Config{Engine: e, ModelsDir: modelsDir, DataDir: b.TempDir(), Logger: quietLog})
		if err != nil {
			b.Fatal(err)
		}
		ts := httptest.NewServer(s)
		defer func() { ts.Close(); s.Close() }()
		run(b, openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0)))
	})
	for workers := 1; workers <= 3; workers++ {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			nodes := natstest.Start(b, 1)
			cfg := fleet.Config{Heartbeat: 300 * time.Millisecond}
			c, err := fleet.Connect(b.Context(), nodes.URL(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			s, err := New(Config{Engine: sharedEngine, ModelsDir: modelsDir, DataDir: b.TempDir(), Fleet: c, Logger: quietLog})
			if err != nil {
				b.Fatal(err)
			}
			ts := httptest.NewServer(s)
			defer func() { ts.Close(); s.Close() }()
			for i := range workers {
				startWorker(b, nodes.URL(), cfg, fmt.Sprintf("w%d", i+1), "", fleet.WorkerOptions{}, 0)
			}
			run(b, openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0)))
		})
	}
}
