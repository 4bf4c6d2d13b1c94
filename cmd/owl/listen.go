package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/store"
)

type listenFlags struct {
	gpu                              gpuFlags
	model, vad, vadModel, file, lang string
	device, threads                  int
	realtime, asJSON, translate      bool
	audioCtx                         string
	step                             time.Duration
	vadParams                        engine.VADParams
}

func (f *listenFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	f.gpu.register(fs, "gpu-device")
	fs.StringVarP(&f.model, "model", "m", "", "whisper.cpp model file (ggml-*.bin)")
	fs.IntVar(&f.device, "device", -1, "input device index (see owl devices; -1: the default)")
	fs.StringVar(&f.vad, "vad", "energy", "utterance detector: energy or silero (with --vad-model)")
	fs.StringVar(&f.vadModel, "vad-model", "", "ggml Silero VAD model (ggml-silero-v5.1.2.bin)")
	f.vadParams = engine.DefaultStreamVADParams()
	fs.Float64Var(&f.vadParams.Threshold, "vad-threshold", f.vadParams.Threshold, "speech probability that starts an utterance")
	fs.DurationVar(&f.vadParams.MinSilence, "vad-min-silence", f.vadParams.MinSilence, "a pause this long ends an utterance")
	fs.StringVar(&f.file, "file", "", "listen to an audio file instead of a microphone")
	fs.BoolVar(&f.realtime, "realtime", false, "with --file: deliver the audio at the speed it plays")
	fs.DurationVar(&f.step, "step", time.Second, "how often an utterance is decoded again while it goes on")
	fs.StringVar(&f.audioCtx, "audio-ctx", "", `encoder positions per pass: "fit" (just the utterance: faster, less accurate) or a number up to 1500 (default: 30-s windows)`)
	fs.StringVarP(&f.lang, "language", "l", "", "spoken language (default: English, or detected by multilingual models)")
	fs.BoolVar(&f.translate, "translate", false, "translate into English (multilingual models)")
	fs.IntVarP(&f.threads, "threads", "t", 0, "CPU threads (default: all CPUs)")
	fs.BoolVar(&f.asJSON, "json", false, `print events as JSON lines: {"type":"partial|final","text":…,"start":…,"end":…}`)
	fs.SetNormalizeFunc(normalizeFlag)
}

func (f *listenFlags) check() error {
	switch {
	case f.model == "":
		return usageError{fmt.Errorf("no model: pass -m ggml-MODEL.bin")}
	case f.realtime && f.file == "":
		return usageError{fmt.Errorf("--realtime goes with --file")}
	case f.step < 100*time.Millisecond:
		return usageError{fmt.Errorf("--step %v is shorter than 100ms", f.step)}
	case f.audioCtx != "" && f.audioCtx != "fit" && !isPositiveInt(f.audioCtx):
		return usageError{fmt.Errorf("--audio-ctx %q: want fit or a positive number", f.audioCtx)}
	case f.vad != "energy" && f.vad != "silero":
		return usageError{fmt.Errorf("--vad %q: want energy or silero", f.vad)}
	}
	return resolveModels(&f.model, &f.vadModel)
}

// source opens the file or the microphone.
func (f *listenFlags) source() (engine.AudioSource, error) {
	if f.file != "" {
		return engine.OpenFileSource(f.file, f.realtime)
	}
	src, err := engine.OpenMic(f.device)
	if errors.Is(err, engine.ErrNoDevice) {
		return nil, fmt.Errorf("%w: connect a microphone, or listen to a file with --file AUDIO --realtime", err)
	}
	return src, err
}

func (f *listenFlags) request(src engine.AudioSource) engine.ListenRequest {
	lang := f.lang
	return engine.ListenRequest{Model: f.model, Source: src, VAD: f.vad, VADModel: f.vadModel,
		StreamOptions: engine.StreamOptions{Step: f.step, VADParams: f.vadParams, FitAudioCtx: f.audioCtx == "fit", Options: engine.TranscribeOptions{Language: lang, Translate: f.translate, AudioCtx: atoiOr0(f.audioCtx)}}}
}

type jsonEvent struct {
	Type      string  `json:"type"`
	Text      string  `json:"text"`
	Committed string  `json:"committed,omitempty"`
	Start     float64 `json:"start"`
	End       float64 `json:"end"`
	Dropped   int64   `json:"dropped,omitempty"`
	Overflows int64   `json:"overflows,omitempty"`
}

func newListenCmd() *cobra.Command {
	var lf listenFlags
	cmd := &cobra.Command{
		Use:   "listen -m MODEL.bin [--device N | --file AUDIO --realtime]",
		Short: "Dictation: transcribe a microphone (or a file) live",
		Long: `Listen transcribes speech as it is spoken. A voice activity detector finds
utterances; while one goes on it is decoded again every --step, and the words
two hypotheses in a row agree on are committed. On a terminal the partial
text is updated in place and each utterance's final text printed on its own
line; otherwise only final lines are printed. --json prints every event.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := lf.check(); err != nil {
				return err
			}
			src, err := lf.source()
			if err != nil {
				return err
			}
			defer src.Close()
			e, err := newEngine(&lf.gpu, engine.Options{Threads: lf.threads})
			if err != nil {
				return err
			}
			defer e.Close()
			tty := term.IsTerminal(int(os.Stdout.Fd()))
			enc := json.NewEncoder(os.Stdout)
			enc.SetEscapeHTML(false)
			_, err = e.Listen(cmd.Context(), lf.request(src), func(ev engine.ListenEvent) error {
				switch {
				case lf.asJSON && ev.Type == engine.EventDropped:
					return enc.Encode(jsonEvent{Type: ev.Type, Dropped: ev.Dropped, Overflows: ev.Overflows})
				case lf.asJSON:
					return enc.Encode(jsonEvent{Type: ev.Type, Text: ev.Text, Committed: ev.Committed, Start: ev.Start.Seconds(), End: ev.End.Seconds()})
				case ev.Type == engine.EventDropped:
					fmt.Fprintf(os.Stderr, "\nowl: audio lost: %d samples dropped, %d driver overflows: the machine cannot keep up\n", ev.Dropped, ev.Overflows)
				case ev.Type == "final" && tty:
					fmt.Printf("\r\033[K%s\n", ev.Text)
				case ev.Type == "final":
					fmt.Println(ev.Text)
				case tty:
					fmt.Printf("\r\033[K%s", ev.Text)
				}
				return nil
			})
			return err
		},
	}
	lf.register(cmd)
	return cmd
}

func newDevicesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "devices",
		Short: "List the GPUs models can run on (for --device) and audio input devices (for owl listen --device)",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			printGPUs(os.Stdout)
			devs, err := engine.InputDevices()
			if err != nil {
				return err
			}
			if len(devs) == 0 {
				fmt.Println("no audio input devices found")
				return nil
			}
			fmt.Println("audio inputs:")
			for _, d := range devs {
				mark := " "
				if d.Default {
					mark = "*"
				}
				fmt.Printf("%s %2d  %s (%s, %d channels, %.0f Hz)\n", mark, d.Index, d.Name, d.HostAPI, d.Channels, d.SampleRate)
			}
			return nil
		},
	}
}

func newBenchListenCmd() *cobra.Command {
	var lf listenFlags
	cmd := &cobra.Command{
		Use:   "listen -m MODEL.bin -f AUDIO",
		Short: "Dictation latency: from the end of each phrase to its final text",
		Long: `Bench listen plays AUDIO in real time through the live pipeline and reports,
for each phrase, the time from the end of its speech to its final text:
median and 95th percentile. The audio needs pauses between phrases.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			lf.realtime = true
			if lf.file == "" {
				return usageError{fmt.Errorf("pass the audio with -f AUDIO (speech with pauses)")}
			}
			if err := lf.check(); err != nil {
				return err
			}
			src, err := lf.source()
			if err != nil {
				return err
			}
			defer src.Close()
			e, err := newEngine(&lf.gpu, engine.Options{Threads: lf.threads})
			if err != nil {
				return err
			}
			defer e.Close()
			if _, err := e.DescribeSpeech(cmd.Context(), lf.model); err != nil { // load before the clock starts
				return err
			}
			var lat []time.Duration
			st, err := e.Listen(cmd.Context(), lf.request(src), func(ev engine.ListenEvent) error {
				if ev.Type == "final" {
					lat = append(lat, ev.Latency)
				}
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Printf("model: %s, audio: %.1f s, phrases: %d, dropped samples: %d\n", lf.model, st.Audio.Seconds(), len(lat), st.Dropped)
			if len(lat) == 0 {
				return fmt.Errorf("no phrase produced a final text")
			}
			slices.Sort(lat)
			p95 := lat[min(len(lat)-1, (len(lat)*95+99)/100-1)]
			fmt.Printf("end of phrase → final text: median %.0f ms, p95 %.0f ms\n", ms(lat[len(lat)/2]), ms(p95))
			fmt.Printf("peak RSS: %s\n", store.FormatBytes(peakRSS()))
			return nil
		},
	}
	lf.register(cmd)
	cmd.Flags().StringVarP(&lf.file, "f", "f", "", "audio file with phrases and pauses")
	return cmd
}

func isPositiveInt(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0
}

func atoiOr0(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
