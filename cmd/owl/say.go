package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/store"
)

func newSayCmd() *cobra.Command {
	var (
		gpu                      gpuFlags
		model, file, out, format string
		opts                     engine.SpeakOptions
		device                   int
		asJSON                   bool
		noiseScale, noiseW       float64
	)
	cmd := &cobra.Command{
		Use:   "say [TEXT…] | -f FILE",
		Short: "Speak text aloud, or into an audio file",
		Long: `Say speaks TEXT (the arguments, or -f FILE, or standard input with -f -)
sentence by sentence: each sentence plays on the default output device as
soon as it is made, or goes into -o FILE (WAV, or FLAC / raw PCM by the
name's extension or --format).

The voice is espeak-ng's own unless -m names another; --voice picks
espeak-ng's language or voice (owl voices lists them).`,
		Args: usageArgs(cobra.ArbitraryArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			text := strings.Join(args, " ")
			switch {
			case file != "" && text != "":
				return usageError{errors.New("give the text as arguments or with -f, not both")}
			case file == "-":
				b, err := io.ReadAll(bufio.NewReader(os.Stdin))
				if err != nil {
					return err
				}
				text = string(b)
			case file != "":
				b, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				text = string(b)
			}
			if strings.TrimSpace(text) == "" {
				return usageError{errors.New("nothing to say: pass TEXT or -f FILE")}
			}
			if format == "" && out != "" {
				switch strings.ToLower(filepath.Ext(out)) {
				case ".flac":
					format = "flac"
				case ".pcm", ".raw":
					format = "pcm"
				default:
					format = "wav"
				}
			}
			model, config, err := resolveVoice(model)
			if err != nil {
				return err
			}
			e, err := newEngine(&gpu, engine.Options{})
			if err != nil {
				return err
			}
			defer e.Close()
			v, err := e.OpenVoice(cmd.Context(), model, config)
			if err != nil {
				return err
			}
			defer v.Close()
			if noiseScale >= 0 {
				opts.NoiseScale = &noiseScale
			}
			if noiseW >= 0 {
				opts.NoiseW = &noiseW
			}
			if err := v.Check(opts); err != nil {
				return usageError{err}
			}
			var play func(engine.SpokenAudio) error
			var finish func() error
			if out != "" {
				f, err := os.Create(out)
				if err != nil {
					return err
				}
				defer f.Close()
				bw := bufio.NewWriter(f)
				w, err := engine.NewAudioWriter(bw, format, v.SampleRate())
				if err != nil {
					return usageError{err}
				}
				play = func(a engine.SpokenAudio) error { return w.Write(a.Samples) }
				finish = func() error {
					if err := w.Close(); err != nil {
						return err
					}
					if err := bw.Flush(); err != nil {
						return err
					}
					return fixWAVLengths(f, format)
				}
			} else {
				sp, err := engine.OpenSpeaker(device, v.SampleRate())
				if err != nil {
					return fmt.Errorf("%w (write a file with -o instead)", err)
				}
				play = func(a engine.SpokenAudio) error { return sp.Play(cmd.Context(), a.Samples) }
				finish = sp.Close
			}
			start := time.Now()
			var spoken time.Duration
			err = v.Speak(cmd.Context(), text, opts, func(a engine.SpokenAudio) error {
				d := time.Duration(len(a.Samples)) * time.Second / time.Duration(v.SampleRate())
				if asJSON {
					ev := struct {
						Sentence int     `json:"sentence"`
						Text     string  `json:"text"`
						Start    float64 `json:"start"`
						Duration float64 `json:"duration"`
						Ready    float64 `json:"ready_after"`
					}{a.Index, a.Sentence, spoken.Seconds(), d.Seconds(), time.Since(start).Seconds()}
					if err := printJSONLine(ev); err != nil {
						return err
					}
				} else if verboseEnabled() {
					fmt.Fprintf(os.Stderr, "%d: %.2f s of speech after %.0f ms: %s\n", a.Index, d.Seconds(), ms(time.Since(start)), a.Sentence)
				}
				spoken += d
				return play(a)
			})
			if ferr := finish(); err == nil {
				err = ferr
			}
			return err
		},
	}
	fs := cmd.Flags()
	gpu.register(fs, "gpu-device")
	fs.StringVarP(&model, "model", "m", "", `voice model (default: espeak-ng's own voice, "espeak")`)
	fs.StringVarP(&file, "file", "f", "", "read the text from FILE (- for standard input)")
	fs.StringVarP(&out, "output", "o", "", "write the speech to FILE instead of playing it")
	fs.StringVar(&format, "format", "", "file format: wav, flac or pcm (default: by the extension, else wav)")
	fs.StringVar(&opts.Voice, "voice", "", "espeak-ng voice or language (en-us, de, fr, …; see owl voices)")
	fs.IntVar(&opts.Speaker, "speaker", 0, "speaker of a multi-speaker voice")
	fs.Float64Var(&opts.Speed, "speed", 1, "pace: 2 speaks twice as fast (0.25 to 4)")
	fs.IntVar(&opts.Pitch, "pitch", 0, "espeak-ng's base pitch, 0 to 100 (default 50)")
	fs.IntVar(&device, "device", -1, "output device index (-1: the default)")
	fs.Float64Var(&noiseScale, "noise-scale", -1, "a Piper voice's prior noise (default: the voice's, 0.667 in most)")
	fs.Float64Var(&noiseW, "noise-w", -1, "a Piper voice's duration noise (default: the voice's, 0.8 in most)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON line per sentence as it is ready")
	fs.SetNormalizeFunc(normalizeFlag)
	return cmd
}

// resolveVoice resolves a voice's -m: the built-in voice as it is, a Piper
// voice to its model file and its configuration (paired by the store).
func resolveVoice(arg string) (model, config string, err error) {
	if arg == "" || arg == engine.BuiltinVoice {
		return arg, "", nil
	}
	return resolveWithProjector(arg)
}

// fixWAVLengths writes the real lengths into a finished WAV file's header
// (a streamed one says "unknown").
func fixWAVLengths(f *os.File, format string) error {
	if format != "wav" {
		return nil
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	var b [4]byte
	for _, field := range []struct{ at, value int64 }{{4, size - 8}, {40, size - 44}} {
		b[0], b[1], b[2], b[3] = byte(field.value), byte(field.value>>8), byte(field.value>>16), byte(field.value>>24)
		if _, err := f.WriteAt(b[:], field.at); err != nil {
			return err
		}
	}
	return nil
}

func newVoicesCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "voices",
		Short: "List the voices owl say can speak with",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			voices, err := engine.EspeakVoices()
			if err != nil {
				return err
			}
			var pipers []store.Model
			if st, err := store.OpenDefault(); err == nil {
				all, _ := st.Models()
				for _, m := range all {
					if m.Kind == store.KindVoice {
						pipers = append(pipers, m)
					}
				}
			}
			if asJSON {
				type jv struct {
					Model     string   `json:"model"`
					Voice     string   `json:"voice"`
					Name      string   `json:"name"`
					Languages []string `json:"languages"`
				}
				for _, m := range pipers {
					if err := printJSONLine(jv{m.Name, "", "Piper voice " + m.Name, nil}); err != nil {
						return err
					}
				}
				for _, v := range voices {
					lang := v.Identifier
					if len(v.Languages) > 0 {
						lang = v.Languages[0]
					}
					if err := printJSONLine(jv{engine.BuiltinVoice, lang, v.Name, v.Languages}); err != nil {
						return err
					}
				}
				return nil
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "MODEL\tVOICE\tNAME\tLANGUAGES")
			for _, m := range pipers {
				fmt.Fprintf(w, "%s\t-\tPiper voice (%s)\t\n", m.Name, store.FormatBytes(uint64(m.Size)))
			}
			for _, v := range voices {
				lang := v.Identifier
				if len(v.Languages) > 0 {
					lang = v.Languages[0]
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", engine.BuiltinVoice, lang, strings.ReplaceAll(v.Name, "_", " "), strings.Join(v.Languages, ", "))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per voice")
	return cmd
}

// printJSONLine prints v as one line of JSON.
func printJSONLine(v any) error {
	return json.NewEncoder(os.Stdout).Encode(v)
}

// benchSpeakText is the text owl bench speak reads: sentences of the
// lengths an assistant's answers have.
const benchSpeakText = "The weather today is mild, with a light breeze from the west. " +
	"Rain is expected in the evening, so take an umbrella if you go out. " +
	"Tomorrow will be sunny and a little warmer, around twenty degrees. " +
	"Is there anything else you would like to know?"

func newBenchSpeakCmd() *cobra.Command {
	var (
		gpu         gpuFlags
		model, text string
		threads     int
		repeats     int
	)
	cmd := &cobra.Command{
		Use:   "speak [-m VOICE]",
		Short: "Synthesis speed: real-time factor and time to the first sentence's audio",
		Long: `Bench speak synthesizes a text of four sentences (or --text) with the voice,
--repeat times, and reports the real-time factor (seconds of computing per
second of speech; below 1 is faster than real time), the time until the first
sentence's audio is ready, and peak memory.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if repeats < 1 {
				return usageError{fmt.Errorf("--repeat %d: want at least 1", repeats)}
			}
			e, err := newEngine(&gpu, engine.Options{Threads: threads})
			if err != nil {
				return err
			}
			defer e.Close()
			model, config, err := resolveVoice(model)
			if err != nil {
				return err
			}
			loadStart := time.Now()
			v, err := e.OpenVoice(cmd.Context(), model, config)
			if err != nil {
				return err
			}
			defer v.Close()
			load := time.Since(loadStart)
			var firsts []time.Duration
			var work, speech time.Duration
			for range repeats {
				start := time.Now()
				first := time.Duration(0)
				err := v.Speak(cmd.Context(), text, engine.SpeakOptions{}, func(a engine.SpokenAudio) error {
					if first == 0 {
						first = time.Since(start)
					}
					speech += time.Duration(len(a.Samples)) * time.Second / time.Duration(v.SampleRate())
					return nil
				})
				if err != nil {
					return err
				}
				work += time.Since(start)
				firsts = append(firsts, first)
			}
			slices.Sort(firsts)
			fmt.Printf("voice: %s, loaded in %.0f ms\n", v.Describe(), ms(load))
			fmt.Printf("speech: %.2f s in %.2f s of work over %d runs: real-time factor %.3f\n", speech.Seconds(), work.Seconds(), repeats, work.Seconds()/speech.Seconds())
			fmt.Printf("first sentence's audio after: median %.0f ms (min %.0f, max %.0f)\n", ms(firsts[len(firsts)/2]), ms(firsts[0]), ms(firsts[len(firsts)-1]))
			fmt.Printf("peak RSS: %s\n", store.FormatBytes(peakRSS()))
			return nil
		},
	}
	fs := cmd.Flags()
	gpu.register(fs, "gpu-device")
	fs.StringVarP(&model, "model", "m", "", `voice: a Piper voice's .onnx, or "espeak" (default)`)
	fs.StringVar(&text, "text", benchSpeakText, "text to speak")
	fs.IntVarP(&threads, "threads", "t", 0, "CPU threads (default: all CPUs)")
	fs.IntVarP(&repeats, "repeat", "r", 3, "runs")
	fs.SetNormalizeFunc(normalizeFlag)
	return cmd
}
