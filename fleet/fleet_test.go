package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/owlengine/owl/internal/natstest"
)

// echo answers every request with its body, and counts the runs.
type echo struct {
	mu   sync.Mutex
	runs map[string]int
}

func (e *echo) RunRequest(ctx context.Context, r Request) (Result, bool) {
	e.mu.Lock()
	e.runs[r.CustomID]++
	e.mu.Unlock()
	body, _ := json.Marshal(map[string]any{"echo": string(r.Body)})
	return Result{ID: "r-" + r.CustomID, CustomID: r.CustomID, Response: &Response{StatusCode: 200, Body: body}}, true
}

// Lines submitted go to the worker holding their model, and their results
// come back once each.
func TestSubmitWorkCollect(t *testing.T) {
	nodes := natstest.Start(t, 1)
	ctx := t.Context()
	cfg := Config{AckWait: time.Second, Heartbeat: 200 * time.Millisecond}
	c, err := Connect(ctx, nodes.URL(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e := &echo{runs: map[string]int{}}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Work(wctx, e, WorkerOptions{ID: "w1", Models: []ModelInfo{{Name: "tiny", Aliases: []string{"tiny.gguf"}, Work: []string{KindChat}}}})
	}()
	var workers []WorkerInfo
	for len(workers) == 0 {
		if workers, err = c.Workers(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	model, ok := Route(workers, KindChat, "tiny.gguf")
	if !ok || model != "tiny" {
		t.Fatalf("route: %q %v", model, ok)
	}
	if _, ok := Route(workers, KindTranscribe, "tiny"); ok {
		t.Fatal("a transcription routed to a chat worker")
	}
	const n = 50
	big := make([]byte, maxInline+10) // through the object store
	for i := range n {
		body := []byte(fmt.Sprintf(`{"i":%d}`, i))
		if i == 7 {
			body = big
		}
		r := Request{Batch: "batch_1", CustomID: fmt.Sprintf("l%d", i), URL: "/v1/chat/completions", Model: "tiny", Body: body}
		if err := c.Submit(ctx, KindChat, model, r); err != nil {
			t.Fatal(err)
		}
		if i < 5 { // twice: stored once
			if err := c.Submit(ctx, KindChat, model, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := map[string]Result{}
	var mu sync.Mutex
	cctx, stopCollect := context.WithTimeout(ctx, time.Minute)
	ready := make(chan struct{}, 1)
	go c.Collect(cctx, "batch_1", func(r Result) error {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := got[r.CustomID]; dup {
			t.Errorf("%s collected twice", r.CustomID)
		}
		got[r.CustomID] = r
		if len(got) == n {
			stopCollect()
		}
		return nil
	}, func() { ready <- struct{}{} })
	<-cctx.Done()
	if len(got) < n {
		t.Fatalf("%d of %d results", len(got), n)
	}
	<-ready
	var v map[string]string
	json.Unmarshal(got["l7"].Response.Body, &v)
	if len(v["echo"]) != len(big) {
		t.Fatalf("the large body came back with %d bytes", len(v["echo"]))
	}
	for id, k := range e.runs {
		if k != 1 {
			t.Errorf("%s ran %d times", id, k)
		}
	}
	if p, err := c.Pending(ctx, "batch_1"); err != nil || len(p) != 0 {
		t.Fatalf("pending after all ran: %v %v", p, err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ws, _ := c.Workers(ctx); len(ws) != 0 {
		t.Fatalf("a stopped worker is still advertised: %+v", ws)
	}
}
