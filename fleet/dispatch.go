package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// WorkerInfo is a worker's advertisement in the workers bucket.
type WorkerInfo struct {
	ID       string      `json:"id"`
	Host     string      `json:"host"`
	Version  string      `json:"version,omitempty"`
	Started  time.Time   `json:"started"`
	Seen     time.Time   `json:"seen"`
	Models   []ModelInfo `json:"models"`
	Parallel int         `json:"parallel"`
	InFlight int         `json:"in_flight"`
	Done     uint64      `json:"lines_done"`    // results written (answers and refusals)
	Retried  uint64      `json:"lines_retried"` // lines handed back to run again
	Dead     uint64      `json:"lines_dead"`    // lines that ran out of deliveries here
	Stopping bool        `json:"stopping,omitempty"`
}

// ModelInfo is a model a worker holds and the kinds of work it takes
// for it.
type ModelInfo struct {
	Name    string   `json:"name"`
	Aliases []string `json:"aliases,omitempty"` // other names that resolve to it (a file name, NAME:latest)
	Work    []string `json:"work"`              // KindChat, KindComplete, KindEmbed, KindTranscribe
}

// lineMsg is a line on the lines stream.
type lineMsg struct {
	Request
	Blob string `json:"blob,omitempty"` // the body, when it is too large for the message
}

// resultValue is a result in the results bucket.
type resultValue struct {
	Result *Result `json:"result,omitempty"`
	Blob   string  `json:"blob,omitempty"` // the result, when too large for a value
	Worker string  `json:"worker,omitempty"`
}

// Workers lists the live workers.
func (c *Cluster) Workers(ctx context.Context) ([]WorkerInfo, error) {
	keys, err := c.workers.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("fleet: listing workers: %w", err)
	}
	var out []WorkerInfo
	for k := range keys.Keys() {
		e, err := c.workers.Get(ctx, k)
		if err != nil {
			continue // expired since
		}
		var w WorkerInfo
		if json.Unmarshal(e.Value(), &w) == nil && !w.Stopping {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b WorkerInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Route finds the model a line names among the workers' models: its
// name as the workers advertise it, and whether any takes that kind of
// work for it.
func Route(workers []WorkerInfo, kind, model string) (string, bool) {
	name := strings.TrimSuffix(model, ":latest")
	for _, w := range workers {
		for _, m := range w.Models {
			if !slices.Contains(m.Work, kind) {
				continue
			}
			if m.Name == model || m.Name == name || slices.Contains(m.Aliases, model) || slices.Contains(m.Aliases, name) {
				return m.Name, true
			}
		}
	}
	return "", false
}

// Held lists the models the workers hold for a kind of work.
func Held(workers []WorkerInfo, kind string) []string {
	var out []string
	for _, w := range workers {
		for _, m := range w.Models {
			if slices.Contains(m.Work, kind) && !slices.Contains(out, m.Name) {
				out = append(out, m.Name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Submit puts a request on the lines stream for the workers holding
// model (as Route names it) that take its kind of work. A request
// submitted twice is stored once (the stream drops duplicates by line
// for ten minutes; Pending tells a restarted server what is queued).
func (c *Cluster) Submit(ctx context.Context, kind, model string, r Request) error {
	key := LineKey(r.CustomID)
	m := lineMsg{Request: r}
	if len(r.Body) > maxInline {
		m.Blob = r.Batch + "." + key + ".body"
		if _, err := c.blobs.PutBytes(ctx, m.Blob, r.Body); err != nil {
			return fmt.Errorf("fleet: storing a line's body: %w", err)
		}
		m.Body = nil
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(lineSubject(kind, model, r.Batch, key))
	msg.Data = data
	if _, err := c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(r.Batch+"."+key)); err != nil {
		return fmt.Errorf("fleet: queueing line %s: %w", r.CustomID, err)
	}
	return nil
}

// Pending is the set of a batch's lines (by LineKey) on the stream:
// queued, or held by a worker.
func (c *Cluster) Pending(ctx context.Context, batch string) (map[string]bool, error) {
	info, err := c.lines.Info(ctx, jetstream.WithSubjectFilter("owl.line.*.*."+batch+".*"))
	if err != nil {
		return nil, fmt.Errorf("fleet: the lines queued: %w", err)
	}
	out := map[string]bool{}
	for subj := range info.State.Subjects {
		out[subj[strings.LastIndexByte(subj, '.')+1:]] = true
	}
	return out, nil
}

// Queued is the number of lines on the stream: waiting, or held by workers.
func (c *Cluster) Queued(ctx context.Context) (uint64, error) {
	info, err := c.lines.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// Collect hands each result of batch to add as it arrives in the
// results bucket (those there already first, then ready is called), and
// takes it out once add returned nil, until ctx ends. A watch that breaks
// (a node lost) is made again.
func (c *Cluster) Collect(ctx context.Context, batch string, add func(Result) error, ready func()) error {
	for ctx.Err() == nil {
		w, err := c.results.WatchFiltered(ctx, []string{batch + ".*"}, jetstream.IgnoreDeletes())
		if err != nil {
			sleep(ctx, 250*time.Millisecond)
			continue
		}
		err = c.collect(ctx, w, add, ready)
		w.Stop()
		if err != nil && ctx.Err() == nil {
			sleep(ctx, 250*time.Millisecond)
		}
	}
	return ctx.Err()
}

func (c *Cluster) collect(ctx context.Context, w jetstream.KeyWatcher, add func(Result) error, ready func()) error {
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil
		}
		if e == nil {
			ready() // the values there were are all handed
			continue
		}
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		var v resultValue
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			c.results.Delete(ctx, e.Key(), jetstream.LastRevision(e.Revision()))
			continue
		}
		if v.Blob != "" {
			raw, err := c.blobs.GetBytes(ctx, v.Blob)
			if err != nil {
				return fmt.Errorf("fleet: a stored result: %w", err)
			}
			v.Result = new(Result)
			if err := json.Unmarshal(raw, v.Result); err != nil {
				v.Result = nil
			}
		}
		if v.Result != nil {
			if err := add(*v.Result); err != nil {
				return err
			}
		}
		// The revision: a result written again since is handed next.
		if err := c.results.Delete(ctx, e.Key(), jetstream.LastRevision(e.Revision())); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("fleet: taking a result: %w", err)
		}
		if v.Blob != "" {
			c.blobs.Delete(ctx, v.Blob)
		}
	}
}

// Cancel takes a batch's lines off the stream; those held by workers
// finish, and their results are dropped by Forget.
func (c *Cluster) Cancel(ctx context.Context, batch string) error {
	if err := c.lines.Purge(ctx, jetstream.WithPurgeSubject("owl.line.*.*."+batch+".*")); err != nil {
		return fmt.Errorf("fleet: cancelling batch %s: %w", batch, err)
	}
	return nil
}

// Forget removes what the cluster still keeps of a finished batch:
// results that came after it ended, and bodies stored for its lines.
func (c *Cluster) Forget(ctx context.Context, batch string) error {
	st, err := c.js.Stream(ctx, "KV_"+ResultsBucket)
	if err != nil {
		return err
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+ResultsBucket+"."+batch+".>")); err != nil {
		return err
	}
	objs, err := c.blobs.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return err
	}
	for _, o := range objs {
		if strings.HasPrefix(o.Name, batch+".") {
			c.blobs.Delete(ctx, o.Name)
		}
	}
	return nil
}

// putResult writes a line's result, overwriting one written before.
func (c *Cluster) putResult(ctx context.Context, batch, key, worker string, res Result) error {
	v := resultValue{Result: &res, Worker: worker}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(data) > maxInline {
		raw, _ := json.Marshal(res)
		v = resultValue{Blob: batch + "." + key + ".result", Worker: worker}
		if _, err := c.blobs.PutBytes(ctx, v.Blob, raw); err != nil {
			return err
		}
		data, _ = json.Marshal(v)
	}
	_, err = c.results.Put(ctx, resultKey(batch, key), data)
	return err
}

// maxDeliveries is JetStream's advisory of a message that ran out of
// deliveries.
type maxDeliveries struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// DeadLetters runs until ctx ends, turning each line that ran out of
// deliveries without a result (every worker that took it died on it or
// let its time run out) into an error result for its batch, and a copy on
// the dead-letter stream (owl.dead.BATCH). Any server may run it: the
// result goes to the batch's server as any other does.
func (c *Cluster) DeadLetters(ctx context.Context) error {
	var cons jetstream.Consumer
	for ctx.Err() == nil {
		if cons == nil {
			var err error
			cons, err = c.js.CreateOrUpdateConsumer(ctx, AdvisoriesStream, jetstream.ConsumerConfig{Durable: deadLetterer,
				AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second})
			if err != nil {
				sleep(ctx, time.Second) // the cluster is not reachable yet
				continue
			}
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if gone(err) {
				cons = nil
			} else if ctx.Err() == nil && !idle(err) {
				sleep(ctx, 250*time.Millisecond)
			}
			continue
		}
		var a maxDeliveries
		if json.Unmarshal(msg.Data(), &a) != nil || a.Stream != LinesStream {
			msg.Ack()
			continue
		}
		if err := c.deadLetter(ctx, a); err != nil {
			msg.NakWithDelay(time.Second)
			continue
		}
		msg.Ack()
	}
	return nil
}

// idle says whether a fetch's error only means that no message came.
func idle(err error) bool {
	return errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}

// gone says whether a fetch's error means its consumer is no more (a
// node lost with it): it is made again.
func gone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted)
}

func (c *Cluster) deadLetter(ctx context.Context, a maxDeliveries) error {
	raw, err := c.lines.GetMsg(ctx, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // finished after all, or cancelled
	}
	if err != nil {
		return err
	}
	var m lineMsg
	if err := json.Unmarshal(raw.Data, &m); err != nil {
		return c.lines.DeleteMsg(ctx, a.StreamSeq)
	}
	key := LineKey(m.CustomID)
	res := Result{ID: "batch_req_dead_" + key, CustomID: m.CustomID, Error: &LineError{Code: "max_deliveries",
		Message: fmt.Sprintf("no worker finished this line in %d deliveries (each that took it stopped or ran past its ack time)", a.Deliveries)}}
	data, _ := json.Marshal(resultValue{Result: &res, Worker: deadLetterer})
	// A result written at the last moment wins over the dead letter.
	if _, err := c.results.Create(ctx, resultKey(m.Batch, key), data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	dead := nats.NewMsg("owl.dead." + m.Batch)
	dead.Data = raw.Data
	dead.Header.Set("Owl-Reason", res.Error.Message)
	dead.Header.Set("Owl-Line-Subject", raw.Subject)
	if _, err := c.js.PublishMsg(ctx, dead); err != nil {
		return err
	}
	if err := c.lines.DeleteMsg(ctx, a.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
