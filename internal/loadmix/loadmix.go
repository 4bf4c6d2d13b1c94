// Package loadmix drives owl's HTTP API with a mixed load, the way many
// users at once would, and checks every answer: chat and completions
// through the OpenAI and ollama routes, streamed and not, chats with an
// image, transcriptions (long ones with the default beam search and
// fallback), streams abandoned after their first event, requests
// cancelled by their client, and malformed bodies.
//
// Run sends the load from a number of closed-loop clients for a while.
// An answer passes when it is a well-formed 200 (or the 400 a malformed
// body must get), or, when the caller allows it, a 503 with Retry-After
// and a "busy" error in the route's shape; anything else — another
// status, a body that does not parse, a request that outlives its
// timeout, a broken connection — is a failure, reported with its reason.
// Stats give the outcome of every kind of request and its latencies.
//
// It serves `owl bench serve` and `make soak` against a running server,
// and the server's load tests in process.
package loadmix

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A Kind is one kind of request in a mix.
type Kind struct {
	Name string
	// Ollama says errors come in ollama's shape ({"error": "…"}) rather
	// than OpenAI's.
	Ollama bool
	// Build returns client c's i-th request of this kind.
	Build func(rng *rand.Rand, c, i int) Request
	// Check validates the body of a 200 answer.
	Check func(body io.Reader, maxTokens int) error
	// Abandon reads the first event of a stream and hangs up.
	Abandon bool
	// CancelAfter, when positive, cancels the request after a random time
	// up to it (answers that come first are checked as usual).
	CancelAfter time.Duration
	// Malformed requests must get a 400 in the route's error shape.
	Malformed bool
}

// Request is one HTTP request of a Kind.
type Request struct {
	Path        string
	ContentType string
	Body        []byte
	MaxTokens   int // the token limit the request sets (0: none)
}

// Config says how to run a load.
type Config struct {
	URL     string       // the server's base URL
	Client  *http.Client // nil: a client with a connection per client
	APIKey  string       // sent as a bearer token when set
	Clients int          // closed-loop clients
	// Duration is how long clients start new requests; requests in flight
	// then run to their end.
	Duration time.Duration
	// Pick returns the kind of client c's i-th request.
	Pick func(c, i int) Kind
	// Timeout bounds each request (default 120 s); one that runs longer
	// is a failure.
	Timeout time.Duration
	// BusyOK accepts 503s that carry Retry-After; otherwise a 503 is a
	// failure. A client turned away waits up to BusyBackoff (default
	// 100 ms), less than Retry-After asks, before its next request.
	BusyOK      bool
	BusyBackoff time.Duration
	// StopAfter stops every client once that many requests failed (0:
	// never).
	StopAfter int
}

// Outcomes of a request, as Stats count them.
const (
	OK        = "ok"        // a well-formed 200 (or the 400 of a malformed body)
	Busy      = "busy"      // a well-formed 503 with Retry-After
	Abandoned = "abandoned" // a stream the client hung up on after its first event
	Cancelled = "cancelled" // a request the client cancelled before its answer
	Failed    = "failed"    // anything else
)

// Stats is the outcome of a load.
type Stats struct {
	Elapsed  time.Duration
	Kinds    map[string]*KindStats
	Failures []string // the first failures, with their reasons
}

// KindStats is the outcome of one kind's requests.
type KindStats struct {
	Outcomes  map[string]int64 // by OK, Busy, Abandoned, Cancelled, Failed
	Statuses  map[int]int64    // HTTP statuses of the answers
	Latencies []time.Duration  // of the answered requests (OK and Busy)
}

// Count is the number of requests with the given outcome, over all kinds.
func (s *Stats) Count(outcome string) int64 {
	var n int64
	for _, k := range s.Kinds {
		n += k.Outcomes[outcome]
	}
	return n
}

// Total is the number of requests sent.
func (s *Stats) Total() int64 {
	var n int64
	for _, k := range s.Kinds {
		for _, v := range k.Outcomes {
			n += v
		}
	}
	return n
}

// Percentile is the latency below which a fraction p of k's answered
// requests came back (0 without any).
func (k *KindStats) Percentile(p float64) time.Duration {
	if len(k.Latencies) == 0 {
		return 0
	}
	l := slices.Clone(k.Latencies)
	slices.Sort(l)
	i := int(p*float64(len(l))+0.5) - 1
	return l[min(max(i, 0), len(l)-1)]
}

// Names are the kinds in the stats, sorted.
func (s *Stats) Names() []string {
	var names []string
	for n := range s.Kinds {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// String sums the stats up in one line.
func (s *Stats) String() string {
	return fmt.Sprintf("%d requests in %s: %d ok, %d busy, %d abandoned, %d cancelled, %d failed",
		s.Total(), s.Elapsed.Round(time.Millisecond), s.Count(OK), s.Count(Busy), s.Count(Abandoned), s.Count(Cancelled), s.Count(Failed))
}

// Table writes one line per kind: its outcomes, statuses and latencies.
func (s *Stats) Table(w io.Writer) {
	fmt.Fprintf(w, "%-28s %6s %6s %6s %6s %6s  %-22s %9s %9s %9s\n", "kind", "ok", "busy", "aband", "cancel", "failed", "statuses", "p50", "p99", "max")
	for _, n := range s.Names() {
		k := s.Kinds[n]
		var st []string
		codes := make([]int, 0, len(k.Statuses))
		for c := range k.Statuses {
			codes = append(codes, c)
		}
		slices.Sort(codes)
		for _, c := range codes {
			st = append(st, fmt.Sprintf("%d×%d", c, k.Statuses[c]))
		}
		ms := func(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }
		fmt.Fprintf(w, "%-28s %6d %6d %6d %6d %6d  %-22s %9s %9s %9s\n", n, k.Outcomes[OK], k.Outcomes[Busy], k.Outcomes[Abandoned],
			k.Outcomes[Cancelled], k.Outcomes[Failed], strings.Join(st, " "), ms(k.Percentile(0.5)), ms(k.Percentile(0.99)), ms(k.Percentile(1)))
	}
}

// maxFailures is how many failures Stats keep the reasons of.
const maxFailures = 20

// Run runs the load of cfg until cfg.Duration is over (or ctx ends) and
// every request in flight has come back.
func Run(ctx context.Context, cfg Config) *Stats {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 120 * time.Second
	}
	if cfg.BusyBackoff <= 0 {
		cfg.BusyBackoff = 100 * time.Millisecond
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Clients}}
		defer client.CloseIdleConnections()
	}
	st := &Stats{Kinds: map[string]*KindStats{}}
	var mu sync.Mutex // guards st
	var failed atomic.Int64
	record := func(kind string, o outcome) {
		mu.Lock()
		defer mu.Unlock()
		k := st.Kinds[kind]
		if k == nil {
			k = &KindStats{Outcomes: map[string]int64{}, Statuses: map[int]int64{}}
			st.Kinds[kind] = k
		}
		k.Outcomes[o.result]++
		if o.status != 0 {
			k.Statuses[o.status]++
		}
		if o.result == OK || o.result == Busy {
			k.Latencies = append(k.Latencies, o.latency)
		}
		if o.result == Failed && len(st.Failures) < maxFailures {
			st.Failures = append(st.Failures, fmt.Sprintf("%s: %v", kind, o.err))
		}
	}
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for c := range cfg.Clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				if cfg.StopAfter > 0 && failed.Load() >= int64(cfg.StopAfter) {
					return
				}
				k := cfg.Pick(c, i)
				o := do(ctx, client, cfg, k, rng, c, i)
				if o.result == Busy && !cfg.BusyOK {
					o.result, o.err = Failed, errors.New("503 where none may come")
				}
				if o.result == Failed {
					failed.Add(1)
				}
				record(k.Name, o)
				if o.result == Busy {
					time.Sleep(time.Duration(rng.Int64N(int64(cfg.BusyBackoff))))
				}
			}
		})
	}
	wg.Wait()
	st.Elapsed = time.Since(start)
	return st
}

// outcome is what one request came to.
type outcome struct {
	result  string
	status  int
	latency time.Duration
	err     error
}

// do sends one request of kind k and checks its answer.
func do(ctx context.Context, client *http.Client, cfg Config, k Kind, rng *rand.Rand, c, i int) outcome {
	r := k.Build(rng, c, i)
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var cancelled atomic.Bool
	if k.CancelAfter > 0 {
		t := time.AfterFunc(time.Duration(rng.Int64N(int64(k.CancelAfter))), func() { cancelled.Store(true); cancel() })
		defer t.Stop()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL+r.Path, bytes.NewReader(r.Body))
	if err != nil {
		return outcome{result: Failed, err: err}
	}
	req.Header.Set("Content-Type", r.ContentType)
	if cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
	}
	start := time.Now()
	fail := func(status int, err error) outcome {
		switch {
		case cancelled.Load() && errors.Is(err, context.Canceled):
			return outcome{result: Cancelled, status: status}
		case errors.Is(err, context.DeadlineExceeded):
			err = fmt.Errorf("no answer after %s: %w", cfg.Timeout, err)
		}
		return outcome{result: Failed, status: status, err: err, latency: time.Since(start)}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fail(0, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable:
		if err := checkBusy(resp, k.Ollama); err != nil {
			return fail(resp.StatusCode, err)
		}
		return outcome{result: Busy, status: resp.StatusCode, latency: time.Since(start)}
	case k.Malformed:
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return fail(resp.StatusCode, err)
		}
		if resp.StatusCode != http.StatusBadRequest {
			return fail(resp.StatusCode, fmt.Errorf("status %d for a malformed body, want 400: %s", resp.StatusCode, b))
		}
		if err := checkError(b, k.Ollama); err != nil {
			return fail(resp.StatusCode, err)
		}
		return outcome{result: OK, status: resp.StatusCode, latency: time.Since(start)}
	case resp.StatusCode != http.StatusOK:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fail(resp.StatusCode, fmt.Errorf("status %d: %s", resp.StatusCode, b))
	case k.Abandon:
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !(strings.HasPrefix(line, "data: {") || strings.HasPrefix(line, "{")) {
			return fail(resp.StatusCode, fmt.Errorf("first event %q: %v", line, err))
		}
		// Closing the body before its end closes the connection, which
		// ends the request on the server.
		return outcome{result: Abandoned, status: resp.StatusCode}
	}
	if err := k.Check(resp.Body, r.MaxTokens); err != nil {
		return fail(resp.StatusCode, err)
	}
	return outcome{result: OK, status: resp.StatusCode, latency: time.Since(start)}
}

// checkBusy checks a 503: a Retry-After header of whole seconds and an
// error body in the route's shape that says the server is busy.
func checkBusy(resp *http.Response, ollama bool) error {
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || n < 1 {
		return fmt.Errorf("503 with Retry-After %q: %s", resp.Header.Get("Retry-After"), b)
	}
	if ollama {
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

// checkError checks an error body in the route's shape.
func checkError(b []byte, ollama bool) error {
	if ollama {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			return fmt.Errorf("error body %s", b)
		}
		return nil
	}
	var e struct {
		Error struct{ Type, Message string }
	}
	if json.Unmarshal(b, &e) != nil || e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
		return fmt.Errorf("error body %s", b)
	}
	return nil
}
