package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/internal/loadmix"
	"github.com/owlengine/owl/models/store"
)

// serveKinds are the kinds of request `owl bench serve` can send, by name.
var serveKinds = []string{"chat", "chat-stream", "completion", "completion-stream", "ollama-chat", "ollama-generate",
	"image", "transcription", "transcription-beams", "disconnect", "cancel", "malformed"}

// defaultServeKinds is the mix a user's first try sends.
const defaultServeKinds = "chat-stream,ollama-chat,completion,transcription,disconnect,malformed"

func newBenchServeCmd() *cobra.Command {
	var (
		url, apiKey, model, vision, speechModel, file, kinds string
		clients                                              int
		duration, timeout, idleWait                          time.Duration
		asJSON                                               bool
	)
	cmd := &cobra.Command{
		Use:   "serve [--url URL] --model NAME [--speech-model NAME] [--kinds LIST]",
		Short: "Send a mixed load of many clients to a running owl serve and check every answer",
		Long: `Bench serve runs --clients closed-loop clients against a running server for
--duration, each sending one request after another, taken in turn from
--kinds:

  chat, chat-stream            OpenAI chat completions (the stream asks for usage)
  completion, completion-stream OpenAI completions
  ollama-chat, ollama-generate ollama's /api/chat and /api/generate (streamed)
  image                        an OpenAI chat with a picture (--vision-model)
  transcription                OpenAI transcription of --audio with the default
                               decoding (beam search of 5, temperature fallback)
  transcription-beams          its first 3 s with 2 beams and no fallback
  disconnect                   a stream the client hangs up on after its first event
  cancel                       a chat the client cancels within 2 s
  malformed                    a body cut short, which must get a 400

An answer passes when it is a well-formed 200 (or that 400), or a 503 with
Retry-After; anything else fails, as does a request unanswered after
--timeout. Afterwards the server must answer /health and hold no request
within --idle-wait. It prints each kind's outcomes, statuses and latencies
(p50, p99, max) and the server's peak resident memory, and exits 1 on any
failure.`,
		Example: `  owl serve --models-dir build/models &
  owl bench serve --model tiny --speech-model ggml-micro.en --audio build/samples/jfk.wav --clients 48 --duration 30s`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var mix []loadmix.Kind
			var audioData []float32
			for _, k := range strings.Split(kinds, ",") {
				k = strings.TrimSpace(k)
				if strings.HasPrefix(k, "transcription") && audioData == nil {
					if file == "" || speechModel == "" {
						return usageError{fmt.Errorf("--kinds %s needs --audio and --speech-model", k)}
					}
					var err error
					if audioData, err = engine.ReadAudio(file); err != nil {
						return err
					}
				}
				kind, err := serveKind(k, model, vision, speechModel, audioData)
				if err != nil {
					return err
				}
				mix = append(mix, kind)
			}
			switch {
			case model == "":
				return usageError{errors.New("no model: pass --model, a text model the server knows")}
			case clients < 1 || duration <= 0 || timeout <= 0:
				return usageError{errors.New("--clients, --duration and --timeout must be positive")}
			}
			url = strings.TrimSuffix(url, "/")
			return benchServe(cmd.Context(), benchServeRun{url: url, apiKey: apiKey, mix: mix, clients: clients, duration: duration,
				timeout: timeout, idleWait: idleWait, json: asJSON})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&url, "url", "http://"+DefaultServeAddr, "the server's base URL")
	fs.StringVar(&apiKey, "api-key", os.Getenv("OWL_API_KEY"), "the server's API key, if it needs one (OWL_API_KEY)")
	fs.StringVarP(&model, "model", "m", "", "text model name, as the server knows it")
	fs.StringVar(&vision, "vision-model", "", "model with a projector for the image kind (default: --model)")
	fs.StringVar(&speechModel, "speech-model", "", "speech model name for the transcription kinds")
	fs.StringVarP(&file, "audio", "f", "", "speech to transcribe (any format owl reads; sent as 16-bit WAV)")
	fs.StringVar(&kinds, "kinds", defaultServeKinds, "kinds of request, taken in turn: "+strings.Join(serveKinds, ", "))
	fs.IntVarP(&clients, "clients", "n", 48, "clients sending at once")
	fs.DurationVarP(&duration, "duration", "d", 30*time.Second, "how long clients send new requests")
	fs.DurationVar(&timeout, "timeout", 120*time.Second, "longest a request may take")
	fs.DurationVar(&idleWait, "idle-wait", 30*time.Second, "how long the server may take to hold no request afterwards")
	fs.BoolVar(&asJSON, "json", false, "print the results as JSON")
	return cmd
}

// serveKind is the request kind named name.
func serveKind(name, model, vision, speechModel string, samples []float32) (loadmix.Kind, error) {
	if vision == "" {
		vision = model
	}
	const tokens = 16
	switch name {
	case "chat", "chat-stream":
		return loadmix.OpenAIChat(model, name == "chat-stream", tokens), nil
	case "completion", "completion-stream":
		return loadmix.OpenAICompletion(model, name == "completion-stream", tokens), nil
	case "ollama-chat":
		return loadmix.Ollama(model, "/api/chat", false, tokens), nil
	case "ollama-generate":
		return loadmix.Ollama(model, "/api/generate", true, tokens), nil
	case "image":
		return loadmix.OpenAIVision(vision, picture(64, 48), tokens), nil
	case "transcription":
		return loadmix.Transcription(name, speechModel, audio.EncodeWAV(samples, engine.SampleRate), float64(len(samples))/engine.SampleRate, nil), nil
	case "transcription-beams":
		short := samples[:min(len(samples), 3*engine.SampleRate)]
		return loadmix.Transcription(name, speechModel, audio.EncodeWAV(short, engine.SampleRate), float64(len(short))/engine.SampleRate,
			map[string]string{"temperature": "0", "beam_size": "2"}), nil
	case "disconnect":
		return loadmix.Disconnect(model), nil
	case "cancel":
		return loadmix.Cancel(model, 2*time.Second), nil
	case "malformed":
		return loadmix.Malformed(model), nil
	}
	return loadmix.Kind{}, usageError{fmt.Errorf("--kinds: unknown kind %q (have %s)", name, strings.Join(serveKinds, ", "))}
}

// picture is a w×h PNG of colour gradients.
func picture(w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x * 255 / w), uint8(y * 255 / h), 128, 255})
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes()
}

type benchServeRun struct {
	url, apiKey                 string
	mix                         []loadmix.Kind
	clients                     int
	duration, timeout, idleWait time.Duration
	json                        bool
}

// benchServeResult is what `owl bench serve --json` prints.
type benchServeResult struct {
	Clients  int                       `json:"clients"`
	Seconds  float64                   `json:"seconds"`
	Requests int64                     `json:"requests"`
	Outcomes map[string]int64          `json:"outcomes"`
	Kinds    map[string]benchServeKind `json:"kinds"`
	Failures []string                  `json:"failures,omitempty"`
	Server   benchServeServer          `json:"server"`
}

type benchServeKind struct {
	Outcomes map[string]int64 `json:"outcomes"`
	Statuses map[int]int64    `json:"statuses"`
	P50      float64          `json:"p50_ms"`
	P99      float64          `json:"p99_ms"`
	Max      float64          `json:"max_ms"`
}

type benchServeServer struct {
	Alive        bool   `json:"alive"`
	Idle         bool   `json:"idle"`
	Error        string `json:"error,omitempty"`
	PeakRSS      uint64 `json:"peak_rss_bytes"`
	PeakMemory   uint64 `json:"peak_model_memory_bytes"`
	MemoryBudget uint64 `json:"memory_budget_bytes"`
	PeakQueued   int    `json:"peak_queued"`
	Rejected     int64  `json:"rejected"`
}

func benchServe(ctx context.Context, r benchServeRun) error {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: r.clients}}
	defer client.CloseIdleConnections()
	if _, err := loadmix.WaitIdle(ctx, client, r.url, r.apiKey, 10*time.Second); err != nil {
		return fmt.Errorf("%s: %w", r.url, err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan loadmix.Watch, 1)
	go func() { watched <- loadmix.WatchServer(watchCtx, client, r.url, r.apiKey, 500*time.Millisecond) }()
	mix := r.mix
	st := loadmix.Run(ctx, loadmix.Config{URL: r.url, Client: client, APIKey: r.apiKey, Clients: r.clients, Duration: r.duration,
		Timeout: r.timeout, BusyOK: true, Pick: func(c, i int) loadmix.Kind { return mix[(c+i)%len(mix)] }})
	after, idleErr := loadmix.WaitIdle(ctx, client, r.url, r.apiKey, r.idleWait)
	stopWatch()
	w := <-watched
	res := benchServeResult{Clients: r.clients, Seconds: st.Elapsed.Seconds(), Requests: st.Total(), Outcomes: map[string]int64{},
		Kinds: map[string]benchServeKind{}, Failures: st.Failures,
		Server: benchServeServer{Alive: loadmix.Health(ctx, client, r.url) == nil, Idle: idleErr == nil, PeakRSS: max(w.PeakRSS, after.RSS),
			PeakMemory: w.PeakMemory, MemoryBudget: w.MemoryBudget, PeakQueued: w.PeakQueued, Rejected: after.Rejected}}
	if idleErr != nil {
		res.Server.Error = idleErr.Error()
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for _, o := range []string{loadmix.OK, loadmix.Busy, loadmix.Abandoned, loadmix.Cancelled, loadmix.Failed} {
		res.Outcomes[o] = st.Count(o)
	}
	for name, k := range st.Kinds {
		res.Kinds[name] = benchServeKind{Outcomes: k.Outcomes, Statuses: k.Statuses, P50: ms(k.Percentile(0.5)), P99: ms(k.Percentile(0.99)), Max: ms(k.Percentile(1))}
	}
	if r.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else {
		fmt.Printf("%d clients for %s against %s: %s\n", r.clients, r.duration, r.url, st)
		st.Table(os.Stdout)
		fmt.Printf("server: peak RSS %s, model memory peak %s of %s, peak queue %d, %d turned away busy\n",
			store.FormatBytes(res.Server.PeakRSS), store.FormatBytes(w.PeakMemory), store.FormatBytes(w.MemoryBudget), w.PeakQueued, after.Rejected)
		for _, f := range st.Failures {
			fmt.Println("failed:", f)
		}
	}
	var problems []string
	if n := st.Count(loadmix.Failed); n > 0 {
		problems = append(problems, fmt.Sprintf("%d requests failed", n))
	}
	switch {
	case !res.Server.Alive:
		problems = append(problems, "the server is down")
	case idleErr != nil:
		problems = append(problems, idleErr.Error())
	}
	if w.MemoryBudget > 0 && w.PeakMemory > w.MemoryBudget {
		problems = append(problems, fmt.Sprintf("model memory %s over the budget of %s", store.FormatBytes(w.PeakMemory), store.FormatBytes(w.MemoryBudget)))
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("bench serve: %s", strings.Join(problems, "; "))
	}
	return nil
}
