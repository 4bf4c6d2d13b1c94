package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// batchLines is a JSONL batch input of chat, completion and transcription
// requests (greedy, so that each has one answer), and each line's request
// alone.
func batchLines(chats, completions, transcriptions int, audioID string) ([]byte, map[string]batchLine) {
	var buf bytes.Buffer
	lines := map[string]batchLine{}
	add := func(id, url string, body any) {
		b, _ := json.Marshal(body)
		l := batchLine{CustomID: id, Method: "POST", URL: url, Body: b}
		lines[id] = l
		json.NewEncoder(&buf).Encode(l)
	}
	for i := range chats {
		add(fmt.Sprintf("chat-%d", i), "/v1/chat/completions", map[string]any{"model": "tiny", "temperature": 0, "max_tokens": 6,
			"messages": []any{map[string]any{"role": "user", "content": fmt.Sprintf("Say %d.", i)}}})
	}
	for i := range completions {
		add(fmt.Sprintf("done-%d", i), "/v1/completions", map[string]any{"model": "tiny", "temperature": 0, "max_tokens": 6, "prompt": fmt.Sprintf("Count %d", i)})
	}
	for i := range transcriptions {
		add(fmt.Sprintf("heard-%d", i), "/v1/audio/transcriptions", map[string]any{"model": "ggml-micro.en", "file": audioID, "temperature": 0, "response_format": "json"})
	}
	return buf.Bytes(), lines
}

// answerOf is the text a response body of an endpoint carries.
func answerOf(t *testing.T, url string, body []byte) string {
	t.Helper()
	var v struct {
		Choices []struct {
			Text    string `json:"text"`
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s: %s: %v", url, body, err)
	}
	switch url {
	case "/v1/chat/completions":
		return v.Choices[0].Message.Content
	case "/v1/completions":
		return v.Choices[0].Text
	}
	return v.Text
}

// alone runs a line's request by itself, as a client would.
func alone(t *testing.T, ts string, s *Server, l batchLine) string {
	t.Helper()
	body, ct, err := s.batchRequestBody(l)
	if err != nil {
		t.Fatal(err)
	}
	code, _, b := post(t, ts+l.URL, ct, body)
	if code != 200 {
		t.Fatalf("%s alone: %d %s", l.CustomID, code, b)
	}
	return answerOf(t, l.URL, b)
}

// results reads a batch's output file: each line's result by custom id,
// failing on a line seen twice.
func results(t *testing.T, c openai.Client, fileID string) map[string]batchResult {
	t.Helper()
	resp, err := c.Files.Content(t.Context(), fileID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]batchResult{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r batchResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		if _, dup := out[r.CustomID]; dup {
			t.Fatalf("%s is in the output twice", r.CustomID)
		}
		out[r.CustomID] = r
	}
	return out
}

func waitBatch(t testing.TB, c openai.Client, id string, until func(*openai.Batch) bool) *openai.Batch {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		b, err := c.Batches.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if until(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s: %s after 5 minutes (%+v)", id, b.Status, b.RequestCounts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func done(b *openai.Batch) bool {
	return b.Status == "completed" || b.Status == "failed" || b.Status == "cancelled" || b.Status == "expired"
}

// batchServer serves the shared models with a data folder of its own.
func batchServer(t *testing.T, data string, be Backend) (*httptest.Server, *Server, openai.Client) {
	t.Helper()
	if be == nil {
		be = sharedEngine
	}
	s, err := New(Config{Engine: be, ModelsDir: modelsDir, DataDir: data, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() { ts.Close(); s.Close() })
	return ts, s, openai.NewClient(option.WithBaseURL(ts.URL+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0))
}

// 200 mixed lines (40 in the short run) through the OpenAI SDK's files and batches calls: every
// line's result is in the output once, equal to its request run alone.
func TestBatchLocal(t *testing.T) {
	ts, s, c := batchServer(t, t.TempDir(), nil)
	ctx := t.Context()
	audio, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(jfkShort), "jfk.wav", "audio/wav"), Purpose: openai.FilePurposeUserData})
	if err != nil {
		t.Fatal(err)
	}
	chats, completions, heard := 128, 70, 2
	if testing.Short() {
		chats, completions, heard = 24, 15, 1
	}
	total := chats + completions + heard
	input, lines := batchLines(chats, completions, heard, audio.ID)
	f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(input), "requests.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil || f.Purpose != "batch" || f.Bytes != int64(len(input)) {
		t.Fatalf("upload: %+v %v", f, err)
	}
	b, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h, Metadata: map[string]string{"job": "mixed"}})
	if err != nil || b.Status != "validating" || b.Metadata["job"] != "mixed" {
		t.Fatalf("create: %+v %v", b, err)
	}
	b = waitBatch(t, c, b.ID, done)
	if b.Status != "completed" || b.RequestCounts.Total != int64(total) || b.RequestCounts.Completed != int64(total) || b.RequestCounts.Failed != 0 || b.OutputFileID == "" ||
		b.CompletedAt == 0 || b.InProgressAt == 0 {
		t.Fatalf("batch: %+v", b)
	}
	got := results(t, c, b.OutputFileID)
	if len(got) != total {
		t.Fatalf("%d results for %d lines", len(got), total)
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
	list, err := c.Batches.List(ctx, openai.BatchListParams{})
	if err != nil || len(list.Data) != 1 || list.Data[0].ID != b.ID {
		t.Fatalf("list: %+v %v", list, err)
	}
	out, err := c.Files.Get(ctx, b.OutputFileID)
	if err != nil || out.Purpose != "batch_output" {
		t.Fatalf("output file: %+v %v", out, err)
	}
	if del, err := c.Files.Delete(ctx, f.ID); err != nil || !del.Deleted {
		t.Fatalf("delete: %+v %v", del, err)
	}
	if _, err := c.Files.Get(ctx, f.ID); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("a deleted file: %v", err)
	}
}

// A server stopped in the middle of a batch resumes it when it starts
// again on the same folder: every line once, none lost; a cancelled batch
// keeps what it did; a bad input fails the batch with the lines' errors.
func TestBatchResumeCancelAndValidation(t *testing.T) {
	data := t.TempDir()
	slow := &recording{Backend: sharedEngine, slow: 15 * time.Millisecond}
	ts, s, c := batchServer(t, data, slow)
	ctx := t.Context()
	input, lines := batchLines(40, 0, 0, "")
	f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(input), "requests.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	waitBatch(t, c, b.ID, func(b *openai.Batch) bool { return b.RequestCounts.Completed >= 6 })
	ts.Close()
	s.Close() // the process stops with the batch half done
	before, _ := s.batches.get(b.ID)
	if before.Status != "in_progress" || before.RequestCounts.Completed >= 40 {
		t.Fatalf("stopped batch: %+v", before)
	}
	_, s2, c2 := batchServer(t, data, slow)
	b2 := waitBatch(t, c2, b.ID, done)
	if b2.Status != "completed" || b2.RequestCounts.Completed != 40 {
		t.Fatalf("resumed batch: %+v", b2)
	}
	got := results(t, c2, b2.OutputFileID)
	if len(got) != 40 {
		t.Fatalf("%d results for 40 lines", len(got))
	}
	ts3 := httptest.NewServer(s2)
	defer ts3.Close()
	for id, l := range lines {
		if a, want := answerOf(t, l.URL, got[id].Response.Body), alone(t, ts3.URL, s2, l); a != want {
			t.Fatalf("%s: %q in the batch, %q alone", id, a, want)
		}
	}

	// Cancel.
	b3, err := c2.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	waitBatch(t, c2, b3.ID, func(b *openai.Batch) bool { return b.RequestCounts.Completed >= 2 })
	if cb, err := c2.Batches.Cancel(ctx, b3.ID); err != nil || (cb.Status != "cancelling" && cb.Status != "cancelled") {
		t.Fatalf("cancel: %+v %v", cb, err)
	}
	b3 = waitBatch(t, c2, b3.ID, done)
	if b3.Status != "cancelled" || b3.CancelledAt == 0 || b3.RequestCounts.Completed >= 40 || b3.RequestCounts.Completed < 2 {
		t.Fatalf("cancelled batch: %+v", b3)
	}
	if n := len(results(t, c2, b3.OutputFileID)); n != int(b3.RequestCounts.Completed) {
		t.Fatalf("%d results, %d counted", n, b3.RequestCounts.Completed)
	}
	if _, err := c2.Batches.Cancel(ctx, b3.ID); err == nil {
		t.Fatal("a cancelled batch was cancelled again")
	}

	// Validation.
	bad := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"tiny"}}
{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"tiny"}}
{"custom_id":"b","method":"GET","url":"/v1/chat/completions","body":{}}
not json
`
	bf, err := c2.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(bad), "bad.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	b4, err := c2.Batches.New(ctx, openai.BatchNewParams{InputFileID: bf.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	b4 = waitBatch(t, c2, b4.ID, done)
	if b4.Status != "failed" || len(b4.Errors.Data) != 3 || b4.Errors.Data[0].Code != "duplicate_custom_id" || b4.Errors.Data[0].Line != 2 {
		t.Fatalf("a bad input: %s %+v", b4.Status, b4.Errors.Data)
	}
	if _, err := c2.Batches.New(ctx, openai.BatchNewParams{InputFileID: "file-000000000000000000000000", Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: "24h"}); err == nil ||
		!strings.Contains(err.Error(), "404") {
		t.Fatalf("a batch of a missing file: %v", err)
	}
}
