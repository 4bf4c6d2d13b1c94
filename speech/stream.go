package speech

import (
	"context"
	"strings"
	"time"

	"github.com/owlengine/owl/audio"
)

// StreamOptions configure live transcription.
type StreamOptions struct {
	// Options are the decoding knobs of each pass (language, task, prompt…).
	// Live passes run greedy, at temperature 0, without timestamps, unless
	// the fields say otherwise.
	Options
	Step time.Duration // re-decoding interval inside an utterance (default 1 s)
	// VADParams delimit utterances. The zero value is Silero's defaults
	// with a longer pause, half a second, ending an utterance, so that a
	// comma does not cut a sentence in two.
	VADParams    audio.VADParams
	MaxUtterance time.Duration // an utterance is cut at this length (default and most: 30 s)
	// FitAudioCtx encodes each pass with an audio context just long
	// enough for the utterance (rounded up to 128 positions, 2.56 s)
	// instead of a 30-s window: passes get several times cheaper, at some
	// cost in accuracy with trained models (see Options.AudioCtx).
	FitAudioCtx bool
	// SpeechEvents adds an EventSpeechStarted when an utterance has
	// MinSpeech of voiced audio (a cough or a click does not start one),
	// and an EventSpeechStopped when it ends, before its final text is
	// decoded: what a conversation needs to stop talking when its user
	// starts. An utterance so started always ends with a final event,
	// its text empty when nothing was recognized.
	SpeechEvents bool
	// EagerFinal starts an utterance's final pass as soon as its pause
	// has lasted eagerAfter, on the audio the final pass would decode,
	// and throws it away if the speech resumes: when the pause does end
	// the utterance, the final text is ready up to MinSilence sooner (the
	// same text; only passes thrown away cost more). For conversations,
	// where the answer waits for it.
	EagerFinal bool
}

// eagerAfter is how long a pause lasts before EagerFinal's pass begins:
// longer than most pauses between words, shorter than most that end a
// turn.
const eagerAfter = 150 * time.Millisecond

// DefaultStreamVADParams are Silero's defaults with utterances ending after
// 500 ms of silence.
func DefaultStreamVADParams() audio.VADParams {
	p := audio.DefaultVADParams()
	p.MinSilence = 500 * time.Millisecond
	return p
}

// Event is what live transcription reports: the growing hypothesis of the
// current utterance ("partial"), or its final text ("final"). Times are in
// the stream, from its first sample.
type Event struct {
	Type       string        `json:"type"`
	Text       string        `json:"text"`
	Committed  string        `json:"committed,omitempty"` // the stable prefix of a partial text
	Start, End time.Duration `json:"-"`
}

// Event types.
const (
	EventPartial = "partial"
	EventFinal   = "final"
	// With StreamOptions.SpeechEvents: speech began at Start; speech ended
	// at End.
	EventSpeechStarted = "speech_started"
	EventSpeechStopped = "speech_stopped"
)

// Streamer turns a stream of samples into events: a voice activity detector
// delimits utterances; inside one, the audio so far is decoded again every
// Step, and the words two consecutive hypotheses agree on are committed
// (LocalAgreement-2); when the utterance ends, it is decoded once more and
// its final text reported. A Streamer is used by one goroutine.
type Streamer struct {
	rec Recognizer
	vad audio.VAD
	o   StreamOptions

	chunk      int
	neg        float64
	minSilence int
	minSpeech  int
	pad        int
	step       int
	maxUtt     int
	eagerAt    int

	pending  []float32 // samples not yet given to the VAD
	pos      int       // samples given to the VAD so far
	preRoll  []float32 // the last pad samples before speech
	inSpeech bool
	started  bool // EventSpeechStarted sent for the utterance
	utt      []float32
	uttStart int // stream position of utt[0]
	voiced   int // samples of the utterance above the threshold
	silence  int // samples of silence since the last speech chunk
	since    int // samples since the last decoding pass

	prev      []string // words of the previous hypothesis
	committed []string
	lastPass  time.Duration // how long the last decoding pass took
	eager     *eagerPass    // EagerFinal's pass under way, or thrown away and ending
}

// eagerPass is a final pass begun during a pause (StreamOptions.EagerFinal).
type eagerPass struct {
	end     int // samples of the utterance it decodes
	dropped bool
	cancel  context.CancelFunc
	done    chan struct{}
	words   []string
	took    time.Duration
	err     error
}

// NewStreamer transcribes a stream with rec, delimited by vad.
func NewStreamer(rec Recognizer, vad audio.VAD, o StreamOptions) *Streamer {
	if o.Step <= 0 {
		o.Step = time.Second
	}
	if o.MaxUtterance <= 0 || o.MaxUtterance > 30*time.Second {
		o.MaxUtterance = 30 * time.Second
	}
	if o.VADParams == (audio.VADParams{}) {
		o.VADParams = DefaultStreamVADParams()
	}
	if o.BeamSize == 0 {
		o.BeamSize = 1
	}
	if o.Temperatures == nil {
		o.Temperatures = []float64{0}
	}
	o.NoTimestamps = true
	o.NoContext = true
	o.SilenceThreshold = -1 // the VAD decides what is speech
	o.VAD = nil
	at := func(d time.Duration) int { return int(d.Seconds() * SampleRate) }
	vad.Reset()
	return &Streamer{rec: rec, vad: vad, o: o, chunk: vad.ChunkSamples(), neg: o.VADParams.Threshold - 0.15,
		minSilence: at(o.VADParams.MinSilence), minSpeech: at(o.VADParams.MinSpeech), pad: at(o.VADParams.Pad),
		step: at(o.Step), maxUtt: at(o.MaxUtterance), eagerAt: at(eagerAfter)}
}

func dur(samples int) time.Duration {
	return time.Duration(float64(samples) / SampleRate * float64(time.Second))
}

// Write feeds samples (16 kHz mono) and returns the events they produce.
func (s *Streamer) Write(ctx context.Context, samples []float32) ([]Event, error) {
	s.pending = append(s.pending, samples...)
	var events []Event
	for len(s.pending) >= s.chunk {
		chunk := s.pending[:s.chunk]
		s.pending = s.pending[s.chunk:]
		probs, err := s.vad.Probabilities(chunk)
		if err != nil {
			return events, err
		}
		ev, err := s.feed(ctx, chunk, float64(probs[0]))
		events = append(events, ev...)
		if err != nil {
			return events, err
		}
	}
	return events, nil
}

// Close ends the stream: an utterance in progress is finished.
func (s *Streamer) Close(ctx context.Context) ([]Event, error) {
	var events []Event
	if len(s.pending) > 0 && s.inSpeech {
		s.utt = append(s.utt, s.pending...)
		s.pos += len(s.pending)
	}
	s.pending = nil
	if s.inSpeech {
		ev, err := s.finish(ctx, len(s.utt))
		return append(events, ev...), err
	}
	return events, nil
}

func (s *Streamer) feed(ctx context.Context, chunk []float32, p float64) ([]Event, error) {
	start := s.pos
	s.pos += len(chunk)
	if !s.inSpeech {
		if p < s.o.VADParams.Threshold {
			s.preRoll = append(s.preRoll, chunk...)
			if over := len(s.preRoll) - s.pad; over > 0 {
				s.preRoll = s.preRoll[over:]
			}
			return nil, nil
		}
		s.inSpeech = true
		s.utt = append(append([]float32(nil), s.preRoll...), chunk...)
		s.uttStart = start - len(s.preRoll)
		s.preRoll = nil
		s.voiced, s.silence, s.since = len(chunk), 0, len(chunk)
		s.prev, s.committed, s.started = nil, nil, false
		return s.speechStarted(), nil
	}
	s.utt = append(s.utt, chunk...)
	s.since += len(chunk)
	var events []Event
	switch {
	case p >= s.o.VADParams.Threshold:
		s.voiced += len(chunk)
		s.silence = 0
		s.dropEager() // the speech goes on
		events = s.speechStarted()
	case p < s.neg:
		s.silence += len(chunk)
	}
	if events != nil {
		return events, nil
	}
	if s.o.EagerFinal && (s.eager == nil || s.eager.dropped) && s.silence >= max(s.eagerAt, s.pad) && s.silence < s.minSilence && s.voiced >= s.minSpeech {
		s.startEager(ctx, len(s.utt)-s.silence+s.pad)
	}
	if s.silence >= s.minSilence {
		// Speech ended where the silence began; keep pad samples of it.
		end := len(s.utt) - s.silence + min(s.pad, s.silence)
		return s.finish(ctx, end)
	}
	if len(s.utt) >= s.maxUtt {
		ev, err := s.finish(ctx, len(s.utt))
		if err == nil {
			// The speech goes on in a new utterance.
			s.inSpeech, s.uttStart, s.utt = true, s.pos, nil
			s.voiced, s.silence, s.since = 0, 0, 0
		}
		return ev, err
	}
	// A pass is due every Step of audio, but no sooner than the last pass
	// took: on a slow machine partial results come less often instead of
	// falling behind the speaker. None starts while the speaker pauses:
	// the pause may end the utterance, and the final pass should not wait
	// behind a partial one (it runs when the speech resumes).
	if s.since >= max(s.step, int(s.lastPass.Seconds()*SampleRate)) && s.silence == 0 {
		s.since = 0
		return s.partial(ctx)
	}
	return nil, nil
}

// decode transcribes samples. Speech holds a few tokens a second, so the
// tokens decoded are capped by the audio's length: a pass that would loop
// on repetitions stops early instead of holding up the stream.
func (s *Streamer) decode(ctx context.Context, samples []float32) ([]string, error) {
	s.settleEager()
	words, took, err := s.pass(ctx, samples)
	s.lastPass = took
	return words, err
}

// pass decodes samples; it touches nothing of s but its options, so that
// an eager pass can run beside the VAD.
func (s *Streamer) pass(ctx context.Context, samples []float32) ([]string, time.Duration, error) {
	o := s.o.Options
	if o.MaxTokens == 0 {
		o.MaxTokens = 10 + 8*len(samples)/SampleRate
	}
	if s.o.FitAudioCtx && o.AudioCtx == 0 {
		const step = 128
		positions := len(samples)/(2*hopLength) + 1 // an encoder position is two mel frames
		o.AudioCtx = (positions + step - 1) / step * step
	}
	t0 := time.Now()
	tr, err := s.rec.Transcribe(ctx, samples, o)
	if err != nil {
		return nil, time.Since(t0), err
	}
	return strings.Fields(tr.Text()), time.Since(t0), nil
}

// startEager begins the final pass of the utterance up to end while the
// pause goes on.
func (s *Streamer) startEager(ctx context.Context, end int) {
	s.settleEager()
	ectx, cancel := context.WithCancel(ctx)
	e := &eagerPass{end: end, cancel: cancel, done: make(chan struct{})}
	samples := s.utt[:end:end] // appends to s.utt never write here
	go func() {
		defer close(e.done)
		e.words, e.took, e.err = s.pass(ectx, samples)
	}()
	s.eager = e
}

// dropEager throws the eager pass away (the speech resumed); it ends on
// its own, and the next pass waits for it.
func (s *Streamer) dropEager() {
	if s.eager != nil {
		s.eager.cancel()
		s.eager.dropped = true
	}
}

// settleEager waits for an eager pass thrown away, so that passes never
// run side by side.
func (s *Streamer) settleEager() {
	if s.eager != nil {
		s.eager.cancel()
		<-s.eager.done
		s.eager = nil
	}
}

// Stop ends what the Streamer still runs (an eager pass); call it before
// the recognizer goes away.
func (s *Streamer) Stop() { s.settleEager() }

// partial decodes the utterance so far and commits what two hypotheses
// in a row agree on.
func (s *Streamer) partial(ctx context.Context) ([]Event, error) {
	words, err := s.decode(ctx, s.utt)
	if err != nil {
		return nil, err
	}
	agree := 0
	for agree < len(words) && agree < len(s.prev) && words[agree] == s.prev[agree] {
		agree++
	}
	if agree > len(s.committed) {
		s.committed = append(s.committed, words[len(s.committed):agree]...)
	}
	s.prev = words
	text := s.committed
	if len(words) > len(s.committed) {
		text = append(append([]string(nil), s.committed...), words[len(s.committed):]...)
	}
	if len(text) == 0 {
		return nil, nil
	}
	return []Event{{Type: EventPartial, Text: strings.Join(text, " "), Committed: strings.Join(s.committed, " "),
		Start: dur(s.uttStart), End: dur(s.uttStart + len(s.utt))}}, nil
}

// finish decodes the utterance up to end (samples into it) and reports its
// final text; speech shorter than MinSpeech is dropped.
func (s *Streamer) finish(ctx context.Context, end int) ([]Event, error) {
	s.inSpeech = false
	utt := s.utt[:min(end, len(s.utt))]
	s.utt, s.prev, s.committed = nil, nil, nil
	if s.voiced < s.minSpeech {
		return nil, nil
	}
	var events []Event
	if s.started {
		events = append(events, Event{Type: EventSpeechStopped, Start: dur(s.uttStart), End: dur(s.uttStart + len(utt))})
	}
	var words []string
	var err error
	if e := s.eager; e != nil && !e.dropped && e.end == len(utt) {
		<-e.done
		s.eager = nil
		words, err, s.lastPass = e.words, e.err, e.took
		if err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
	} else {
		words, err = s.decode(ctx, utt)
	}
	if err != nil || (len(words) == 0 && !s.started) {
		return events, err
	}
	return append(events, Event{Type: EventFinal, Text: strings.Join(words, " "), Start: dur(s.uttStart), End: dur(s.uttStart + len(utt))}), nil
}

// speechStarted is the EventSpeechStarted of the utterance once it holds
// MinSpeech of voiced audio, when SpeechEvents asks for it.
func (s *Streamer) speechStarted() []Event {
	if !s.o.SpeechEvents || s.started || s.voiced < max(s.minSpeech, 1) {
		return nil
	}
	s.started = true
	return []Event{{Type: EventSpeechStarted, Start: dur(s.uttStart), End: dur(s.pos)}}
}
