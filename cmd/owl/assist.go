package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/owlengine/owl/assist"
	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/store"
)

// jsonAssistEvent is one line of owl assist --json; times in seconds.
type jsonAssistEvent struct {
	Type     string   `json:"type"`
	Turn     int      `json:"turn"`
	Text     string   `json:"text,omitempty"`
	Start    *float64 `json:"start,omitempty"`
	End      *float64 `json:"end,omitempty"`
	At       float64  `json:"at"`
	Duration float64  `json:"duration,omitempty"` // audio events
}

func newAssistCmd() *cobra.Command {
	var (
		gpu                                                                     gpuFlags
		model, whisper, voice, system, file, out, vad, vadModel, lang, audioCtx string
		images                                                                  []string
		asJSON                                                                  bool
		threads, maxTokens, speaker                                             int
		temperature                                                             float64
	)
	cmd := &cobra.Command{
		Use:   "assist -m LLM --whisper MODEL [--voice VOICE]",
		Short: "Talk with owl: it listens, answers and speaks, and stops when you speak",
		Long: `Assist is a voice conversation: it listens to the microphone, and when you
pause it transcribes your turn (--whisper), answers it with the text model
(-m; with --image, about the images too) and speaks the answer sentence by
sentence (--voice: espeak-ng's voice by default, or a Piper voice) while the
rest is generated. Speaking while it answers stops the answer at once; the
conversation remembers only what was said.

--file plays a recording in as if spoken, and --out writes the answers'
speech to a WAV file instead of the speaker: a conversation without audio
devices. --json prints the events as they happen.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" || whisper == "" {
				return usageError{errors.New("assist needs a text model (-m) and a speech model (--whisper)")}
			}
			chat, proj, err := resolveWithProjector(model)
			if err != nil {
				return err
			}
			if err := resolveModels(&whisper, &vadModel); err != nil {
				return err
			}
			voice, voiceConfig, err := resolveVoice(voice)
			if err != nil {
				return err
			}
			if audioCtx != "" && audioCtx != "fit" {
				return usageError{fmt.Errorf("--audio-ctx %q: want fit", audioCtx)}
			}
			cfg := assist.Config{ChatModel: chat, Projector: proj, SpeechModel: whisper, VAD: vad, VADModel: vadModel, Language: lang, FitAudioCtx: audioCtx == "fit",
				Voice: voice, VoiceConfig: voiceConfig, System: system, MaxTokens: maxTokens,
				Speak: engine.SpeakOptions{Speaker: speaker}, Sampling: engine.Sampling{Temperature: float32(temperature), Seed: -1}}
			for _, p := range images {
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				cfg.Images = append(cfg.Images, b)
			}
			if len(cfg.Images) > 0 && proj == "" {
				return usageError{fmt.Errorf("--image: %s has no vision projector paired with it", model)}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			e, err := newEngine(&gpu, engine.Options{Threads: threads})
			if err != nil {
				return err
			}
			defer e.Close()
			conv, err := assist.New(ctx, e, cfg)
			if err != nil {
				return err
			}
			defer conv.Close()
			if err := conv.Prepare(ctx); err != nil {
				return err
			}
			var src engine.AudioSource
			if file != "" {
				src, err = engine.OpenFileSource(file, true)
			} else {
				src, err = engine.OpenMic(-1)
				if errors.Is(err, engine.ErrNoDevice) {
					return fmt.Errorf("%w: pass --file to talk through a recording", err)
				}
			}
			if err != nil {
				return err
			}
			defer src.Close()
			rate := conv.SampleRate()
			var answers []float32
			if out == "" {
				sp, err := engine.OpenSpeaker(-1, rate)
				switch {
				case err != nil && file == "":
					return fmt.Errorf("%w (pass --file and --out to talk without audio devices)", err)
				case err != nil:
					fmt.Fprintf(os.Stderr, "owl: %v: the answers are not played (--out writes them to a file)\n", err)
				default:
					defer sp.Close()
					conv.SetPlay(sp.Play)
				}
			}
			w := bufio.NewWriter(os.Stdout)
			defer w.Flush()
			enc := json.NewEncoder(w)
			secs := func(d time.Duration) *float64 { v := d.Seconds(); return &v }
			inAnswer := false
			err = conv.Run(ctx, src, func(ev assist.Event) error {
				if ev.Type == assist.EventAudio && out != "" {
					answers = append(answers, ev.Samples...)
				}
				if asJSON {
					j := jsonAssistEvent{Type: ev.Type, Turn: ev.Turn, Text: ev.Text, At: ev.At.Seconds()}
					switch ev.Type {
					case assist.EventSpeechStarted, assist.EventSpeechStopped, assist.EventPartial, assist.EventTranscript, assist.EventAudio:
						j.Start, j.End = secs(ev.Start), secs(ev.End)
					}
					if ev.Type == assist.EventAudio {
						j.Duration = (ev.End - ev.Start).Seconds()
					}
					err := enc.Encode(j)
					w.Flush()
					return err
				}
				switch ev.Type {
				case assist.EventTranscript:
					fmt.Fprintf(w, "you: %s\n", ev.Text)
				case assist.EventAnswerDelta:
					if !inAnswer {
						fmt.Fprint(w, "owl: ")
						inAnswer = true
					}
					fmt.Fprint(w, ev.Text)
				case assist.EventAnswerDone:
					fmt.Fprintln(w)
					inAnswer = false
				case assist.EventBargeIn:
					fmt.Fprintln(w, " [interrupted]")
					inAnswer = false
				case assist.EventError:
					fmt.Fprintf(os.Stderr, "owl: %s\n", ev.Text)
				}
				w.Flush()
				return nil
			})
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			if out != "" {
				if err := os.WriteFile(out, audio.EncodeWAV(answers, rate), 0o644); err != nil {
					return err
				}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	gpu.register(fs, "gpu-device")
	fs.StringVarP(&model, "model", "m", "", "text model (GGUF; its projector is paired for --image)")
	fs.StringVar(&whisper, "whisper", "", "whisper.cpp speech model for your turns")
	fs.StringVar(&voice, "voice", "", `the voice: "espeak" (default) or a Piper voice`)
	fs.IntVar(&speaker, "speaker", 0, "speaker of a multi-speaker voice")
	fs.StringVar(&system, "system", "You are a helpful voice assistant. Answer briefly, in plain sentences.", "system prompt")
	fs.StringArrayVar(&images, "image", nil, "an image to talk about (repeatable)")
	fs.StringVar(&file, "file", "", "talk through a recording (played in as if spoken) instead of the microphone")
	fs.StringVar(&out, "out", "", "write the answers' speech to this WAV file instead of the speaker")
	fs.StringVar(&vad, "vad", "", "end-of-turn detector: energy (default) or silero (with --vad-model)")
	fs.StringVar(&vadModel, "vad-model", "", "ggml Silero VAD model")
	fs.StringVarP(&lang, "language", "l", "", "the language you speak")
	fs.IntVar(&maxTokens, "max-tokens", 256, "longest answer, in tokens")
	fs.StringVar(&audioCtx, "audio-ctx", "", `"fit": encode each turn with an audio context just long enough for it (faster, less accurate)`)
	fs.Float64Var(&temperature, "temperature", 0.7, "sampling temperature of the answers (0: greedy)")
	fs.IntVarP(&threads, "threads", "t", 0, "CPU threads (default: all CPUs)")
	fs.BoolVar(&asJSON, "json", false, "print the events as JSON lines")
	fs.SetNormalizeFunc(normalizeFlag)
	return cmd
}

func newBenchAssistCmd() *cobra.Command {
	var (
		gpu                                   gpuFlags
		model, whisper, voice, file, audioCtx string
		threads, maxTokens                    int
	)
	cmd := &cobra.Command{
		Use:   "assist -m LLM --whisper MODEL -f AUDIO",
		Short: "Conversation latency: end of speech → transcript, first answer token, first audio",
		Long: `Bench assist plays AUDIO (speech with pauses: several turns) in real time
into a conversation and reports, over its turns, the time from the end of each
turn's speech to its transcript, to the answer's first token and to the
answer's first audio (median and 95th percentile); the end of a turn is only
known after the VAD's silence (500 ms), which these times include. When the
recording speaks over an answer, the time from the VAD's speech start to the
answer's stop is reported too.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" || whisper == "" || file == "" {
				return usageError{errors.New("bench assist needs -m, --whisper and -f AUDIO")}
			}
			if audioCtx != "" && audioCtx != "fit" {
				return usageError{fmt.Errorf("--audio-ctx %q: want fit", audioCtx)}
			}
			chat, proj, err := resolveWithProjector(model)
			if err != nil {
				return err
			}
			if err := resolveModels(&whisper); err != nil {
				return err
			}
			voice, voiceConfig, err := resolveVoice(voice)
			if err != nil {
				return err
			}
			e, err := newEngine(&gpu, engine.Options{Threads: threads})
			if err != nil {
				return err
			}
			defer e.Close()
			conv, err := assist.New(cmd.Context(), e, assist.Config{ChatModel: chat, Projector: proj, SpeechModel: whisper,
				Voice: voice, VoiceConfig: voiceConfig, MaxTokens: maxTokens, System: "You are brief.", FitAudioCtx: audioCtx == "fit"})
			if err != nil {
				return err
			}
			defer conv.Close()
			if err := conv.Prepare(cmd.Context()); err != nil { // the turns time answers, not loads
				return err
			}
			src, err := engine.OpenFileSource(file, true)
			if err != nil {
				return err
			}
			defer src.Close()
			var toText, toToken, toAudio, bargeIn []time.Duration
			ends := map[int]time.Duration{}
			seen := map[string]bool{}
			var started time.Duration
			err = conv.Run(cmd.Context(), src, func(ev assist.Event) error {
				key := fmt.Sprint(ev.Type, ev.Turn)
				first := !seen[key]
				seen[key] = true
				end, ok := ends[ev.Turn]
				switch ev.Type {
				case assist.EventSpeechStarted:
					started = ev.At
				case assist.EventSpeechStopped:
					ends[ev.Turn] = ev.End
				case assist.EventTranscript:
					if ok {
						toText = append(toText, ev.At-end)
					}
				case assist.EventAnswerDelta:
					if ok && first {
						toToken = append(toToken, ev.At-end)
					}
				case assist.EventAudio:
					if ok && first {
						toAudio = append(toAudio, ev.At-end)
					}
				case assist.EventBargeIn:
					bargeIn = append(bargeIn, ev.At-started)
				}
				return nil
			})
			if err != nil {
				return err
			}
			stat := func(name string, v []time.Duration) {
				if len(v) == 0 {
					fmt.Printf("%-34s no turns\n", name)
					return
				}
				slices.Sort(v)
				p95 := v[min(len(v)-1, (len(v)*95+99)/100-1)]
				fmt.Printf("%-34s median %4.0f ms, p95 %4.0f ms (%d turns)\n", name, ms(v[len(v)/2]), ms(p95), len(v))
			}
			fmt.Printf("voice: %s\n", conv.Describe())
			stat("end of speech → transcript:", toText)
			stat("end of speech → first answer token:", toToken)
			stat("end of speech → first audio:", toAudio)
			if len(bargeIn) > 0 {
				stat("speech start → answer stopped:", bargeIn)
			}
			fmt.Printf("peak RSS: %s\n", store.FormatBytes(peakRSS()))
			return nil
		},
	}
	fs := cmd.Flags()
	gpu.register(fs, "gpu-device")
	fs.StringVarP(&model, "model", "m", "", "text model")
	fs.StringVar(&whisper, "whisper", "", "whisper.cpp speech model")
	fs.StringVar(&voice, "voice", "", `the voice: "espeak" (default) or a Piper voice`)
	fs.StringVarP(&file, "file", "f", "", "recording of several turns (speech with pauses)")
	fs.IntVar(&maxTokens, "max-tokens", 48, "longest answer, in tokens")
	fs.StringVar(&audioCtx, "audio-ctx", "", `"fit": encode each turn with an audio context just long enough for it (faster, less accurate)`)
	fs.IntVarP(&threads, "threads", "t", 0, "CPU threads (default: all CPUs)")
	fs.SetNormalizeFunc(normalizeFlag)
	return cmd
}
