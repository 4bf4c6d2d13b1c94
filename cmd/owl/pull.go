package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/owlengine/owl/models/hub"
	"github.com/owlengine/owl/models/store"
)

// envTrue reports whether the environment variable is set to a true value.
func envTrue(key string) bool {
	switch os.Getenv(key) {
	case "1", "true", "TRUE", "True", "yes", "on":
		return true
	}
	return false
}

type jsonPulled struct {
	Name      string     `json:"name"`
	Kind      store.Kind `json:"kind"`
	Action    string     `json:"action"`
	Size      int64      `json:"size"`
	SHA256    string     `json:"sha256"`
	Verified  bool       `json:"verified"`
	Source    string     `json:"source"`
	Path      string     `json:"path"`
	Projector string     `json:"projector,omitempty"`
}

func newPullCmd() *cobra.Command {
	var (
		name                    string
		offline, noProj, noProg bool
		asJSON                  bool
	)
	cmd := &cobra.Command{
		Use:   "pull NAME | hf.co/ORG/REPO[:FILE | :QUANT]",
		Short: "Download a model into the local model store",
		Long: `Pull downloads a model into the model store (~/.owl/models, or $OWL_MODELS),
where -m finds it by name. NAME is a short name from owl models catalog
(whisper:base.en, silero-vad, smolvlm:500m, ...); a Hugging Face reference
names any file: hf.co/ORG/REPO:FILE, or hf.co/ORG/REPO:QUANT for the GGUF
file whose name holds the quantization (Q4_K_M). A multimodal model's
projector (mmproj) is pulled with it and paired.

Downloads resume where an interrupted one stopped, are checked against the
sha256 the hub publishes, and are installed only when complete and verified.
Pulling an installed model again only asks the hub whether it changed.

Environment: OWL_HF_ENDPOINT (or HF_ENDPOINT) for a mirror, HTTPS_PROXY for a
proxy, HF_TOKEN for gated or private repositories, OWL_OFFLINE=1 (or
HF_HUB_OFFLINE=1) like --offline.`,
		Example: `  owl pull whisper:base.en
  owl pull hf.co/ggerganov/whisper.cpp:ggml-small.bin
  owl pull hf.co/ggml-org/SmolVLM-500M-Instruct-GGUF:Q8_0
  owl pull --offline whisper:base.en   # succeeds only if installed`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := store.OpenDefault()
			if err != nil {
				return err
			}
			c := hub.NewClient("owl/" + version)
			opts := store.PullOptions{Name: name, NoProjector: noProj,
				Offline: offline || envTrue("OWL_OFFLINE") || envTrue("HF_HUB_OFFLINE")}
			var bars pullBars
			if !noProg && !asJSON && term.IsTerminal(int(os.Stderr.Fd())) {
				opts.Progress = bars.update
			}
			pulled, err := st.Pull(cmd.Context(), c, args[0], opts)
			bars.finish(err == nil)
			switch {
			case errors.Is(err, store.ErrBadName) || errors.Is(err, hub.ErrBadRef):
				return usageError{err}
			case errors.Is(err, context.Canceled):
				return fmt.Errorf("%s: pull stopped; what was downloaded is kept and pulling again resumes it: %w", args[0], err)
			case err != nil:
				return err
			}
			return printPulled(pulled, asJSON)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&name, "name", "", "install under this name instead of the catalog's or the file's")
	fs.BoolVar(&offline, "offline", false, "no network: succeed only if the model is installed already")
	fs.BoolVar(&noProj, "no-projector", false, "skip a multimodal model's projector (text only)")
	fs.BoolVar(&noProg, "no-progress", false, "no progress bar")
	fs.BoolVar(&asJSON, "json", false, "print what was installed as JSON")
	return cmd
}

func printPulled(pulled []store.Pulled, asJSON bool) error {
	if asJSON {
		out := make([]jsonPulled, len(pulled))
		for i, p := range pulled {
			out[i] = jsonPulled{Name: p.Name, Kind: p.Kind, Action: string(p.Action), Size: p.Size, SHA256: p.SHA256,
				Verified: p.Verified, Source: p.Source.Ref(), Path: p.Path, Projector: p.Projector}
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for _, p := range pulled {
		check := "sha256 verified"
		if !p.Verified {
			check = "sha256 not published by the hub (a file kept in git); recorded as downloaded"
		}
		extra := ""
		if p.Projector != "" {
			extra = ", projector " + p.Projector
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s from %s%s\n", p.Name, p.Kind, store.FormatBytes(uint64(p.Size)), p.Action, check, p.Source.Ref(), extra)
	}
	return w.Flush()
}

// pullBars shows one progress bar per file a pull downloads, on standard
// error.
type pullBars struct {
	bar  *progressbar.ProgressBar
	file string
}

func (b *pullBars) update(p store.PullProgress) {
	if p.Waiting {
		b.finish(true)
		fmt.Fprintf(os.Stderr, "%s: another pull is downloading %s; waiting for it\n", p.Name, p.File)
		return
	}
	if b.bar == nil || p.File != b.file {
		b.finish(true)
		desc := p.Name
		if p.Resumed > 0 {
			desc += " (resumed)"
		}
		b.file = p.File
		b.bar = progressbar.NewOptions64(p.Total, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription(desc),
			progressbar.OptionShowBytes(true), progressbar.OptionShowCount(), progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }))
	}
	b.bar.Set64(p.Done)
}

// finish ends the current bar: full when its file is done, left where it
// stopped otherwise.
func (b *pullBars) finish(done bool) {
	if b.bar == nil {
		return
	}
	if done {
		b.bar.Finish()
	} else {
		b.bar.Exit()
	}
	b.bar = nil
}
