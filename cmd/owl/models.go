package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/owlengine/owl/engine"
)

func newModelsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "models",
		Short: "Inspect model files",
	}
	var asJSON bool
	info := &cobra.Command{
		Use:   "info FILE",
		Short: "Show a model file's architecture, hyper-parameters and tensor types",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := engine.InspectModel(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "file\t%s\n", args[0])
			fmt.Fprintf(w, "architecture\t%s\n", s.Architecture)
			if s.Name != "" {
				fmt.Fprintf(w, "name\t%s\n", s.Name)
			}
			fmt.Fprintf(w, "parameters\t%s\n", humanCount(s.Params))
			fmt.Fprintf(w, "context length\t%d\n", s.ContextLength)
			fmt.Fprintf(w, "weights\t%s (%s in %d tensors)\n", s.FileType, humanBytes(s.TensorBytes), s.TensorCount)
			for _, tb := range s.ByType {
				fmt.Fprintf(w, "  %s\t%d tensors, %s\n", tb.Type, tb.Tensors, humanBytes(tb.Bytes))
			}
			if s.Tokenizer != "" {
				fmt.Fprintf(w, "tokenizer\t%s, %d tokens\n", s.Tokenizer, s.VocabSize)
			}
			fmt.Fprintf(w, "chat template\t%v\n", s.ChatTemplate)
			keys := make([]string, 0, len(s.Hyper))
			for k := range s.Hyper {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				fmt.Fprintf(w, "%s\t%s\n", k, s.Hyper[k])
			}
			return w.Flush()
		},
	}
	info.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(info)
	return cmd
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
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
