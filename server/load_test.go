package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/internal/loadmix"
)

// The load test runs many clients at once against a server and an engine
// of its own, on loopback, in two phases:
//
//   - steady load: loadClients clients send requests for a while: chat
//     and completions, streamed and not, through the OpenAI and ollama
//     routes, and streams the client abandons after the first event, in
//     turn; loadTranscribers of them send transcriptions. The engine's
//     queue holds every waiting request, so each must succeed with a
//     well-formed body.
//   - overload: the same clients hammer a second engine that runs one
//     request at a time and lets two wait. Requests must then either
//     succeed or be turned away with 503 and a Retry-After header.
//
// Throughout, the engine's memory stays within its budget and its queue
// within its bound; afterwards no request is left running, the Go heap is
// back near where it started, and once the servers and engines are closed
// no goroutine is left behind.

const (
	loadClients = 32
	// loadTranscribers of the clients transcribe. A transcription costs
	// the micro whisper model a couple of seconds of CPU (random weights
	// decode as many tokens as a window allows), a text request
	// milliseconds.
	loadTranscribers = 2
	// loadBudget is the engine's memory budget: far more than the tiny
	// text model and the micro whisper model need together, so that no
	// request waits for memory.
	loadBudget = 512 << 20
	// loadHeapGrowth bounds how much the Go heap (after a collection) may
	// grow over the test: the server keeps nothing per request.
	loadHeapGrowth = 64 << 20
	// loadPeakHeap bounds the Go heap in use while the clients run; the
	// bodies, audio samples and streams in flight take a few tens of MiB.
	loadPeakHeap = 256 << 20
)

// loadDurations are the lengths of the two phases.
func loadDurations() (steady, overload time.Duration) {
	if testing.Short() {
		return 3 * time.Second, time.Second
	}
	return 12 * time.Second, 3 * time.Second
}

func TestLoad(t *testing.T) {
	steady, overload := loadDurations()
	// Goroutines that exist now (the shared engine's, other tests') are
	// not this test's to account for.
	ignore := goleak.IgnoreCurrent()
	goroutinesBefore := runtime.NumGoroutine()
	heapBefore := heapAfterGC()

	// One thread per model, so that the text and the speech model compute
	// side by side on two cores (with all the cores each, the engine's
	// compute gate makes them take turns).
	steadyEngine := engine.New(engine.Options{Threads: 1, NumCtx: 1024, Parallel: 4, MaxQueue: 64, MaxMemory: loadBudget,
		CacheDir: filepath.Join(modelsDir, "cache")})
	steadyServer := loadServer(t, steadyEngine, Limits{})
	overloadEngine := engine.New(engine.Options{Threads: 1, NumCtx: 512, Parallel: 1, MaxQueue: 2, MaxMemory: loadBudget})
	overloadServer := loadServer(t, overloadEngine, Limits{RetryAfter: time.Second})
	transport := &http.Transport{MaxIdleConnsPerHost: loadClients}
	client := &http.Client{Transport: transport}
	closed := false
	closeAll := func() {
		if closed {
			return
		}
		closed = true
		steadyServer.Close()
		overloadServer.Close()
		transport.CloseIdleConnections()
		steadyEngine.Close()
		overloadEngine.Close()
	}
	defer closeAll()

	// A watcher samples both engines while the clients run.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan engineWatch)
	go func() { watchDone <- watchEngines(watchCtx, steadyEngine, overloadEngine) }()

	t.Run("steady", func(t *testing.T) {
		mix, transcriptions := steadyMix(t), transcriptionKinds()
		pick := func(c, i int) loadmix.Kind {
			if c < loadTranscribers {
				return transcriptions[(c+i)%len(transcriptions)]
			}
			return mix[(c+i)%len(mix)]
		}
		st := runLoad(t, client, steadyServer.URL, steady, pick, false)
		t.Logf("steady load, %d clients for %s: %s", loadClients, steady, st)
		logTable(t, st)
		for _, k := range append(mix, transcriptions...) {
			if ks := st.Kinds[k.Name]; ks == nil || ks.Outcomes[loadmix.OK]+ks.Outcomes[loadmix.Abandoned]+ks.Outcomes[loadmix.Cancelled] == 0 {
				t.Errorf("no %s ran to its end", k.Name)
			}
		}
		waitEngineIdle(t, steadyEngine)
	})

	t.Run("overload", func(t *testing.T) {
		// Load the model first, so that the clients meet the queue
		// rather than the load.
		resp, err := client.Post(overloadServer.URL+"/v1/completions", "application/json",
			strings.NewReader(`{"model":"tiny","prompt":"warm up","max_tokens":1}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		mix := overloadMix()
		st := runLoad(t, client, overloadServer.URL, overload, func(c, i int) loadmix.Kind { return mix[(c+i)%len(mix)] }, true)
		t.Logf("overload, %d clients on 1 slot and a queue of 2 for %s: %s", loadClients, overload, st)
		if st.Count(loadmix.Busy) == 0 || st.Count(loadmix.OK) == 0 {
			t.Errorf("want both answers and 503s: %s", st)
		}
		waitEngineIdle(t, overloadEngine)
	})

	t.Run("disconnect", func(t *testing.T) {
		testDisconnectCancels(t, steadyEngine)
	})

	stopWatch()
	w := <-watchDone
	t.Logf("engines: peak memory %s of %s (steady), %s of %s (overload); peak queue %d (steady), %d (overload, bound 2); %d samples",
		mib(w.peakUsed[0]), mib(w.budget[0]), mib(w.peakUsed[1]), mib(w.budget[1]), w.peakQueue[0], w.peakQueue[1], w.samples)
	for i := range 2 {
		if w.peakUsed[i] > w.budget[i] {
			t.Errorf("engine %d used %d bytes, over its budget of %d", i, w.peakUsed[i], w.budget[i])
		}
	}
	if w.peakQueue[1] > 2 {
		t.Errorf("the overload engine's queue held %d requests, over its bound of 2", w.peakQueue[1])
	}
	t.Logf("Go heap in use: %s before, peak %s during the load", mib(heapBefore), mib(w.peakHeap))
	if w.peakHeap > loadPeakHeap {
		t.Errorf("the Go heap in use reached %s, over %s", mib(w.peakHeap), mib(loadPeakHeap))
	}

	closeAll()
	heapAfter := heapAfterGC()
	t.Logf("Go heap after GC: %s before, %s after", mib(heapBefore), mib(heapAfter))
	if heapAfter > heapBefore+loadHeapGrowth {
		t.Errorf("the Go heap grew from %s to %s, more than %s", mib(heapBefore), mib(heapAfter), mib(loadHeapGrowth))
	}
	if err := goleak.Find(ignore); err != nil {
		t.Errorf("goroutines left after the servers and engines closed: %v", err)
	}
	t.Logf("goroutines: %d before, %d after", goroutinesBefore, runtime.NumGoroutine())
}

// loadServer serves e on loopback with its own handler. The caller closes it.
func loadServer(t *testing.T, e *engine.Engine, lim Limits) *httptest.Server {
	t.Helper()
	s, err := New(Config{Engine: e, ModelsDir: modelsDir, Limits: lim, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return httptest.NewServer(s)
}

// runLoad runs loadClients clients for d, client c sending pick(c, i) as
// its i-th request, and fails t for any request that neither succeeds with a
// well-formed body nor, when busyOK, is turned away with a proper 503.
func runLoad(t *testing.T, client *http.Client, base string, d time.Duration, pick func(c, i int) loadmix.Kind, busyOK bool) *loadmix.Stats {
	t.Helper()
	// No request may take long: one that hangs fails the test instead of
	// hanging it.
	st := loadmix.Run(t.Context(), loadmix.Config{URL: base, Client: client, Clients: loadClients, Duration: d, Pick: pick,
		Timeout: 60 * time.Second, BusyOK: busyOK, BusyBackoff: 50 * time.Millisecond, StopAfter: 50})
	for _, f := range st.Failures {
		t.Errorf("request failed: %s", f)
	}
	if n := st.Count(loadmix.Failed); n > int64(len(st.Failures)) {
		t.Errorf("... and %d more", n-int64(len(st.Failures)))
	}
	return st
}

// transcriptionKinds transcribe jfkShort, sampled once at temperature 1
// or by beam search, both without the fallback ladder.
func transcriptionKinds() []loadmix.Kind {
	return []loadmix.Kind{
		loadmix.Transcription("transcription", "ggml-micro.en", jfkShort, 3, map[string]string{"language": "en", "temperature": "1"}),
		loadmix.Transcription("transcription beams", "ggml-micro.en", jfkShort, 3, map[string]string{"language": "en", "temperature": "0", "beam_size": "3"}),
	}
}

// steadyMix is every kind of text request, a chat about an image, an
// abandoned stream, a cancelled chat and a malformed body.
func steadyMix(t *testing.T) []loadmix.Kind {
	return []loadmix.Kind{
		loadmix.OpenAIChat("tiny", false, 16),
		loadmix.OpenAIChat("tiny", true, 16),
		loadmix.OpenAICompletion("tiny", false, 16),
		loadmix.OpenAICompletion("tiny", true, 16),
		loadmix.Ollama("tiny", "/api/chat", false, 16),
		loadmix.Ollama("tiny", "/api/chat", true, 16),
		loadmix.Ollama("tiny", "/api/generate", true, 16),
		// No token limit: until the context is full, unless the client
		// leaves first, which it does.
		loadmix.Disconnect("tiny"),
		loadmix.OpenAIVision("seer", pngImage(t, 32, 24), 8),
		loadmix.Cancel("tiny", 200*time.Millisecond),
		loadmix.Malformed("tiny"),
	}
}

// overloadMix is text requests long enough to keep the one slot busy.
func overloadMix() []loadmix.Kind {
	return []loadmix.Kind{
		loadmix.OpenAIChat("tiny", false, 48),
		loadmix.OpenAIChat("tiny", true, 48),
		loadmix.OpenAICompletion("tiny", true, 48),
		loadmix.Ollama("tiny", "/api/chat", false, 48),
		loadmix.Ollama("tiny", "/api/generate", true, 48),
	}
}

// logTable logs the outcome of each kind of request.
func logTable(t *testing.T, st *loadmix.Stats) {
	var b strings.Builder
	st.Table(&b)
	t.Log("\n" + b.String())
}

// engineWatch is what watchEngines saw.
type engineWatch struct {
	budget, peakUsed [2]uint64
	peakQueue        [2]int
	peakHeap         uint64
	samples          int
}

// watchEngines samples the engines' memory and queues, and the Go heap,
// until ctx ends.
func watchEngines(ctx context.Context, engines ...*engine.Engine) engineWatch {
	var w engineWatch
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		for i, e := range engines {
			m := e.Metrics()
			w.budget[i] = m.MemoryBudget
			w.peakUsed[i] = max(w.peakUsed[i], m.MemoryUsed)
			for _, mm := range m.Models {
				w.peakQueue[i] = max(w.peakQueue[i], mm.QueueDepth)
			}
		}
		if n%10 == 0 { // ReadMemStats stops the world; not too often
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			w.peakHeap = max(w.peakHeap, ms.HeapInuse)
		}
		w.samples++
		select {
		case <-ctx.Done():
			return w
		case <-tick.C:
		}
	}
}

// waitEngineIdle waits until no request runs or waits on e's models.
func waitEngineIdle(t *testing.T, e *engine.Engine) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		busy := ""
		for _, m := range e.Metrics().Models {
			if m.Running > 0 || m.QueueDepth > 0 || m.InUse > 0 {
				busy = fmt.Sprintf("%s: %d running, %d waiting, %d in use", filepath.Base(m.Path), m.Running, m.QueueDepth, m.InUse)
			}
		}
		if busy == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the engine is still busy after the clients finished: %s", busy)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testDisconnectCancels streams an answer that would run until the
// context is full, hangs up after the first event, and checks that the
// engine stops generating it at once.
func testDisconnectCancels(t *testing.T, e *engine.Engine) {
	rec := &recording{Backend: e}
	s, err := New(Config{Engine: rec, ModelsDir: modelsDir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	defer ts.Close()
	tokens := func() int64 {
		var n int64
		for _, m := range e.Metrics().Models {
			n += m.DecodeTokens
		}
		return n
	}
	before := tokens()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := `{"model":"tiny","stream":true,"temperature":1,"seed":7,"messages":[{"role":"user","content":"Tell me a long story."}]}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for range 3 { // the role, then content
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: {") {
			t.Fatalf("event %q: %v", line, err)
		}
		br.ReadString('\n') // the blank line after it
	}
	hungUp := time.Now()
	cancel()
	resp.Body.Close()

	deadline := hungUp.Add(5 * time.Second)
	for {
		_, cerr := rec.last()
		running := 0
		for _, m := range e.Metrics().Models {
			running += m.Running + m.QueueDepth
		}
		// The server learns of the hang-up from the request's context or,
		// when it writes first, from the failed write; either ends the
		// request.
		var opErr *net.OpError
		if running == 0 && (errors.Is(cerr, context.Canceled) || errors.As(cerr, &opErr)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the client hung up: %d requests running, the chat returned %v", running, cerr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopped := time.Since(hungUp)
	generated := tokens() - before
	t.Logf("the engine stopped %s after the client hung up, having generated %d tokens (a context holds 1024)", stopped.Round(time.Millisecond), generated)
	if generated >= 1000 {
		t.Fatalf("%d tokens generated: the request ran to the end of its context instead of being cancelled", generated)
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
