package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/store"
)

func newModelsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "models",
		Short: "List, inspect and remove models in the local store, and model files",
		Long: `Models manages the model store (~/.owl/models, or $OWL_MODELS) that owl pull
fills, and inspects model files. Wherever a command takes -m, a store name
works as well as a file path.`,
	}
	cmd.AddCommand(newModelsInfoCmd(), newModelsListCmd(), newModelsRemoveCmd(), newModelsCatalogCmd())
	return cmd
}

// jsonInfo is owl models info --json: the GGUF facts at the top level, as
// before there were other kinds, and the rest beside them.
type jsonInfo struct {
	File   string          `json:"file"`
	Kind   store.Kind      `json:"kind"`
	Size   int64           `json:"size"`
	Memory jsonMemory      `json:"memory"`
	Store  *store.Manifest `json:"store,omitempty"`
	*models.GGUFSummary
	Whisper any `json:"whisper,omitempty"`
	Silero  any `json:"silero,omitempty"`
	Voice   any `json:"voice,omitempty"`
}

type jsonMemory struct {
	Total   uint64 `json:"total"`
	Weights uint64 `json:"weights"`
	KVCache uint64 `json:"kv_cache"`
	Compute uint64 `json:"compute"`
	Context uint64 `json:"context,omitempty"`
}

func newModelsInfoCmd() *cobra.Command {
	var (
		asJSON  bool
		ctxSize int
	)
	info := &cobra.Command{
		Use:   "info NAME | FILE",
		Short: "Show a model's kind, size, memory estimate, architecture and hyper-parameters",
		Long: `Info reads a model's header (a store name or a file) and shows what it is: its
kind, size and an estimate of the memory it needs to run (weights, KV cache at
--ctx-size tokens, compute buffers), then the facts of its format: for a GGUF
file the architecture, hyper-parameters and tensor types; for a whisper model
its size and layers.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ctxSize < 0 {
				return usageError{fmt.Errorf("--ctx-size %d must not be negative", ctxSize)}
			}
			path, err := resolveModel(args[0])
			if err != nil {
				return err
			}
			var entry *store.Entry
			if path != args[0] {
				if st, err := store.OpenDefault(); err == nil {
					if e, err := st.Get(args[0]); err == nil {
						entry = &e
					}
				}
			}
			in, err := store.Inspect(path, uint64(ctxSize))
			if err != nil {
				return err
			}
			if asJSON {
				out := jsonInfo{File: path, Kind: in.Kind, Size: in.Size, GGUFSummary: in.GGUF,
					Memory: jsonMemory{Total: in.Memory.Total(), Weights: in.Memory.Weights, KVCache: in.Memory.KVCache, Compute: in.Memory.Compute, Context: in.Memory.Context}}
				if entry != nil {
					out.Store = &entry.Manifest
				}
				if in.Whisper != nil {
					out.Whisper = struct {
						*models.WhisperHParams
						VocabularyOnly bool `json:"vocabulary_only,omitempty"`
					}{in.Whisper, in.VocabOnly}
				}
				if in.Silero != nil {
					out.Silero = struct{ Type, Version string }{in.Silero.Type, in.Silero.Version}
				}
				if in.Voice != nil {
					out.Voice = in.Voice
				}
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			if entry != nil {
				fmt.Fprintf(w, "store name\t%s\n", entry.Name)
			}
			fmt.Fprintf(w, "file\t%s\n", path)
			fmt.Fprintf(w, "kind\t%s\n", in.Kind)
			fmt.Fprintf(w, "size\t%s\n", store.FormatBytes(uint64(in.Size)))
			m := in.Memory
			if in.VocabOnly {
				fmt.Fprintf(w, "memory\tnone: the file holds no weights to run\n")
			} else if m.Context > 0 && in.Kind == store.KindLLM {
				fmt.Fprintf(w, "memory\tabout %s at %d tokens of context (weights %s, KV cache %s, compute %s)\n",
					store.FormatBytes(m.Total()), m.Context, store.FormatBytes(m.Weights), store.FormatBytes(m.KVCache), store.FormatBytes(m.Compute))
			} else {
				fmt.Fprintf(w, "memory\tabout %s (weights %s, caches %s, compute %s)\n",
					store.FormatBytes(m.Total()), store.FormatBytes(m.Weights), store.FormatBytes(m.KVCache), store.FormatBytes(m.Compute))
			}
			if entry != nil {
				check := "verified against the hub"
				if !entry.Verified {
					check = "the hub published none"
				}
				fmt.Fprintf(w, "source\t%s (commit %s)\n", entry.Source.Ref(), entry.Source.Commit)
				fmt.Fprintf(w, "sha256\t%s (%s)\n", entry.SHA256, check)
				if entry.Projector != "" {
					fmt.Fprintf(w, "projector\t%s\n", entry.Projector)
				}
			}
			switch {
			case in.GGUF != nil:
				printGGUFSummary(w, in.GGUF)
			case in.Whisper != nil:
				h := in.Whisper
				langs := "English"
				if h.Multilingual() {
					langs = fmt.Sprintf("%d languages", h.NumLanguages())
				}
				if in.VocabOnly {
					fmt.Fprintf(w, "whisper\t%s, %s, %s (%s header)\n", h.SizeName(), langs, models.ErrNoWeights, h.WeightType())
				} else {
					fmt.Fprintf(w, "whisper\t%s, %s, %s weights\n", h.SizeName(), langs, h.WeightType())
				}
				fmt.Fprintf(w, "encoder\t%d layers, n_state %d, %d heads, %d positions, %d mels\n", h.NAudioLayer, h.NAudioState, h.NAudioHead, h.NAudioCtx, h.NMels)
				fmt.Fprintf(w, "decoder\t%d layers, n_state %d, %d heads, %d positions, %d tokens\n", h.NTextLayer, h.NTextState, h.NTextHead, h.NTextCtx, h.NVocab)
			case in.Voice != nil:
				v := in.Voice
				fmt.Fprintf(w, "piper\t%d channels, %d symbols, %d encoder layers, %d heads, %d flows\n", v.Hidden, v.Symbols, v.Layers, v.Heads, v.Flows)
				fmt.Fprintf(w, "decoder\tHiFi-GAN from %d channels, upsampling %v (hop %d), resblock %s %v\n", v.UpsampleInitial, v.UpsampleRates, v.HopLength(), v.ResblockType, v.ResblockKernels)
			case in.Silero != nil:
				fmt.Fprintf(w, "silero\t%s v%s, %d-sample windows, %d encoder layers\n", in.Silero.Type, in.Silero.Version, in.Silero.Window, len(in.Silero.Encoder))
			}
			return w.Flush()
		},
	}
	info.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	info.Flags().IntVarP(&ctxSize, "ctx-size", "c", 0, "context the memory estimate sizes the KV cache for (default: min(4096, trained))")
	return info
}

func printGGUFSummary(w io.Writer, s *models.GGUFSummary) {
	fmt.Fprintf(w, "architecture\t%s\n", s.Architecture)
	if s.Name != "" {
		fmt.Fprintf(w, "name\t%s\n", s.Name)
	}
	fmt.Fprintf(w, "parameters\t%s\n", humanCount(s.Params))
	fmt.Fprintf(w, "context length\t%d\n", s.ContextLength)
	fmt.Fprintf(w, "weights\t%s (%s in %d tensors)\n", s.FileType, store.FormatBytes(s.TensorBytes), s.TensorCount)
	for _, tb := range s.ByType {
		fmt.Fprintf(w, "  %s\t%d tensors, %s\n", tb.Type, tb.Tensors, store.FormatBytes(tb.Bytes))
	}
	if s.Tokenizer != "" {
		fmt.Fprintf(w, "tokenizer\t%s, %d tokens\n", s.Tokenizer, s.VocabSize)
	}
	fmt.Fprintf(w, "chat template\t%v\n", s.ChatTemplate != "")
	keys := make([]string, 0, len(s.Hyper))
	for k := range s.Hyper {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s\t%s\n", k, s.Hyper[k])
	}
}

type jsonEntry struct {
	Name      string     `json:"name"`
	Kind      store.Kind `json:"kind"`
	Size      int64      `json:"size"`
	Modified  time.Time  `json:"modified"`
	SHA256    string     `json:"sha256"`
	Digest    string     `json:"digest"`
	Verified  bool       `json:"verified"`
	Source    string     `json:"source"`
	Path      string     `json:"path"`
	Projector string     `json:"projector,omitempty"`
}

func newModelsListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the models in the store",
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := store.OpenDefault()
			if err != nil {
				return err
			}
			entries, listErr := st.List()
			if asJSON {
				out := make([]jsonEntry, len(entries))
				for i, e := range entries {
					out[i] = jsonEntry{Name: e.Name, Kind: e.Kind, Size: e.Size, Modified: e.Modified, SHA256: e.SHA256, Digest: e.Digest,
						Verified: e.Verified, Source: e.Source.Ref(), Path: e.Path, Projector: e.Projector}
				}
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return err
				}
				return listErr
			}
			if len(entries) == 0 && listErr == nil {
				fmt.Fprintf(os.Stderr, "no models in %s; owl pull NAME downloads one (owl models catalog lists some)\n", st.Dir())
				return nil
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tKIND\tSIZE\tMODIFIED\tDIGEST\tPROJECTOR")
			for _, e := range entries {
				proj := e.Projector
				if proj == "" {
					proj = "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, e.Kind, store.FormatBytes(uint64(e.Size)), e.Modified.Local().Format("2006-01-02 15:04"), e.SHA256[:12], proj)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			return listErr
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newModelsRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove models from the store (a model's projector goes with it unless another model uses it)",
		Args:    usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := store.OpenDefault()
			if err != nil {
				return err
			}
			for _, name := range args {
				removed, err := st.Remove(name)
				if errors.Is(err, store.ErrBadName) {
					return usageError{err}
				}
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("%s: no model of that name in the store (%s); owl models ls lists them", name, st.Dir())
				}
				if err != nil {
					return err
				}
				for _, r := range removed {
					fmt.Printf("removed %s\n", r)
				}
			}
			return nil
		},
	}
}

func newModelsCatalogCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "catalog",
		Short: "List the models owl pull knows by short name",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var installed func(string) bool = func(string) bool { return false }
			if st, err := store.OpenDefault(); err == nil {
				installed = st.Has
			}
			cat := store.Catalog()
			if asJSON {
				type jsonCatalog struct {
					store.CatalogEntry
					Installed bool
				}
				out := make([]jsonCatalog, len(cat))
				for i, c := range cat {
					out[i] = jsonCatalog{c, installed(c.Name)}
				}
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tKIND\tSIZE\tINSTALLED\tDESCRIPTION\tSOURCE")
			for _, c := range cat {
				src := "hf.co/" + c.Repo + ":" + c.File
				if c.Projector != "" {
					src += " (+ " + c.Projector + ")"
				}
				yes := "-"
				if installed(c.Name) {
					yes = "yes"
				}
				fmt.Fprintf(w, "%s\t%s\t~%s\t%s\t%s\t%s\n", c.Name, c.Kind, store.FormatBytes(uint64(c.Size)), yes, c.Description, src)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func humanCount(n uint64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
