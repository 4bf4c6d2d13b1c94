package assist

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/testmodel"
	"github.com/owlengine/owl/tts"
)

// setup writes the conversation's models: a tiny llama, a micro whisper and
// a small Piper voice, spoken without noise so that its speech of a text
// is always the same.
func setup(t *testing.T) (*engine.Engine, Config) {
	t.Helper()
	dir := t.TempDir()
	llm, whisper := filepath.Join(dir, "tiny.gguf"), filepath.Join(dir, "ggml-micro.en.bin")
	if err := testmodel.WriteLlamaFile(llm, testmodel.TinyLlama()); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteWhisperFile(whisper, testmodel.WhisperMicro(testmodel.VocabEnglish, 1)); err != nil {
		t.Fatal(err)
	}
	voice, err := testmodel.WritePiperVoice(dir, "voice", testmodel.PiperSmall())
	if err != nil {
		t.Fatal(err)
	}
	e := engine.New(engine.Options{Threads: 2, NumCtx: 2048, CacheDir: filepath.Join(dir, "cache")})
	t.Cleanup(func() { e.Close() })
	zero := 0.0
	return e, Config{ChatModel: llm, SpeechModel: whisper, Voice: voice, System: "You are brief.", MaxTokens: 24,
		Speak: engine.SpeakOptions{NoiseScale: &zero, NoiseW: &zero}}
}

// spoken speaks phrases with espeak-ng, joined by pause seconds of silence,
// and returns 16-kHz samples.
func spoken(t *testing.T, pause float64, phrases ...string) []float32 {
	t.Helper()
	if _, err := exec.LookPath("espeak-ng"); err != nil {
		t.Fatal("espeak-ng is missing: run `make deps`")
	}
	out := make([]float32, int(pause*16000))
	for i, ph := range phrases {
		p := filepath.Join(t.TempDir(), "p"+string(rune('a'+i))+".wav")
		if b, err := exec.Command("espeak-ng", "-w", p, ph).CombinedOutput(); err != nil {
			t.Fatalf("espeak-ng: %v %s", err, b)
		}
		s, err := audio.Load(p, audio.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		out = append(append(out, s...), make([]float32, int(pause*16000))...)
	}
	return out
}

type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) emit(ev Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return nil
}

func (r *recorder) ofTurn(turn int) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, ev := range r.events {
		if ev.Turn == turn {
			out = append(out, ev)
		}
	}
	return out
}

// Each turn's events come in order, its answer is the chat model's greedy
// reply to the conversation so far, and its audio is the voice's speech of
// that reply, sentence by sentence.
func TestTurnsCompose(t *testing.T) {
	e, cfg := setup(t)
	c, err := New(context.Background(), e, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rec recorder
	src := engine.SampleSource(spoken(t, 2.5, "Hello there, how are you today", "Tell me about owls"), true)
	if err := c.Run(context.Background(), src, rec.emit); err != nil {
		t.Fatal(err)
	}
	hist := c.History()
	if len(hist) != 5 || hist[0].Role != "system" || hist[1].Role != "user" || hist[2].Role != "assistant" || hist[4].Role != "assistant" {
		t.Fatalf("history %+v", hist)
	}
	for turn := 1; turn <= 2; turn++ {
		evs := rec.ofTurn(turn)
		var reply strings.Builder
		var transcript string
		var audioEvs []Event
		first := map[string]int{}
		last := map[string]int{}
		for i, ev := range evs {
			if _, ok := first[ev.Type]; !ok {
				first[ev.Type] = i
			}
			last[ev.Type] = i
			switch ev.Type {
			case EventAnswerDelta:
				reply.WriteString(ev.Text)
			case EventTranscript:
				transcript = ev.Text
			case EventAudio:
				audioEvs = append(audioEvs, ev)
			}
		}
		order := []string{EventSpeechStarted, EventSpeechStopped, EventTranscript, EventAnswerDelta, EventAudio, EventAnswerDone}
		for i := 1; i < len(order); i++ {
			a, okA := first[order[i-1]]
			b, okB := first[order[i]]
			if !okA || !okB || a >= b {
				t.Fatalf("turn %d: %s (at %d) does not come before %s (at %d): %v", turn, order[i-1], a, order[i], b, types(evs))
			}
		}
		if last[EventAnswerDone] != len(evs)-1 || last[EventPartial] > first[EventSpeechStopped] {
			t.Fatalf("turn %d: events %v", turn, types(evs))
		}
		if hist[2*turn-1].Content != transcript {
			t.Fatalf("turn %d: history holds %q, the transcript was %q", turn, hist[2*turn-1].Content, transcript)
		}
		// The stages lose nothing: the greedy reply to the same messages.
		res, err := e.Chat(context.Background(), engine.ChatRequest{Model: cfg.ChatModel, Messages: hist[:2*turn],
			GenerateOptions: engine.GenerateOptions{MaxTokens: cfg.MaxTokens}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if reply.String() != res.Text {
			t.Fatalf("turn %d: answered %q, the chat model's reply is %q", turn, reply.String(), res.Text)
		}
		sentences := spokenPieces(res.Text)
		if said := strings.Join(sentences, " "); hist[2*turn].Content != said {
			t.Fatalf("turn %d: history holds %q, want %q", turn, hist[2*turn].Content, said)
		}
		// The audio is the voice's speech of each sentence.
		if len(audioEvs) != len(sentences) {
			t.Fatalf("turn %d: %d audio events for %d sentences %q", turn, len(audioEvs), len(sentences), sentences)
		}
		for i, s := range sentences {
			var want []float32
			if err := c.voice.Speak(context.Background(), s, cfg.Speak, func(a engine.SpokenAudio) error { want = append(want, a.Samples...); return nil }); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(audioEvs[i].Samples, want) {
				t.Fatalf("turn %d sentence %d: %d samples, the voice's speech of %q has %d", turn, i, len(audioEvs[i].Samples), s, len(want))
			}
		}
	}
}

// Speech while an answer plays stops it: generation and playback end
// within 200 ms of the speech's start, and the history holds only the
// sentences that played.
func TestBargeIn(t *testing.T) {
	e, cfg := setup(t)
	cfg.MaxTokens = 200
	var playedMu sync.Mutex
	var stoppedAt []time.Time
	// A speaker that plays the first piece at once and the second for as
	// long as it takes the user to speak up: the barge-in lands in the
	// middle of the answer, after one piece was said, whatever the
	// machine's speed (the pieces after play at once).
	played := 0
	cfg.Play = func(ctx context.Context, samples []float32) error {
		played++
		if played != 2 { // the first answer's second piece plays until cut off
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Second): // no barge-in came: the checks below say so
			return nil
		}
		playedMu.Lock()
		stoppedAt = append(stoppedAt, time.Now())
		playedMu.Unlock()
		return ctx.Err()
	}
	c, err := New(context.Background(), e, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rec recorder
	start := time.Now()
	// The second phrase comes 5 s after the first: the answer is playing.
	src := engine.SampleSource(append(spoken(t, 5, "Tell me a long story about owls"), spoken(t, 1.5, "Stop")[int(1.5*16000):]...), true)
	if err := c.Run(context.Background(), src, rec.emit); err != nil {
		t.Fatal(err)
	}
	var started2, bargeIn *Event
	for i, ev := range rec.events {
		switch {
		case ev.Type == EventSpeechStarted && ev.Turn == 2:
			started2 = &rec.events[i]
		case ev.Type == EventBargeIn && ev.Turn == 1:
			bargeIn = &rec.events[i]
		}
	}
	if started2 == nil || bargeIn == nil {
		for _, ev := range rec.events {
			if ev.Type != EventAnswerDelta {
				t.Logf("%6.2fs turn %d %s %d samples", ev.At.Seconds(), ev.Turn, ev.Type, len(ev.Samples))
			}
		}
		t.Fatalf("no barge-in: %v", types(rec.events))
	}
	lag := bargeIn.At - started2.At
	t.Logf("barge-in %v after the speech started; said %q", lag, bargeIn.Text)
	if lag > 200*time.Millisecond {
		t.Fatalf("the answer stopped %v after the user spoke", lag)
	}
	for _, s := range stoppedAt {
		if d := s.Sub(start) - started2.At; d > 200*time.Millisecond {
			t.Fatalf("playback stopped %v after the user spoke", d)
		}
	}
	hist := c.History()
	if bargeIn.Text == "" || hist[2].Role != "assistant" || hist[2].Content != bargeIn.Text {
		t.Fatalf("history %+v, said %q (a sentence at least had played)", hist, bargeIn.Text)
	}
	// What was said is a beginning of what was generated, not all of it.
	var generated strings.Builder
	for _, ev := range rec.events {
		if ev.Type == EventAnswerDelta && ev.Turn == 1 {
			generated.WriteString(ev.Text)
		}
	}
	if full := strings.Join(spokenPieces(generated.String()), " "); !strings.HasPrefix(full, bargeIn.Text) {
		t.Fatalf("said %q is not the start of %q", bargeIn.Text, full)
	}
	for _, ev := range rec.events {
		if ev.Type == EventAnswerDone && ev.Turn == 1 {
			t.Fatal("the first answer both finished and was cut off")
		}
	}
}

func types(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

// spokenPieces are the pieces an answer is spoken in, as the conversation
// cuts them while it streams (the text arriving whole cuts the same way
// once the clause rule is applied repeatedly).
func spokenPieces(text string) []string {
	var out []string
	rest := ""
	for i := range len(text) { // as if streamed a byte at a time
		ready, r2 := cut(rest + text[i:i+1])
		out = append(out, ready...)
		rest = r2
	}
	if s := strings.TrimSpace(rest); s != "" && len(tts.Sentences(s)) > 0 {
		out = append(out, strings.Join(tts.Sentences(s), " "))
	}
	return out
}

// Sentences and long clauses are cut for the voice as the text streams.
func TestCut(t *testing.T) {
	ready, rest := cut("Hello there. How are")
	if !slices.Equal(ready, []string{"Hello there."}) || rest != "How are" {
		t.Fatalf("%q %q", ready, rest)
	}
	long := strings.Repeat("word ", 30) + "and, then more"
	ready, rest = cut(long)
	if len(ready) != 1 || len(ready[0]) > maxClause || !strings.HasPrefix(long, ready[0]) || rest == "" {
		t.Fatalf("%q %q", ready, rest)
	}
}

// An image shown with the conversation goes through the projector once,
// however many turns the conversation holds (later turns find its
// embedding in the engine's cache).
func TestImageOncePerConversation(t *testing.T) {
	e, cfg := setup(t)
	dir := t.TempDir()
	proj := filepath.Join(dir, "mmproj.gguf")
	if err := testmodel.WriteProjectorFile(proj, testmodel.TinyLlavaProjector()); err != nil {
		t.Fatal(err)
	}
	cfg.Projector = proj
	var img bytes.Buffer
	pic := image.NewRGBA(image.Rect(0, 0, 32, 24))
	for i := range pic.Pix {
		pic.Pix[i] = byte(i * 7)
	}
	if err := png.Encode(&img, pic); err != nil {
		t.Fatal(err)
	}
	cfg.Images = [][]byte{img.Bytes()}
	c, err := New(context.Background(), e, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rec recorder
	src := engine.SampleSource(spoken(t, 2, "What is in this picture", "And what colour is it", "Thank you"), true)
	if err := c.Run(context.Background(), src, rec.emit); err != nil {
		t.Fatal(err)
	}
	answers := 0
	for _, ev := range rec.events {
		if ev.Type == EventAnswerDone {
			answers++
		}
	}
	var encoded int64
	for _, m := range e.Metrics().Models {
		encoded += m.ImagesEncoded
	}
	if answers != 3 || encoded != 1 {
		t.Fatalf("%d answers, the image encoded %d times (want once)", answers, encoded)
	}
}
