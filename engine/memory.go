package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/owlengine/owl/models"
)

// ErrTooLarge is returned for a model that cannot fit the memory budget
// even with every other model unloaded.
var ErrTooLarge = errors.New("model does not fit the memory budget")

// DefaultKeepAlive is how long an idle model stays loaded.
const DefaultKeepAlive = 5 * time.Minute

// modelKind says which runtime serves a model.
type modelKind int

const (
	kindText modelKind = iota
	kindSpeech
	kindVoice
)

func (k modelKind) String() string {
	switch k {
	case kindSpeech:
		return "speech"
	case kindVoice:
		return "voice"
	}
	return "text"
}

// loaded is a model loaded (or being loaded) under the memory budget. The
// Engine's mu guards every field but val, err and loadTime, which are set
// before ready is closed and read only after.
type loaded struct {
	key       string
	kind      modelKind
	path      string     // the model file
	projector string     // its vision projector, if any
	bytes     uint64     // estimated resident bytes in RAM
	gpu       *gpuBudget // the GPU holding part or all of it (nil: none)
	vram      uint64     // estimated bytes on gpu
	layers    int        // units of it on gpu (see footprint)
	wantGPU   int        // the GPU layers it was loaded for (Options.GPULayers or a request's)
	refs      int        // requests using it; a model with refs > 0 is never unloaded
	lastUsed  time.Time
	keepAlive time.Duration // < 0: forever; 0: unload when idle
	timer     *time.Timer
	unloaded  bool

	ready    chan struct{}
	val      closer
	err      error
	loadTime time.Duration
}

// closer is a loaded model's runtime.
type closer interface{ Close() error }

// lease is a request's hold on a loaded model.
type lease struct {
	e *Engine
	m *loaded
}

// release ends the hold; an idle model is then unloaded after its
// keep-alive. keepAlive, when not nil, replaces the model's keep-alive.
func (l *lease) release(keepAlive *time.Duration) {
	e, m := l.e, l.m
	e.mu.Lock()
	m.refs--
	m.lastUsed = time.Now()
	if keepAlive != nil {
		m.keepAlive = *keepAlive
	}
	var victim *loaded
	if m.refs == 0 && !m.unloaded {
		switch {
		case m.keepAlive == 0:
			e.detach(m)
			victim = m
		case m.keepAlive > 0:
			gen := m.lastUsed
			m.timer = time.AfterFunc(m.keepAlive, func() { e.expire(m, gen) })
		}
	}
	e.broadcast()
	e.mu.Unlock()
	if victim != nil {
		victim.close()
	}
}

// acquire returns a lease on the model at path, loading it when needed
// (once, however many ask at the same time) within the memory budget:
// idle models are unloaded, least recently used first, to make room, and
// the call waits (until ctx ends) while the models in use leave none.
//
// A model is identified by its kind and file: a text model asked for with
// a vision projector and without is one model, loaded once; its projector
// attaches to it (attachProjector) and counts in its share of the budget.
//
// With GPUs, the model is placed (see place) as far as it fits their
// budgets; load is told where. A load that fails on a GPU (its memory ran
// out, the driver refused) is tried again on the CPU.
func (e *Engine) acquire(ctx context.Context, ref modelRef, load func(placement) (closer, error)) (*lease, error) {
	key := ref.key()
	var (
		fp  footprint
		err error
	)
	want := e.opts.GPULayers // the GPU layers asked for
	if ref.gpuLayers != nil {
		want = *ref.gpuLayers
	}
	if want != 0 {
		e.gpusOnce.Do(e.initGPUs)
	}
	estimated := false
	var memWait <-chan time.Time // fires when MemoryWait is over
	for {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return nil, ErrClosed
		}
		if m, ok := e.loaded[key]; ok && ref.gpuLayers != nil && want != m.wantGPU && m.refs == 0 {
			// Loaded with other GPU layers and idle: load it again, as
			// ollama does for a request whose num_gpu differs.
			e.detach(m)
			e.mu.Unlock()
			m.close()
			continue
		}
		if m, ok := e.loaded[key]; ok {
			m.refs++
			if m.timer != nil {
				m.timer.Stop()
				m.timer = nil
			}
			e.mu.Unlock()
			<-m.ready
			if m.err != nil {
				(&lease{e, m}).release(nil)
				return nil, m.err
			}
			return &lease{e, m}, nil
		}
		if !estimated {
			// Read the file's header without the lock held.
			e.mu.Unlock()
			if fp, err = e.estimate(ref); err != nil {
				return nil, err
			}
			estimated = true
			continue
		}
		p := e.place(fp, e.gpuUnits(ref.kind, want))
		est := fp.ram(p)
		if est > e.budget {
			e.mu.Unlock()
			return nil, fmt.Errorf("%w: %s needs about %s, the budget is %s (raise --max-memory or OWL_MAX_MEMORY, or use a smaller or more quantized model)",
				ErrTooLarge, filepath.Base(ref.path), formatBytes(est), formatBytes(e.budget))
		}
		victims := e.makeRoom(est, p)
		if e.used+est > e.budget || p.gpu != nil && p.gpu.used+p.vram > p.gpu.budget {
			// Everything that could go is going; wait for a request to end.
			wait, used := e.freed, e.used
			e.mu.Unlock()
			closeAll(victims)
			if err := e.waitMemory(ctx, wait, &memWait, "load "+filepath.Base(ref.path), est, used); err != nil {
				return nil, err
			}
			continue
		}
		m := &loaded{key: key, kind: ref.kind, path: ref.path, bytes: est, gpu: p.gpu, vram: p.vram, layers: p.layers, wantGPU: want,
			refs: 1, keepAlive: e.keepAlive, ready: make(chan struct{})}
		e.loaded[key] = m
		e.used += est
		if p.gpu != nil {
			p.gpu.used += p.vram
		}
		e.loads++
		e.mu.Unlock()
		closeAll(victims)

		start := time.Now()
		m.val, m.err = load(p)
		if m.err != nil && p.gpu != nil && !errors.Is(m.err, ErrClosed) {
			slog.Warn("loading on the GPU failed; loading on the CPU instead", "model", filepath.Base(ref.path), "device", p.device(), "error", m.err)
			e.moveToCPU(m, fp.total)
			m.val, m.err = load(placement{})
		}
		m.loadTime = time.Since(start)
		if m.err != nil {
			e.mu.Lock()
			e.detach(m)
			e.mu.Unlock()
			close(m.ready)
			(&lease{e, m}).release(nil)
			return nil, m.err
		}
		close(m.ready)
		return &lease{e, m}, nil
	}
}

// waitMemory waits, after a try to make room for need bytes found used
// bytes held by running requests, until memory is released (freed closes),
// Options.MemoryWait is over (ErrBusy; *deadline holds the timer across
// calls) or ctx ends. what says what the memory is for.
func (e *Engine) waitMemory(ctx context.Context, freed <-chan struct{}, deadline *<-chan time.Time, what string, need, used uint64) error {
	if *deadline == nil && e.opts.MemoryWait > 0 {
		*deadline = time.After(e.opts.MemoryWait)
	}
	select {
	case <-freed:
		return nil
	case <-*deadline:
		return fmt.Errorf("%w: waited %s for memory to %s (needs %s, %s of %s in use by running requests)",
			ErrBusy, e.opts.MemoryWait, what, formatBytes(need), formatBytes(used), formatBytes(e.budget))
	case <-ctx.Done():
		return fmt.Errorf("waiting for memory to %s (needs %s, %s of %s in use by running requests): %w",
			what, formatBytes(need), formatBytes(used), formatBytes(e.budget), ctx.Err())
	}
}

// grow adds bytes to the share of the budget of m, a model held by the
// caller (a projector attached to it): idle models are unloaded to make
// room, and it waits as a load does while running requests hold the rest.
// With onGPU the bytes go to m's GPU's budget instead of the RAM budget.
func (e *Engine) grow(ctx context.Context, m *loaded, bytes uint64, onGPU bool, what string) error {
	var memWait <-chan time.Time
	for {
		e.mu.Lock()
		// The counters the bytes go to: RAM's, or m's GPU's.
		share, used, budget, where := &m.bytes, &e.used, e.budget, ""
		var room placement
		ramNeed := bytes
		if g := m.gpu; onGPU && g != nil {
			share, used, budget, where = &m.vram, &g.used, g.budget, " on "+g.dev.Name
			room, ramNeed = placement{gpu: g, vram: bytes}, 0
		}
		switch {
		case e.closed:
			e.mu.Unlock()
			return ErrClosed
		case *share+bytes > budget:
			e.mu.Unlock()
			return fmt.Errorf("%w: %s needs about %s%s with %s, the budget is %s", ErrTooLarge, filepath.Base(m.path),
				formatBytes(*share+bytes), where, what, formatBytes(budget))
		}
		victims := e.makeRoom(ramNeed, room)
		if *used+bytes <= budget {
			*share += bytes
			*used += bytes
			e.mu.Unlock()
			closeAll(victims)
			return nil
		}
		wait, inUse := e.freed, *used
		e.mu.Unlock()
		closeAll(victims)
		if err := e.waitMemory(ctx, wait, &memWait, "attach "+what+where, bytes, inUse); err != nil {
			return err
		}
	}
}

// shrink gives back bytes of m's share of the budget (of its GPU's, with
// onGPU), as grow took them.
func (e *Engine) shrink(m *loaded, bytes uint64, onGPU bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if onGPU && m.gpu != nil {
		m.vram -= bytes
		if !m.unloaded {
			m.gpu.used -= bytes
		}
	} else {
		m.bytes -= bytes
		if !m.unloaded {
			e.used -= bytes
		}
	}
	e.broadcast()
}

// makeRoom detaches idle models, least recently used first, until need
// bytes fit or none is left; the caller closes them after unlocking. e.mu
// is held.
//
// p is where the bytes go: when it is on a GPU, idle models on that GPU go
// too until p.vram fits its budget.
func (e *Engine) makeRoom(need uint64, p placement) []*loaded {
	var idle []*loaded
	for _, m := range e.loaded {
		if m.refs == 0 {
			idle = append(idle, m)
		}
	}
	slices.SortFunc(idle, func(a, b *loaded) int { return a.lastUsed.Compare(b.lastUsed) })
	var victims []*loaded
	for _, m := range idle {
		ramShort := e.used+need > e.budget
		gpuShort := p.gpu != nil && p.gpu.used+p.vram > p.gpu.budget
		if !ramShort && !(gpuShort && m.gpu == p.gpu) {
			if !gpuShort {
				break
			}
			continue
		}
		e.detach(m)
		victims = append(victims, m)
	}
	return victims
}

// moveToCPU accounts m, whose load on its GPU failed, as a model all in
// RAM (total bytes) from now on.
func (e *Engine) moveToCPU(m *loaded, total uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m.unloaded {
		return
	}
	if m.gpu != nil {
		m.gpu.used -= m.vram
	}
	e.used += total - m.bytes
	m.bytes, m.gpu, m.vram, m.layers = total, nil, 0, 0
	e.broadcast()
}

// detach removes m from the budget and the table. e.mu is held.
func (e *Engine) detach(m *loaded) {
	if m.unloaded {
		return
	}
	m.unloaded = true
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	if e.loaded[m.key] == m {
		delete(e.loaded, m.key)
	}
	e.used -= m.bytes
	if m.gpu != nil {
		m.gpu.used -= m.vram
	}
	e.unloads++
	e.broadcast()
}

// expire unloads m when its keep-alive ran out and nobody used it since.
func (e *Engine) expire(m *loaded, gen time.Time) {
	e.mu.Lock()
	if m.refs > 0 || m.unloaded || !m.lastUsed.Equal(gen) {
		e.mu.Unlock()
		return
	}
	e.detach(m)
	e.mu.Unlock()
	m.close()
}

// broadcast wakes everyone waiting for memory. e.mu is held.
func (e *Engine) broadcast() {
	close(e.freed)
	e.freed = make(chan struct{})
}

// close frees m's runtime once it has loaded.
func (m *loaded) close() {
	<-m.ready
	if m.err == nil && m.val != nil {
		m.val.Close()
	}
}

func closeAll(ms []*loaded) {
	for _, m := range ms {
		m.close()
	}
}

// modelRef names a model to load: its file and its kind, and the layers a
// request wants on a GPU (nil: Options.GPULayers).
type modelRef struct {
	path      string
	kind      modelKind
	gpuLayers *int
}

// key identifies the loaded model: its kind and absolute file name (a
// projector attaches to the model it belongs to; it is no model of its own).
func (r modelRef) key() string { return r.kind.String() + ":" + absPath(r.path) }

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// estimate is the memory a model will take once loaded, from its file:
// the weights, the KV cache the engine will give it and compute buffers
// (a projector attached later adds its own, see attachProjector).
func (e *Engine) estimate(ref modelRef) (footprint, error) {
	switch ref.kind {
	case kindSpeech:
		est, err := estimateSpeech(ref.path, e.opts.Parallel)
		return wholeFootprint(est), err
	case kindVoice:
		est, err := estimateVoice(ref.path, e.opts.Parallel)
		return wholeFootprint(est), err
	}
	path := ref.path
	g, err := models.ReadGGUF(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return footprint{}, fmt.Errorf("%s: no such file", path)
		}
		return footprint{}, err
	}
	perSeq, parallel, batch := e.textShape(g)
	return textFootprint(g, g.EstimateMemoryWith(models.EstimateOptions{Context: uint64(perSeq * parallel), Batch: uint64(batch), KVType: e.opts.KVType})), nil
}

// estimateSpeech sizes a whisper.cpp model for the transcriptions it runs
// at once.
func estimateSpeech(path string, transcriptions int) (models.MemoryEstimate, error) {
	w, err := models.ReadWhisper(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return models.MemoryEstimate{}, fmt.Errorf("%s: no such file", path)
		}
		return models.MemoryEstimate{}, err
	}
	return w.EstimateMemory(transcriptions), nil
}

// textShape is the context a text model gets: cells per sequence, the
// number of sequences and the batch size.
func (e *Engine) textShape(g *models.GGUF) (perSeq, parallel, batch int) {
	perSeq = e.opts.NumCtx
	if perSeq <= 0 {
		trained, _ := g.Uint(g.Architecture() + ".context_length")
		perSeq = min(4096, max(int(trained), 512))
	}
	parallel = max(e.opts.Parallel, 1)
	batch = e.opts.NumBatch
	if batch <= 0 {
		batch = 512
	}
	return perSeq, parallel, min(batch, perSeq*parallel)
}

// ParseBytes reads a memory size: a number of bytes, or one with a unit
// (KB, MB, GB, TB, KiB, MiB, GiB, TiB; case-insensitive), or a percentage
// of physical memory ("75%").
func ParseBytes(s string) (uint64, error) {
	t := strings.TrimSpace(strings.ToLower(s))
	if p, ok := strings.CutSuffix(t, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || f <= 0 || f > 100 {
			return 0, fmt.Errorf("memory size %q: want a percentage in (0, 100]", s)
		}
		return uint64(f / 100 * float64(physicalMemory())), nil
	}
	units := []struct {
		suffix string
		mult   float64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
		{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"b", 1}}
	mult := 1.0
	for _, u := range units {
		if v, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f <= 0 || f*mult > 1<<62 {
		return 0, fmt.Errorf("memory size %q: want a positive size such as 8GiB, 512MB or 75%%", s)
	}
	return uint64(f * mult), nil
}

// physicalMemory is the machine's RAM in bytes (0 when unknown).
func physicalMemory() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// defaultBudget is three quarters of physical memory (8 GiB when unknown).
func defaultBudget() uint64 {
	if p := physicalMemory(); p > 0 {
		return p / 4 * 3
	}
	return 8 << 30
}

// FormatBytes writes a size as owl's messages do: "1.5 GiB", "300 MiB".
func FormatBytes(b uint64) string { return formatBytes(b) }

func formatBytes(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", b>>10)
}

// LoadRequest names a model to load ahead of requests.
type LoadRequest struct {
	Model     string // path of the model file
	Projector string // a text model's vision projector, if any
	Speech    bool   // the file is a whisper.cpp speech model
	// KeepAlive, when set, replaces the model's keep-alive (0: unload at
	// once, which makes the call a check that the model loads; negative:
	// keep loaded).
	KeepAlive *time.Duration
}

// Load loads a model (within the memory budget, as a request would) and
// leaves it idle under its keep-alive, so that the next request finds it
// ready. A model already loaded has its keep-alive renewed.
func (e *Engine) Load(ctx context.Context, req LoadRequest) error {
	var l *lease
	var err error
	if req.Speech {
		_, l, err = e.speechModel(ctx, req.Model)
	} else {
		_, l, err = e.textModel(ctx, req.Model, req.Projector, nil)
	}
	if err != nil {
		return err
	}
	l.release(req.KeepAlive)
	return nil
}

// Unload unloads every loaded model whose file is path (with any
// projector): at once when idle, else as soon as its last request ends.
// It reports whether such a model was loaded.
func (e *Engine) Unload(path string) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	e.mu.Lock()
	var victims []*loaded
	found := false
	for _, m := range e.loaded {
		p, err := filepath.Abs(m.path)
		if err != nil {
			p = m.path
		}
		if p != abs {
			continue
		}
		found = true
		m.keepAlive = 0
		if m.refs == 0 {
			e.detach(m)
			victims = append(victims, m)
		}
	}
	e.mu.Unlock()
	closeAll(victims)
	return found
}

// voiceCompute is the allowance for one synthesis's activations: the
// decoder's of a long sentence (a minute of a medium voice's audio is
// about 200 MB of them at the last stage).
const voiceCompute = 256 << 20

// estimateVoice sizes a Piper voice: its float32 weights (as its ONNX file
// holds them) and the syntheses it runs at once.
func estimateVoice(path string, syntheses int) (models.MemoryEstimate, error) {
	st, err := os.Stat(path)
	if err != nil {
		return models.MemoryEstimate{}, fmt.Errorf("%s: no such file", path)
	}
	return models.MemoryEstimate{Weights: uint64(st.Size()), Compute: uint64(max(syntheses, 1)) * voiceCompute}, nil
}
