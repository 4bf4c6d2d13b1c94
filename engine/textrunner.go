package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/owlengine/owl/compute"
	"github.com/owlengine/owl/llm"
)

// ErrBusy is returned at once when a model's queue of waiting requests is
// full; the caller may retry later.
var ErrBusy = errors.New("engine busy: too many requests waiting for the model")

// Priority orders the requests waiting for a model and the prompt tokens
// of a decode step: higher first, then in order of arrival.
type Priority int

// Priorities.
const (
	PriorityBatch       Priority = -1 // bulk work: benchmarks, offline jobs
	PriorityNormal      Priority = 0
	PriorityInteractive Priority = 1 // a person is waiting: chat, live dictation
)

// textRunner serves one loaded text model by continuous batching. Its loop
// goroutine owns the llama context and the slots (the context's sequences):
// each step it packs the next token of every generating request and, within
// the token budget, chunks of waiting prompts into one decode. Requests
// join when a slot is free and leave as soon as they finish or are
// cancelled. An idle slot keeps its tokens' keys and values, so a later
// request that starts with the same tokens (a system prompt, a chat's
// history) evaluates only the rest.
type textRunner struct {
	model  *llm.Model
	proj   atomic.Pointer[llm.Projector] // nil for a text-only model; set once when a projector attaches
	lctx   *llm.Context
	perSeq int // cells one sequence may use
	budget int // tokens per decode step
	// joinBudget bounds the prompt tokens of a step in which other
	// requests generate.
	joinBudget int
	maxQueue   int
	queueWait  time.Duration // how long a request may wait for a slot (0: until its context ends)
	// gate shares the cores with the engine's other models: each decode
	// takes units from it, at the priority of the step's most urgent
	// request.
	gate  *compute.Gate
	units int
	// threads is what the context computes with now: units, or fewer for
	// small steps while other programs are busy on the cores.
	threads int

	mu      sync.Mutex // guards waiting, closed and nextID
	waiting []*textJob
	closed  bool
	nextID  uint64
	wake    chan struct{} // a job arrived or the runner is closing (capacity 1)
	done    chan struct{} // closed when the loop has returned

	// Owned by the loop goroutine.
	slots  []*slot
	active []*textJob
	batch  llm.Batch
	clock  uint64 // orders slot use for LRU

	stats textStats
	queue queueStats

	// onLogits, when set (tests), sees the logits every request samples
	// from, with the request's prompt.
	onLogits func(prompt []llm.Token, step int, logits []float32)
}

// slot is one sequence of the context.
type slot struct {
	id int32
	// cached identifies the cells the sequence holds, in order: a text
	// cell by its token, an image cell by a negative key derived from the
	// image's content hash (imageKey).
	cached   []llm.Token
	posAfter []int32  // the position that follows each cell
	cut      []bool   // whether a prefix may end after each cell (not inside an image)
	job      *textJob // the request using it, nil when idle
	used     uint64   // clock value of the last use
}

// nextPos is the position of the next cell.
func (s *slot) nextPos() int32 {
	if len(s.cached) == 0 {
		return 0
	}
	return s.posAfter[len(s.cached)-1]
}

// truncate keeps the first n cells.
func (s *slot) truncate(n int) {
	s.cached, s.posAfter, s.cut = s.cached[:n], s.posAfter[:n], s.cut[:n]
}

// appendText records text cells from the slot's next position.
func (s *slot) appendText(toks []llm.Token) {
	pos := s.nextPos()
	for i, t := range toks {
		s.cached = append(s.cached, t)
		s.posAfter = append(s.posAfter, pos+int32(i)+1)
		s.cut = append(s.cut, true)
	}
}

// appendImage records an image's cells, which end at position next.
func (s *slot) appendImage(keys []llm.Token, next int32) {
	for i, k := range keys {
		s.cached = append(s.cached, k)
		s.posAfter = append(s.posAfter, next)
		s.cut = append(s.cut, i == len(keys)-1)
	}
}

// copyFrom makes s hold src's first n cells.
func (s *slot) copyFrom(src *slot, n int) {
	s.cached = append(s.cached[:0], src.cached[:n]...)
	s.posAfter = append(s.posAfter[:0], src.posAfter[:n]...)
	s.cut = append(s.cut[:0], src.cut[:n]...)
}

// textJob is one request on a runner.
type textJob struct {
	id       uint64
	ctx      context.Context
	gen      *llm.Generation
	priority Priority
	arrived  time.Time

	// Owned by the loop.
	slot     *slot
	keys     []llm.Token             // the prompt's cells, as a slot records them
	images   map[int]*llm.ImageChunk // the image starting at each image's first cell
	next     int                     // the first prompt cell not yet evaluated
	cached   int                     // prompt cells reused from the cache
	admitted time.Time
	prompted time.Time // when the prompt's last token was evaluated
	steps    int

	// Handed to the caller.
	mu       sync.Mutex // guards chunks
	chunks   []llm.Chunk
	notify   chan struct{} // chunks were added (capacity 1)
	finished chan struct{} // closed after res and err are set
	res      llm.Result
	err      error
}

// textStats are a runner's counters, read by Engine.Metrics.
type textStats struct {
	steps, stepTokens, decodeTokens, promptTokens, cachedTokens, requests atomic.Int64
	running                                                               atomic.Int64
	genNanos                                                              atomic.Int64 // time spent in steps that generated tokens
}

// runnerOptions size a runner.
type runnerOptions struct {
	perSeq, parallel, budget, joinBudget, maxQueue, threads int
	queueWait                                               time.Duration
	kvType                                                  string
	flashAttn                                               bool
	gate                                                    *compute.Gate // shared with the engine's other models
	units                                                   int           // what a step takes from gate: the threads
}

func newTextRunner(m *llm.Model, o runnerOptions) (*textRunner, error) {
	lctx, err := m.NewContext(llm.ContextOptions{NumCtx: o.perSeq * o.parallel, NumBatch: o.budget, NumSeq: o.parallel,
		Threads: o.threads, KVType: o.kvType, FlashAttn: o.flashAttn})
	if err != nil {
		return nil, err
	}
	r := &textRunner{model: m, lctx: lctx, perSeq: o.perSeq, budget: lctx.NumBatch(), joinBudget: max(o.joinBudget, 1), maxQueue: o.maxQueue,
		queueWait: o.queueWait, gate: o.gate, units: o.units, threads: o.units, wake: make(chan struct{}, 1), done: make(chan struct{})}
	for i := range o.parallel {
		r.slots = append(r.slots, &slot{id: int32(i)})
	}
	go r.loop()
	return r, nil
}

// close stops the loop after failing whatever is left with ErrClosed and
// frees the context.
func (r *textRunner) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.signal()
	<-r.done
	r.lctx.Close()
}

func (r *textRunner) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// queueDepth is the number of requests waiting for a slot.
func (r *textRunner) queueDepth() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waiting)
}

// generate runs req on the runner, calling onChunk from the caller's
// goroutine as text arrives. parts, when not nil, is the prompt with images
// (req.Prompt is then ignored).
func (r *textRunner) generate(ctx context.Context, req llm.Request, parts []llm.PromptPart, prio Priority, onChunk func(llm.Chunk) error) (llm.Result, error) {
	if parts == nil {
		parts = []llm.PromptPart{{Tokens: req.Prompt}}
	}
	keys, images, text := promptCells(parts)
	req.Prompt = text
	gen, err := r.model.NewGeneration(req)
	if err != nil {
		return llm.Result{PromptTokens: len(keys)}, err
	}
	gen.SetPromptTokens(len(keys))
	switch {
	case len(keys) >= r.perSeq:
		return gen.Result(), fmt.Errorf("%w: the prompt has %d tokens, a request's context holds %d (raise --ctx-size or shorten the prompt)",
			ErrContextFull, len(keys), r.perSeq)
	case images[len(keys)-1] != nil || len(parts[len(parts)-1].Tokens) == 0:
		return gen.Result(), errors.New("a prompt must end with text, not an image")
	}
	if err := ctx.Err(); err != nil {
		return gen.Result(), err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j := &textJob{ctx: ctx, gen: gen, priority: prio, arrived: time.Now(), keys: keys, images: images,
		notify: make(chan struct{}, 1), finished: make(chan struct{})}
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return gen.Result(), ErrClosed
	case len(r.waiting) >= r.maxQueue:
		r.mu.Unlock()
		r.queue.rejected.Add(1)
		return gen.Result(), fmt.Errorf("%w (%d waiting)", ErrBusy, r.maxQueue)
	}
	r.nextID++
	j.id = r.nextID
	r.waiting = append(r.waiting, j)
	r.mu.Unlock()
	r.signal()

	var cbErr error
	deliver := func() {
		j.mu.Lock()
		chunks := j.chunks
		j.chunks = nil
		j.mu.Unlock()
		for _, c := range chunks {
			if cbErr == nil && onChunk != nil && (c.Text != "" || len(c.Tokens) > 0) {
				if cbErr = onChunk(c); cbErr != nil {
					cancel() // the loop frees the slot at its next step
				}
			}
		}
	}
	done := ctx.Done()
	// leave takes j out of the queue if it is still waiting.
	leave := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if i := slices.Index(r.waiting, j); i >= 0 {
			r.waiting = slices.Delete(r.waiting, i, i+1)
			return true
		}
		return false
	}
	var queueWait <-chan time.Time
	if r.queueWait > 0 {
		t := time.NewTimer(r.queueWait)
		defer t.Stop()
		queueWait = t.C
	}
	for {
		select {
		case <-queueWait:
			queueWait = nil
			if leave() {
				r.queue.rejected.Add(1)
				return gen.Result(), fmt.Errorf("%w: waited %s for one of the model's %d slots", ErrBusy, r.queueWait, len(r.slots))
			}
		case <-j.notify:
			deliver()
		case <-done:
			// Still waiting: leave the queue at once. Running: the loop
			// notices at its next step.
			done = nil
			if leave() {
				return gen.Result(), context.Cause(ctx)
			}
		case <-j.finished:
			deliver()
			if cbErr != nil {
				return j.res, cbErr
			}
			return j.res, j.err
		}
	}
}

// loop runs decode steps while there is work.
func (r *textRunner) loop() {
	defer close(r.done)
	for {
		r.mu.Lock()
		if r.closed {
			waiting := r.waiting
			r.waiting = nil
			r.mu.Unlock()
			for _, j := range append(r.active, waiting...) {
				r.finish(j, ErrClosed)
			}
			r.active = nil
			return
		}
		r.admit()
		r.mu.Unlock()
		if len(r.active) == 0 {
			<-r.wake
			continue
		}
		r.protectedStep()
	}
}

// admit moves waiting requests, highest priority first, into free slots.
// r.mu is held.
func (r *textRunner) admit() {
	if len(r.waiting) == 0 {
		return
	}
	slices.SortStableFunc(r.waiting, func(a, b *textJob) int { return int(b.priority) - int(a.priority) })
	for len(r.waiting) > 0 && len(r.active) < len(r.slots) {
		j := r.waiting[0]
		r.waiting = r.waiting[1:]
		r.assign(j)
		r.active = append(r.active, j)
	}
	slices.SortStableFunc(r.active, func(a, b *textJob) int {
		if a.priority != b.priority {
			return int(b.priority) - int(a.priority)
		}
		return int(a.id - b.id)
	})
	r.stats.running.Store(int64(len(r.active)))
}

// assign gives j a free slot holding as much of its prompt as any slot has:
// the free slot itself, or another slot's prefix shared into it. A prefix
// never ends inside an image, nor includes the prompt's last cell (it is
// evaluated for its logits).
func (r *textRunner) assign(j *textJob) {
	prompt := j.keys
	limit := len(prompt) - 1
	usable := func(s *slot, n int) int {
		n = min(n, limit)
		for n > 0 && !s.cut[n-1] {
			n--
		}
		return n
	}
	var src *slot
	best := 0
	for _, s := range r.slots {
		if n := usable(s, llm.CommonPrefix(s.cached, prompt)); n > best {
			src, best = s, n
		}
	}
	var target *slot
	if src != nil && src.job == nil {
		target = src
	} else {
		// The free slot whose loss costs least: an empty one, else the
		// least recently used.
		for _, s := range r.slots {
			if s.job == nil && (target == nil || cheaperToEvict(s, target)) {
				target = s
			}
		}
	}
	keep := 0
	switch {
	case src != nil && target != src:
		r.lctx.SeqRemove(target.id, 0, -1)
		r.lctx.SeqCopy(src.id, target.id, 0, src.posAfter[best-1])
		target.copyFrom(src, best)
		keep = best
	case target == src && best > 0:
		keep = best
		if !r.lctx.SeqRemove(target.id, target.posAfter[keep-1], -1) {
			keep = 0
			r.lctx.SeqRemove(target.id, 0, -1)
		}
		target.truncate(keep)
	default:
		r.lctx.SeqRemove(target.id, 0, -1)
		target.truncate(0)
	}
	r.clock++
	target.job, target.used = j, r.clock
	j.slot, j.cached, j.next, j.admitted = target, keep, keep, time.Now()
	r.queue.observe(j.admitted.Sub(j.arrived))
	r.stats.cachedTokens.Add(int64(keep))
	r.stats.requests.Add(1)
}

// promptCells lays a prompt out as cells: the key of each (text tokens as
// themselves, image cells as imageKey), the image starting at each image's
// first cell, and the text tokens alone (for the sampler's penalties).
func promptCells(parts []llm.PromptPart) (keys []llm.Token, images map[int]*llm.ImageChunk, text []llm.Token) {
	images = map[int]*llm.ImageChunk{}
	for _, p := range parts {
		if p.Image != nil {
			images[len(keys)] = p.Image
			keys = append(keys, imageKeys(p.Image)...)
			continue
		}
		keys = append(keys, p.Tokens...)
		text = append(text, p.Tokens...)
	}
	return keys, images, text
}

// imageKeys names an image chunk's cells: negative numbers (no token is
// negative) from a hash of the image's content, its projector, its part and
// the cell's index, so that the same image gives the same keys and another
// image (almost surely) others.
func imageKeys(im *llm.ImageChunk) []llm.Token {
	h := fnv.New32a()
	h.Write(im.Key.Image[:])
	h.Write([]byte(im.Key.Projector))
	base := h.Sum32() ^ uint32(im.Key.Part)*0x9e3779b1
	keys := make([]llm.Token, im.Cells())
	for i := range keys {
		keys[i] = -1 - llm.Token((base+uint32(i)*0x85ebca6b)&0x7fffffff)
	}
	return keys
}

// cheaperToEvict reports whether losing a's cached tokens costs less than
// losing b's: an empty slot first, then the least recently used.
func cheaperToEvict(a, b *slot) bool {
	if ae, be := len(a.cached) == 0, len(b.cached) == 0; ae != be {
		return ae
	}
	return a.used < b.used
}

// step runs one decode over the active requests.
func (r *textRunner) step() {
	// Cancelled requests leave first; their slots keep what was evaluated.
	r.active = slices.DeleteFunc(r.active, func(j *textJob) bool {
		if err := context.Cause(j.ctx); err != nil {
			r.finish(j, err)
			return true
		}
		return false
	})
	r.stats.running.Store(int64(len(r.active)))
	if len(r.active) == 0 {
		return
	}
	r.batch.Reset()
	var rows []*textJob // the requests whose logits this step gives, in batch order
	var spans []stepSpan
	generating := false
	for _, j := range r.active {
		if j.next == len(j.keys) {
			tok := j.gen.Last()
			r.batch.Add(tok, j.slot.nextPos(), j.slot.id, true)
			rows = append(rows, j)
			spans = append(spans, stepSpan{j, []llm.Token{tok}})
			generating = true
		}
	}
	decodeTokens := r.batch.Len()
	budget := r.budget - decodeTokens
	if generating {
		// Prompts join in smaller chunks while others generate, so that a
		// long prompt delays their next tokens by a bounded amount.
		budget = min(budget, r.joinBudget)
	}
	imageCells := 0
	var failed []*textJob // requests whose image could not be decoded
	for _, j := range r.active {
		if j.next == len(j.keys) || budget <= 0 {
			continue
		}
		// An image is decoded on its own, and only when nothing of the
		// request before it waits in this step's batch.
		if im := j.images[j.next]; im != nil {
			var next int32
			var err error
			r.gate.Do(int(j.priority), r.units, func() {
				proj := r.proj.Load()
				next, err = r.lctx.DecodeImage(proj, im, j.slot.nextPos(), j.slot.id)
				if errors.Is(err, llm.ErrKVFull) && r.dropIdleCaches() {
					next, err = r.lctx.DecodeImage(proj, im, j.slot.nextPos(), j.slot.id)
				}
			})
			if err != nil {
				// Not removed from r.active while ranging over it.
				failed = append(failed, j)
				if errors.Is(err, llm.ErrKVFull) {
					err = fmt.Errorf("%w: the KV cache (%d cells for %d slots) has no room for this image", ErrContextFull, r.lctx.NumCtx(), len(r.slots))
				}
				r.finish(j, fmt.Errorf("image: %w", err))
				continue
			}
			n := im.Cells()
			j.slot.appendImage(j.keys[j.next:j.next+n], next)
			j.next += n
			budget -= n
			imageCells += n
		}
		end := j.next
		for end < len(j.keys) && j.images[end] == nil && end-j.next < budget {
			end++
		}
		if end == j.next {
			continue
		}
		last := end == len(j.keys)
		pos := j.slot.nextPos()
		for k, tok := range j.keys[j.next:end] {
			r.batch.Add(tok, pos+int32(k), j.slot.id, last && j.next+k == end-1)
		}
		if last {
			rows = append(rows, j)
		}
		spans = append(spans, stepSpan{j, j.keys[j.next:end]})
		budget -= end - j.next
	}
	if len(failed) > 0 {
		r.active = slices.DeleteFunc(r.active, func(a *textJob) bool { return slices.Contains(failed, a) })
	}
	if r.batch.Len() == 0 {
		r.stats.promptTokens.Add(int64(imageCells))
		r.stats.running.Store(int64(len(r.active)))
		return // only images this step
	}
	prio := PriorityBatch
	for _, s := range spans {
		prio = max(prio, s.j.priority)
	}
	// A step of a few tokens is a graph of small ops: with other programs
	// busy on the cores, fewer threads spin less at the barriers between
	// them.
	threads := r.units
	if r.batch.Len() <= smallStep {
		threads = min(threads, max(1, int(math.Round(compute.Spare()))))
	}
	if threads != r.threads {
		r.lctx.SetThreads(threads)
		r.threads = threads
	}
	start := time.Now()
	var logits []float32
	var err error
	r.gate.Do(int(prio), r.units, func() {
		logits, err = r.lctx.Decode(&r.batch)
		if errors.Is(err, llm.ErrKVFull) && r.dropIdleCaches() {
			logits, err = r.lctx.Decode(&r.batch)
		}
	})
	if err != nil {
		r.fail(spans, err)
		return
	}
	r.stats.steps.Add(1)
	r.stats.stepTokens.Add(int64(r.batch.Len() + imageCells))
	r.stats.decodeTokens.Add(int64(decodeTokens))
	r.stats.promptTokens.Add(int64(r.batch.Len() - decodeTokens + imageCells))
	if generating {
		r.stats.genNanos.Add(int64(time.Since(start)))
	}
	for _, s := range spans {
		s.j.slot.appendText(s.toks)
		if s.j.next < len(s.j.keys) {
			s.j.next += len(s.toks)
			if s.j.next == len(s.j.keys) {
				s.j.prompted = time.Now()
			}
		}
	}
	nv := r.model.VocabSize()
	for i, j := range rows {
		row := logits[i*nv : (i+1)*nv]
		if r.onLogits != nil {
			r.onLogits(j.gen.Request().Prompt, j.steps, row)
		}
		j.steps++
		c, finished := j.gen.Step(row)
		if !finished && len(j.slot.cached)+1 >= r.perSeq {
			f := j.gen.Finish(llm.FinishLength)
			c.Text += f.Text
			finished = true
		}
		j.send(c)
		if finished {
			r.active = slices.DeleteFunc(r.active, func(a *textJob) bool { return a == j })
			r.finish(j, nil)
		}
	}
	r.stats.running.Store(int64(len(r.active)))
}

// ErrInternal is wrapped by the errors of requests that met a fault of
// owl's own (a bug) rather than of their input.
var ErrInternal = errors.New("internal error")

// protectedStep runs a step; should it panic (a bug), the requests in
// flight fail with ErrInternal and the KV cache is emptied, as after a
// failed decode, and the runner goes on serving the next requests instead
// of taking the process down.
func (r *textRunner) protectedStep() {
	defer func() {
		if p := recover(); p != nil {
			slog.Error("engine: a decode step failed; its requests end and the model's KV cache is cleared", "panic", p, "stack", string(debug.Stack()))
			r.fail(nil, fmt.Errorf("%w: decode step: %v", ErrInternal, p))
		}
	}()
	r.step()
}

// smallStep is the most tokens a step may hold to compute with fewer
// threads when the machine is busy.
const smallStep = 16

// stepSpan is the tokens a step evaluates for one request.
type stepSpan struct {
	j    *textJob
	toks []llm.Token
}

// dropIdleCaches frees the cells of idle slots; it reports whether any were.
func (r *textRunner) dropIdleCaches() bool {
	freed := false
	for _, s := range r.slots {
		if s.job == nil && len(s.cached) > 0 {
			r.lctx.SeqRemove(s.id, 0, -1)
			s.truncate(0)
			freed = true
		}
	}
	return freed
}

// fail ends the requests of a failed step. After anything but a full cache
// the cache's contents are unknown, so every request in flight fails and
// the cache is emptied.
func (r *textRunner) fail(spans []stepSpan, err error) {
	if errors.Is(err, llm.ErrKVFull) {
		err = fmt.Errorf("%w: the KV cache (%d cells for %d slots) has no room for this step", ErrContextFull, r.lctx.NumCtx(), len(r.slots))
		for _, s := range spans {
			r.lctx.SeqRemove(s.j.slot.id, 0, -1)
			s.j.slot.truncate(0)
			r.active = slices.DeleteFunc(r.active, func(a *textJob) bool { return a == s.j })
			r.finish(s.j, err)
		}
		return
	}
	r.lctx.Clear()
	for _, s := range r.slots {
		s.truncate(0)
	}
	for _, j := range r.active {
		r.finish(j, err)
	}
	r.active = nil
	r.stats.running.Store(0)
}

// send hands a chunk to the caller's goroutine.
func (j *textJob) send(c llm.Chunk) {
	if c.Text == "" && len(c.Tokens) == 0 {
		return
	}
	j.mu.Lock()
	j.chunks = append(j.chunks, c)
	j.mu.Unlock()
	select {
	case j.notify <- struct{}{}:
	default:
	}
}

// finish ends j with err (nil: it completed), frees its slot and wakes its
// caller. A job already finished (a step that failed midway may hold one)
// stays as it was.
func (r *textRunner) finish(j *textJob, err error) {
	select {
	case <-j.finished:
		return
	default:
	}
	if s := j.slot; s != nil {
		s.job = nil
		r.clock++
		s.used = r.clock
	}
	now := time.Now()
	var promptTime, genTime time.Duration
	switch {
	case j.prompted.IsZero() && !j.admitted.IsZero():
		promptTime = now.Sub(j.admitted)
	case !j.prompted.IsZero():
		promptTime, genTime = j.prompted.Sub(j.admitted), now.Sub(j.prompted)
	}
	j.gen.SetTimes(j.cached, promptTime, genTime)
	j.res, j.err = j.gen.Result(), err
	if !j.admitted.IsZero() {
		j.res.QueueDuration = j.admitted.Sub(j.arrived)
	} else {
		j.res.QueueDuration = now.Sub(j.arrived)
	}
	close(j.finished)
}
