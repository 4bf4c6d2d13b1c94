// Package assist is owl's voice assistant: a conversation in one loop over
// the engine — audio in, voice activity with end of turn, the turn's
// transcript, the chat model's answer streamed, cut into sentences and
// spoken sentence by sentence, audio out — with barge-in: speech while an
// answer is under way stops its generation and its speech at once, and the
// history keeps only what was said. The three models (speech, text, voice)
// run under the engine's one scheduler and memory budget, the live
// conversation's work ahead of batch work.
package assist

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/tts"
)

// Engine is what a conversation runs on: *engine.Engine, or the server's
// view of it.
type Engine interface {
	Listen(ctx context.Context, req engine.ListenRequest, onEvent func(engine.ListenEvent) error) (engine.ListenStats, error)
	Chat(ctx context.Context, req engine.ChatRequest, onChunk func(engine.Chunk) error) (engine.Result, error)
	OpenVoice(ctx context.Context, model, config string) (*engine.Voice, error)
	Load(ctx context.Context, req engine.LoadRequest) error
}

// Config is a conversation's models and manners.
type Config struct {
	ChatModel, Projector string // the text model (and its vision projector, for Images)
	SpeechModel          string // the whisper model of the user's turns
	VAD, VADModel        string // "energy" (default) or "silero" with its model
	VADParams            engine.VADParams
	Language             string // of the user's speech ("" : the model's)
	// FitAudioCtx encodes the user's turns with an audio context just
	// long enough for them instead of 30-s windows: several times faster,
	// less accurate (see engine.StreamOptions).
	FitAudioCtx        bool
	Voice, VoiceConfig string // the voice (""/"espeak": espeak-ng's; a Piper voice's .onnx)
	Speak              engine.SpeakOptions
	System             string   // the system prompt
	Images             [][]byte // shown with the first turn
	MaxTokens          int      // of an answer (0: 256)
	Sampling           engine.Sampling
	// Play, when set, plays a sentence's speech, blocking until it has
	// played; an answer cut off stops it through ctx. What Play finished
	// is what the history holds as said. Without it, a sentence is said
	// once its audio event is out.
	Play func(ctx context.Context, samples []float32) error
}

// Event is what happens in a conversation, in order. Times: At is since
// the conversation began (wall clock); Start and End are the user's speech
// in the audio stream, or an answer's audio in the answer's timeline.
type Event struct {
	Type       string        `json:"type"`
	Turn       int           `json:"turn"`
	Text       string        `json:"text,omitempty"`
	Start      time.Duration `json:"-"`
	End        time.Duration `json:"-"`
	At         time.Duration `json:"-"`
	Samples    []float32     `json:"-"` // EventAudio: the sentence's speech
	SampleRate int           `json:"-"`
	// Begins marks an EventAudio that is the first audio of its Text (a
	// long sentence's speech comes in several pieces).
	Begins bool `json:"-"`
}

// Event types.
const (
	EventSpeechStarted = "speech_started" // the user began to speak
	EventSpeechStopped = "speech_stopped" // the user's turn ended
	EventPartial       = "transcript_partial"
	EventTranscript    = "transcript"   // the turn's final text
	EventAnswerDelta   = "answer_delta" // answer text as it is generated
	EventAudio         = "audio"        // a sentence of the answer, spoken
	EventAnswerDone    = "answer_done"  // the whole answer, as said
	EventBargeIn       = "barge_in"     // the answer was cut off; Text holds what was said
	EventError         = "error"        // a turn failed; the conversation goes on
)

// Conversation is one conversation. Run it once.
type Conversation struct {
	e     Engine
	cfg   Config
	voice *engine.Voice
	start time.Time

	mu      sync.Mutex
	history []engine.Message
	cancel  context.CancelFunc // the answer under way
	done    chan struct{}      // closed when it has ended
	turn    int
}

// New opens the conversation's voice; the other models load on first use.
// Run needs Config.SpeechModel; Reply does not.
func New(ctx context.Context, e Engine, cfg Config) (*Conversation, error) {
	if cfg.ChatModel == "" {
		return nil, errors.New("assist: a conversation needs a text model")
	}
	v, err := e.OpenVoice(ctx, cfg.Voice, cfg.VoiceConfig)
	if err != nil {
		return nil, err
	}
	c, err := NewWithVoice(e, cfg, v)
	if err != nil {
		v.Close()
		return nil, err
	}
	return c, nil
}

// NewWithVoice is New with the voice already open (Config.Voice and
// VoiceConfig are not used). The conversation owns v once made, and
// closes it with itself; on an error v stays the caller's.
func NewWithVoice(e Engine, cfg Config, v *engine.Voice) (*Conversation, error) {
	if cfg.ChatModel == "" {
		return nil, errors.New("assist: a conversation needs a text model")
	}
	if cfg.MaxTokens == 0 {
		cfg.MaxTokens = 256
	}
	if cfg.VAD == "" {
		cfg.VAD = "energy"
		if cfg.VADModel != "" {
			cfg.VAD = "silero"
		}
	}
	v.Priority = engine.PriorityInteractive
	if err := v.Check(cfg.Speak); err != nil {
		return nil, err
	}
	c := &Conversation{e: e, cfg: cfg, voice: v}
	if cfg.System != "" {
		c.history = append(c.history, engine.Message{Role: "system", Content: cfg.System})
	}
	return c, nil
}

// Prepare loads the text model (with its projector) and the speech model
// ahead of the first turn, so that the first answer waits for no load.
func (c *Conversation) Prepare(ctx context.Context) error {
	if err := c.e.Load(ctx, engine.LoadRequest{Model: c.cfg.ChatModel, Projector: c.cfg.Projector}); err != nil {
		return err
	}
	if c.cfg.SpeechModel == "" {
		return nil
	}
	return c.e.Load(ctx, engine.LoadRequest{Model: c.cfg.SpeechModel, Speech: true})
}

// SetPlay sets Config.Play (before Run).
func (c *Conversation) SetPlay(play func(ctx context.Context, samples []float32) error) {
	c.cfg.Play = play
}

// Close releases the voice.
func (c *Conversation) Close() error { return c.voice.Close() }

// Describe names the conversation's voice.
func (c *Conversation) Describe() string { return c.voice.Describe() }

// SampleRate is the rate of the answers' audio.
func (c *Conversation) SampleRate() int { return c.voice.SampleRate() }

// History is the conversation so far, as said: the answers cut off by the
// user hold only the sentences spoken before.
func (c *Conversation) History() []engine.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]engine.Message(nil), c.history...)
}

// Run listens to src until it ends (or ctx does), answering each turn;
// emit gets every event, from one goroutine at a time. It returns when the
// source has ended and the last answer is done.
func (c *Conversation) Run(ctx context.Context, src engine.AudioSource, emit func(Event) error) error {
	if c.cfg.SpeechModel == "" {
		return errors.New("assist: listening needs a speech model")
	}
	c.start = time.Now()
	var emitMu sync.Mutex
	send := func(ev Event) error {
		emitMu.Lock()
		defer emitMu.Unlock()
		ev.At = time.Since(c.start)
		return emit(ev)
	}
	req := engine.ListenRequest{Model: c.cfg.SpeechModel, Source: src, VAD: c.cfg.VAD, VADModel: c.cfg.VADModel,
		StreamOptions: engine.StreamOptions{VADParams: c.cfg.VADParams, SpeechEvents: true, EagerFinal: true, FitAudioCtx: c.cfg.FitAudioCtx, Options: engine.TranscribeOptions{Language: c.cfg.Language}}}
	_, err := c.e.Listen(ctx, req, func(ev engine.ListenEvent) error {
		switch ev.Type {
		case engine.EventSpeechStarted:
			// The user speaks: an answer under way stops now (its barge-in
			// event comes once its generation and speech have stopped).
			err := send(Event{Type: EventSpeechStarted, Turn: c.nextTurn(), Start: ev.Start, End: ev.End})
			c.bargeIn()
			return err
		case engine.EventSpeechStopped:
			return send(Event{Type: EventSpeechStopped, Turn: c.currentTurn(), Start: ev.Start, End: ev.End})
		case engine.EventPartial:
			return send(Event{Type: EventPartial, Turn: c.currentTurn(), Text: ev.Text, Start: ev.Start, End: ev.End})
		case engine.EventFinal:
			if strings.TrimSpace(ev.Text) == "" {
				return nil // speech with no words in it: nothing to answer
			}
			turn := c.currentTurn()
			if err := send(Event{Type: EventTranscript, Turn: turn, Text: ev.Text, Start: ev.Start, End: ev.End}); err != nil {
				return err
			}
			c.answer(ctx, turn, ev.Text, send)
		}
		return nil
	})
	c.wait()
	return err
}

func (c *Conversation) nextTurn() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.turn++
	return c.turn
}

func (c *Conversation) currentTurn() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.turn
}

// bargeIn stops the answer under way, if any, and waits until it has
// stopped (its generation and its speech).
func (c *Conversation) bargeIn() {
	c.mu.Lock()
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// wait waits for the answer under way.
func (c *Conversation) wait() {
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if done != nil {
		<-done
	}
}

// answer starts answering text, the user's turn: the chat model's reply
// streamed, spoken sentence by sentence as each is complete.
func (c *Conversation) answer(ctx context.Context, turn int, text string, send func(Event) error) {
	c.bargeIn() // one answer at a time
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c.mu.Lock()
	user := engine.Message{Role: "user", Content: text}
	if len(c.cfg.Images) > 0 && !c.imagesShown() {
		user.Images = c.cfg.Images
	}
	c.history = append(c.history, user)
	msgs := append([]engine.Message(nil), c.history...)
	c.cancel, c.done = cancel, done
	c.mu.Unlock()
	go func() {
		defer close(done)
		defer cancel()
		r, err := c.Reply(actx, turn, msgs, ReplyOptions{}, send)
		said, complete := r.Said, r.Complete
		c.mu.Lock()
		if said != "" {
			c.history = append(c.history, engine.Message{Role: "assistant", Content: said})
		}
		c.cancel, c.done = nil, nil
		c.mu.Unlock()
		switch {
		case err != nil && !errors.Is(err, context.Canceled):
			send(Event{Type: EventError, Turn: turn, Text: err.Error()})
		case !complete:
			send(Event{Type: EventBargeIn, Turn: turn, Text: said})
		default:
			send(Event{Type: EventAnswerDone, Turn: turn, Text: said})
		}
	}()
}

// imagesShown reports whether the images went with an earlier turn; c.mu
// is held.
func (c *Conversation) imagesShown() bool {
	for _, m := range c.history {
		if len(m.Images) > 0 {
			return true
		}
	}
	return false
}

// ReplyOptions shape one answer.
type ReplyOptions struct {
	TextOnly  bool // generate the answer without speaking it
	MaxTokens int  // of the answer (0: Config.MaxTokens; negative: until the context is full)
	// Tools the model may call (see engine.ChatRequest); the calls come
	// in Reply.Usage.ToolCalls, and only the answer's text is spoken.
	Tools      []engine.Tool
	ToolChoice string
}

// Reply is one answer, as generated and as spoken.
type Reply struct {
	Text string // everything generated
	// Said is what was spoken (whole pieces, as Sentences holds them),
	// or with ReplyOptions.TextOnly what was generated.
	Said      string
	Sentences []Sentence
	Complete  bool          // all of it was generated and spoken
	Usage     engine.Result // the generation's counts
}

// Sentence is a piece of an answer spoken: its text, and where its audio
// lies in the answer's audio.
type Sentence struct {
	Text       string
	Start, End time.Duration
}

// Reply generates the answer to msgs and, unless opts.TextOnly, speaks it
// piece by piece (sentences, and clauses of long ones) as each is
// complete, while the rest is generated. send gets EventAnswerDelta and
// EventAudio events (tagged turn). An answer cut off through ctx returns
// what was said before with ctx's error.
func (c *Conversation) Reply(ctx context.Context, turn int, msgs []engine.Message, opts ReplyOptions, send func(Event) error) (Reply, error) {
	switch {
	case opts.MaxTokens == 0:
		opts.MaxTokens = c.cfg.MaxTokens
	case opts.MaxTokens < 0:
		opts.MaxTokens = 0 // the engine's: until the context is full
	}
	var r Reply
	sentences := make(chan string, 16)
	var genErr error
	go func() {
		defer close(sentences)
		var pending, all strings.Builder
		r.Usage, genErr = c.e.Chat(ctx, engine.ChatRequest{Model: c.cfg.ChatModel, Projector: c.cfg.Projector, Messages: msgs, Tools: opts.Tools, ToolChoice: opts.ToolChoice,
			GenerateOptions: engine.GenerateOptions{MaxTokens: opts.MaxTokens, Sampling: c.cfg.Sampling, Priority: engine.PriorityInteractive}},
			func(ch engine.Chunk) error {
				if ch.Text == "" {
					return nil
				}
				if err := send(Event{Type: EventAnswerDelta, Turn: turn, Text: ch.Text}); err != nil {
					return err
				}
				all.WriteString(ch.Text)
				if opts.TextOnly {
					return nil
				}
				pending.WriteString(ch.Text)
				// Every complete sentence goes to the voice at once; the
				// last one may still grow.
				ready, rest := cut(pending.String())
				for _, s := range ready {
					select {
					case sentences <- s:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				pending.Reset()
				pending.WriteString(rest)
				return nil
			})
		r.Text = all.String()
		if genErr == nil && !opts.TextOnly {
			if rest := strings.TrimSpace(pending.String()); rest != "" {
				sentences <- rest
			}
		}
	}()
	var spoken []string
	var at time.Duration
	for s := range sentences {
		if ctx.Err() != nil {
			continue // drain
		}
		start, index := at, -1
		err := c.voice.Speak(ctx, s, c.cfg.Speak, func(a engine.SpokenAudio) error {
			d := time.Duration(len(a.Samples)) * time.Second / time.Duration(c.voice.SampleRate())
			ev := Event{Type: EventAudio, Turn: turn, Text: a.Sentence, Samples: a.Samples, SampleRate: c.voice.SampleRate(),
				Start: at, End: at + d, Begins: a.Index != index}
			at, index = at+d, a.Index
			if err := send(ev); err != nil {
				return err
			}
			if c.cfg.Play != nil {
				return c.cfg.Play(ctx, a.Samples)
			}
			return nil
		})
		if err != nil {
			if ctx.Err() == nil {
				r.Said = strings.Join(spoken, " ")
				return r, err
			}
			continue
		}
		if ctx.Err() == nil {
			spoken = append(spoken, s)
			r.Sentences = append(r.Sentences, Sentence{Text: s, Start: start, End: at})
		}
	}
	r.Said = strings.Join(spoken, " ")
	if opts.TextOnly {
		r.Said = r.Text
	}
	switch {
	case ctx.Err() != nil:
		return r, ctx.Err()
	case genErr != nil:
		return r, fmt.Errorf("answer: %w", genErr)
	}
	r.Complete = true
	return r, nil
}

// maxClause is how long an unfinished sentence grows before its head is
// spoken: at a clause's end (",", ";", ":", a dash) or else a word's, so
// that a long sentence does not hold the voice back.
const maxClause = 120

// cut splits the answer text so far into the pieces ready to be spoken
// (whole sentences, and the head of a sentence grown past maxClause) and
// the rest, which may still grow.
func cut(text string) (ready []string, rest string) {
	ss := tts.Sentences(text)
	if len(ss) > 1 {
		ready = ss[:len(ss)-1]
		// The last sentence is what follows the others in text.
		i := strings.LastIndex(text, ss[len(ss)-1])
		rest = text[i:]
	} else {
		rest = text
	}
	if len(rest) > maxClause {
		head := rest[:maxClause]
		at := strings.LastIndexAny(head, ",;:—")
		if at < maxClause/3 {
			at = strings.LastIndexByte(head, ' ')
		}
		if at > 0 {
			if piece := strings.TrimSpace(rest[:at+1]); piece != "" {
				ready = append(ready, piece)
			}
			rest = rest[at+1:]
		}
	}
	return ready, rest
}
