package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/owlengine/owl/engine"
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
		text := steadyMix()
		pick := func(c, i int) loadKind {
			if c < loadTranscribers {
				return transcriptionKind
			}
			return text[(c+i)%len(text)]
		}
		st := runLoad(t, client, steadyServer.URL, steady, pick, false)
		t.Logf("steady load, %d clients for %s: %s", loadClients, steady, st)
		if st.ok == 0 || st.byKind["transcription"] == 0 || st.byKind["disconnect"] == 0 {
			t.Errorf("too little ran: %s", st)
		}
		if st.busy != 0 {
			t.Errorf("%d requests turned away busy with a queue that holds every client", st.busy)
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
		st := runLoad(t, client, overloadServer.URL, overload, func(c, i int) loadKind { return mix[(c+i)%len(mix)] }, true)
		t.Logf("overload, %d clients on 1 slot and a queue of 2 for %s: %s", loadClients, overload, st)
		if st.busy == 0 || st.ok == 0 {
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

// loadStats count what a phase's requests came to.
type loadStats struct {
	ok, busy int64
	byKind   map[string]int64 // successful requests by kind
	failures []string         // the first few problems
	failed   int64
	elapsed  time.Duration
}

func (s *loadStats) String() string {
	kinds := make([]string, 0, len(s.byKind))
	for k := range s.byKind {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	var b strings.Builder
	fmt.Fprintf(&b, "%d completed (%.0f/s), %d turned away with 503, %d failed (", s.ok, float64(s.ok)/s.elapsed.Seconds(), s.busy, s.failed)
	for i, k := range kinds {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, s.byKind[k])
	}
	b.WriteString(")")
	return b.String()
}

// runLoad runs loadClients clients for d, client c sending pick(c, i) as
// its i-th request, and fails t for any request that neither succeeds with a
// well-formed body nor, when busyOK, is turned away with a proper 503.
func runLoad(t *testing.T, client *http.Client, base string, d time.Duration, pick func(c, i int) loadKind, busyOK bool) *loadStats {
	t.Helper()
	st := &loadStats{byKind: map[string]int64{}}
	var mu sync.Mutex // guards st
	// record counts a request's outcome and returns the failures so far.
	record := func(kind string, err error, busy bool) int64 {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			st.failed++
			if len(st.failures) < 10 {
				st.failures = append(st.failures, kind+": "+err.Error())
			}
		case busy:
			st.busy++
		default:
			st.ok++
			st.byKind[kind]++
		}
		return st.failed
	}
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	var stop atomic.Bool
	for c := range loadClients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			for i := 0; time.Now().Before(deadline) && !stop.Load(); i++ {
				k := pick(c, i)
				// No request may take long: one that hangs fails the test
				// instead of hanging it.
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				busy, err := k.do(ctx, client, base, rng, c, i)
				cancel()
				if busy && !busyOK && err == nil {
					err = errors.New("503 outside the overload phase")
				}
				if err != nil {
					if record(k.name, err, false) > 50 {
						stop.Store(true) // enough to see what is wrong
					}
					continue
				}
				record(k.name, nil, busy)
				if busy {
					// A busy client that retried at once would only spin;
					// this one waits a little, less than Retry-After says.
					time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	st.elapsed = time.Since(start)
	for _, f := range st.failures {
		t.Errorf("request failed: %s", f)
	}
	if st.failed > int64(len(st.failures)) {
		t.Errorf("... and %d more", st.failed-int64(len(st.failures)))
	}
	return st
}

// loadKind is one kind of request in the mix.
type loadKind struct {
	name string
	api  api // the shape of its errors
	// build returns the request for client c's i-th request.
	build func(rng *rand.Rand, c, i int) (path, contentType string, body []byte)
	// check validates the body of a 200 answer; maxTokens is what the
	// request allowed.
	check func(body io.Reader, maxTokens int) error
	// abort, when set, reads the first event of the stream and hangs up.
	abort bool
}

// do sends one request and checks the answer. busy says the server turned
// it away with 503; err is nil when that 503 was well-formed.
func (k loadKind) do(ctx context.Context, client *http.Client, base string, rng *rand.Rand, c, i int) (busy bool, err error) {
	path, ct, body := k.build(rng, c, i)
	maxTokens := requestMaxTokens(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", ct)
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusServiceUnavailable:
		return true, checkLoadBusy(resp, k.api)
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return false, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if k.abort {
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "data: {") {
			return false, fmt.Errorf("first event %q: %v", line, err)
		}
		// Closing the body before its end closes the connection, which
		// ends the request on the server.
		return false, nil
	}
	if err := k.check(resp.Body, maxTokens); err != nil {
		return false, err
	}
	return false, nil
}

// checkLoadBusy checks a 503: a Retry-After header and an error body in the
// route's shape that says the server is busy.
func checkLoadBusy(resp *http.Response, a api) error {
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if ra := resp.Header.Get("Retry-After"); ra != "1" {
		return fmt.Errorf("503 with Retry-After %q, want 1: %s", ra, b)
	}
	if a == apiOllama {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) != nil || !strings.Contains(e.Error, "busy") {
			return fmt.Errorf("503 body %s", b)
		}
		return nil
	}
	var e struct {
		Error struct{ Type, Code, Message string }
	}
	if json.Unmarshal(b, &e) != nil || e.Error.Type != "server_busy" || e.Error.Code != "server_busy" || e.Error.Message == "" {
		return fmt.Errorf("503 body %s", b)
	}
	return nil
}

// requestMaxTokens finds the token limit a JSON request body sets (0: none).
func requestMaxTokens(body []byte) int {
	var v struct {
		MaxTokens int `json:"max_tokens"`
		Options   struct {
			NumPredict int `json:"num_predict"`
		} `json:"options"`
	}
	if json.Unmarshal(body, &v) != nil {
		return 0
	}
	return max(v.MaxTokens, v.Options.NumPredict)
}

// loadSampling varies the requests: greedy or sampled with a seed, and a
// short limit.
func loadSampling(rng *rand.Rand, maxTokens int) map[string]any {
	m := map[string]any{"max_tokens": 2 + rng.IntN(maxTokens-1), "seed": rng.IntN(1000)}
	if rng.IntN(2) == 0 {
		m["temperature"] = 0
	} else {
		m["temperature"] = 0.8
	}
	return m
}

func loadJSON(v map[string]any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func loadPrompt(c, i int) string {
	topics := []string{"owls", "rivers", "the moon", "bread", "trains", "snow", "clocks", "maps"}
	return fmt.Sprintf("Client %d, question %d: tell me about %s.", c, i, topics[(c+i)%len(topics)])
}

// loadOpenAIChat is a chat completion request, streamed or not.
func loadOpenAIChat(stream bool, maxTokens int) func(*rand.Rand, int, int) (string, string, []byte) {
	return func(rng *rand.Rand, c, i int) (string, string, []byte) {
		m := loadSampling(rng, maxTokens)
		m["model"] = "tiny"
		m["messages"] = []map[string]string{{"role": "system", "content": "You are brief."}, {"role": "user", "content": loadPrompt(c, i)}}
		if stream {
			m["stream"] = true
			m["stream_options"] = map[string]bool{"include_usage": true}
		}
		return "/v1/chat/completions", "application/json", loadJSON(m)
	}
}

func loadOpenAICompletion(stream bool, maxTokens int) func(*rand.Rand, int, int) (string, string, []byte) {
	return func(rng *rand.Rand, c, i int) (string, string, []byte) {
		m := loadSampling(rng, maxTokens)
		m["model"] = "tiny"
		m["prompt"] = loadPrompt(c, i)
		m["stream"] = stream
		return "/v1/completions", "application/json", loadJSON(m)
	}
}

func loadOllama(path string, stream bool, maxTokens int) func(*rand.Rand, int, int) (string, string, []byte) {
	return func(rng *rand.Rand, c, i int) (string, string, []byte) {
		s := loadSampling(rng, maxTokens)
		m := map[string]any{"model": "tiny", "stream": stream,
			"options": map[string]any{"num_predict": s["max_tokens"], "temperature": s["temperature"], "seed": s["seed"]}}
		if path == "/api/chat" {
			m["messages"] = []map[string]string{{"role": "user", "content": loadPrompt(c, i)}}
		} else {
			m["prompt"] = loadPrompt(c, i)
		}
		return path, "application/json", loadJSON(m)
	}
}

func loadTranscription(*rand.Rand, int, int) (string, string, []byte) {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	f, _ := w.CreateFormFile("file", "jfk.wav")
	f.Write(jfkShort)
	// Temperature 1 samples once, without the fallback ladder.
	for k, v := range map[string]string{"model": "ggml-micro.en", "language": "en", "temperature": "1", "response_format": "json"} {
		w.WriteField(k, v)
	}
	w.Close()
	return "/v1/audio/transcriptions", w.FormDataContentType(), b.Bytes()
}

// transcriptionKind transcribes jfkShort.
var transcriptionKind = loadKind{name: "transcription", build: loadTranscription, check: checkTranscription}

// steadyMix is every kind of text request, an abandoned stream among
// eight.
func steadyMix() []loadKind {
	return []loadKind{
		{name: "openai chat", build: loadOpenAIChat(false, 16), check: checkChatCompletion},
		{name: "openai chat stream", build: loadOpenAIChat(true, 16), check: checkChatStream},
		{name: "openai completion", build: loadOpenAICompletion(false, 16), check: checkCompletion},
		{name: "openai completion stream", build: loadOpenAICompletion(true, 16), check: checkCompletionStream},
		{name: "ollama chat", api: apiOllama, build: loadOllama("/api/chat", false, 16), check: checkOllama(false, "message")},
		{name: "ollama chat stream", api: apiOllama, build: loadOllama("/api/chat", true, 16), check: checkOllama(true, "message")},
		{name: "ollama generate stream", api: apiOllama, build: loadOllama("/api/generate", true, 16), check: checkOllama(true, "response")},
		// max_tokens 0: until the context is full, unless the client
		// leaves first, which it does.
		{name: "disconnect", build: func(rng *rand.Rand, c, i int) (string, string, []byte) {
			m := map[string]any{"model": "tiny", "stream": true, "messages": []map[string]string{{"role": "user", "content": loadPrompt(c, i)}}}
			return "/v1/chat/completions", "application/json", loadJSON(m)
		}, abort: true},
	}
}

// overloadMix is text requests long enough to keep the one slot busy.
func overloadMix() []loadKind {
	return []loadKind{
		{name: "openai chat", build: loadOpenAIChat(false, 48), check: checkChatCompletion},
		{name: "openai chat stream", build: loadOpenAIChat(true, 48), check: checkChatStream},
		{name: "openai completion stream", build: loadOpenAICompletion(true, 48), check: checkCompletionStream},
		{name: "ollama chat", api: apiOllama, build: loadOllama("/api/chat", false, 48), check: checkOllama(false, "message")},
		{name: "ollama generate stream", api: apiOllama, build: loadOllama("/api/generate", true, 48), check: checkOllama(true, "response")},
	}
}

// loadUsage is OpenAI's usage object.
type loadUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// checkLoadFinish checks a finish reason and token counts against the limit.
func checkLoadFinish(reason string, u loadUsage, maxTokens int) error {
	switch {
	case reason != "stop" && reason != "length":
		return fmt.Errorf("finish reason %q", reason)
	case u.PromptTokens <= 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens:
		return fmt.Errorf("usage %+v", u)
	case maxTokens > 0 && (u.CompletionTokens > maxTokens || (reason == "length") != (u.CompletionTokens == maxTokens)):
		return fmt.Errorf("finish %q after %d tokens, max_tokens %d", reason, u.CompletionTokens, maxTokens)
	}
	return nil
}

func checkChatCompletion(body io.Reader, maxTokens int) error {
	var v struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Choices []struct {
			Message struct {
				Role    string  `json:"role"`
				Content *string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage loadUsage `json:"usage"`
	}
	if err := decodeOne(body, &v); err != nil {
		return err
	}
	if v.Object != "chat.completion" || !strings.HasPrefix(v.ID, "chatcmpl-") || len(v.Choices) != 1 ||
		v.Choices[0].Message.Role != "assistant" || v.Choices[0].Message.Content == nil {
		return fmt.Errorf("chat completion %+v", v)
	}
	return checkLoadFinish(v.Choices[0].FinishReason, v.Usage, maxTokens)
}

func checkCompletion(body io.Reader, maxTokens int) error {
	var v struct {
		Object  string `json:"object"`
		Choices []struct {
			Text         *string `json:"text"`
			FinishReason string  `json:"finish_reason"`
		} `json:"choices"`
		Usage loadUsage `json:"usage"`
	}
	if err := decodeOne(body, &v); err != nil {
		return err
	}
	if v.Object != "text_completion" || len(v.Choices) != 1 || v.Choices[0].Text == nil {
		return fmt.Errorf("completion %+v", v)
	}
	return checkLoadFinish(v.Choices[0].FinishReason, v.Usage, maxTokens)
}

// decodeOne decodes one JSON value and requires nothing after it.
func decodeOne(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON body")
	}
	return nil
}

// readSSE reads a Server-Sent Events stream that must end with
// "data: [DONE]", returning the events' JSON.
func readSSE(body io.Reader) ([][]byte, error) {
	sc := bufio.NewScanner(body)
	var events [][]byte
	done := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
		case done:
			return nil, fmt.Errorf("%q after [DONE]", line)
		case line == "data: [DONE]":
			done = true
		case strings.HasPrefix(line, "data: "):
			events = append(events, []byte(strings.TrimPrefix(line, "data: ")))
		default:
			return nil, fmt.Errorf("not an SSE line: %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !done {
		return nil, fmt.Errorf("the stream ended without [DONE] after %d events", len(events))
	}
	return events, nil
}

func checkChatStream(body io.Reader, maxTokens int) error {
	events, err := readSSE(body)
	if err != nil {
		return err
	}
	finish, sawUsage := "", false
	var u loadUsage
	for n, ev := range events {
		var v struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct {
					Role    string  `json:"role"`
					Content *string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *loadUsage `json:"usage"`
			Error any        `json:"error"`
		}
		if err := json.Unmarshal(ev, &v); err != nil || v.Object != "chat.completion.chunk" || v.Error != nil {
			return fmt.Errorf("event %d: %s (%v)", n, ev, err)
		}
		switch {
		case v.Usage != nil:
			if len(v.Choices) != 0 || n != len(events)-1 {
				return fmt.Errorf("usage event %d of %d: %s", n, len(events), ev)
			}
			u, sawUsage = *v.Usage, true
		case len(v.Choices) != 1 || finish != "":
			return fmt.Errorf("event %d after the finish %q: %s", n, finish, ev)
		case n == 0 && v.Choices[0].Delta.Role != "assistant":
			return fmt.Errorf("first event %s", ev)
		case v.Choices[0].FinishReason != nil:
			finish = *v.Choices[0].FinishReason
		}
	}
	if !sawUsage {
		return fmt.Errorf("no usage event among %d", len(events))
	}
	return checkLoadFinish(finish, u, maxTokens)
}

func checkCompletionStream(body io.Reader, maxTokens int) error {
	events, err := readSSE(body)
	if err != nil {
		return err
	}
	if len(events) == 0 {
		return errors.New("no events")
	}
	for n, ev := range events {
		var v struct {
			Object  string `json:"object"`
			Choices []struct {
				Text         *string `json:"text"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(ev, &v); err != nil || v.Object != "text_completion" || len(v.Choices) != 1 || v.Choices[0].Text == nil {
			return fmt.Errorf("event %d: %s (%v)", n, ev, err)
		}
		last := n == len(events)-1
		if f := v.Choices[0].FinishReason; (f != nil) != last || (last && *f != "stop" && *f != "length") {
			return fmt.Errorf("event %d of %d: %s", n, len(events), ev)
		}
	}
	return nil
}

// checkOllama checks an ollama answer, one object or an NDJSON stream,
// whose text is in field ("message" or "response").
func checkOllama(stream bool, field string) func(io.Reader, int) error {
	return func(body io.Reader, maxTokens int) error {
		b, err := io.ReadAll(body)
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if !stream && len(lines) != 1 {
			return fmt.Errorf("%d lines in an answer not streamed", len(lines))
		}
		for n, line := range lines {
			var v map[string]json.RawMessage
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				return fmt.Errorf("line %d: %q: %v", n, line, err)
			}
			last := n == len(lines)-1
			if _, ok := v["error"]; ok {
				return fmt.Errorf("line %d: %s", n, line)
			}
			if string(v["model"]) != `"tiny"` || string(v["done"]) != fmt.Sprint(last) || v[field] == nil {
				return fmt.Errorf("line %d of %d: %s", n, len(lines), line)
			}
			if last {
				var end struct {
					DoneReason string `json:"done_reason"`
					EvalCount  int    `json:"eval_count"`
				}
				json.Unmarshal([]byte(line), &end)
				if (end.DoneReason != "stop" && end.DoneReason != "length") || end.EvalCount > maxTokens {
					return fmt.Errorf("last line %s (num_predict %d)", line, maxTokens)
				}
			}
		}
		return nil
	}
}

func checkTranscription(body io.Reader, _ int) error {
	var v struct {
		Text  *string `json:"text"`
		Usage struct {
			Type    string  `json:"type"`
			Seconds float64 `json:"seconds"`
		} `json:"usage"`
	}
	if err := decodeOne(body, &v); err != nil {
		return err
	}
	if v.Text == nil || v.Usage.Type != "duration" || v.Usage.Seconds != 3 {
		return fmt.Errorf("transcription %+v", v)
	}
	return nil
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
