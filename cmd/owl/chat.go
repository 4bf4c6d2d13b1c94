package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/owlengine/owl/engine"
)

const chatHelp = `Commands:
  /image PATH    show an image with the next message (models with --mmproj)
  /system TEXT   set the system prompt (clears the conversation)
  /clear         forget the conversation
  /bye           leave (also Ctrl-D)
Ctrl-C stops a reply that is being written.`

func newChatCmd() *cobra.Command {
	var (
		ef     engineFlags
		sf     sampleFlags
		system string
	)
	cmd := &cobra.Command{
		Use:   "chat -m MODEL.gguf",
		Short: "Chat with a model interactively (keeps the conversation)",
		Long: `Chat reads one message per line from standard input and streams the model's
reply, keeping the conversation so each turn sees the earlier ones. The model's
own chat template formats the conversation.

` + chatHelp,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ef.check(); err != nil {
				return err
			}
			opts, err := sf.options()
			if err != nil {
				return err
			}
			e := ef.engine()
			defer e.Close()
			return chatLoop(cmd.Context(), e, chatModel{ef.model, ef.mmproj}, system, opts, os.Stdin, os.Stdout)
		},
	}
	ef.register(cmd)
	sf.register(cmd, 0)
	cmd.Flags().StringVar(&system, "system", "", "system prompt")
	return cmd
}

// chatModel is the model a chat talks to and its vision projector.
type chatModel struct{ path, projector string }

func chatLoop(ctx context.Context, e *engine.Engine, model chatModel, system string, opts engine.GenerateOptions, in io.Reader, out io.Writer) error {
	interactive := term.IsTerminal(int(os.Stdin.Fd())) && in == io.Reader(os.Stdin)
	opts.Priority = engine.PriorityInteractive
	if interactive {
		// Ctrl-C interrupts a reply, not the program.
		signal.Ignore(os.Interrupt)
		defer signal.Reset(os.Interrupt)
		desc, err := e.Describe(ctx, model.path)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "%s\nType /help for commands.\n", desc)
	}
	var history []engine.Message
	var pending [][]byte // images for the next message
	reset := func() {
		history = history[:0]
		if system != "" {
			history = append(history, engine.Message{Role: "system", Content: system})
		}
	}
	reset()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for {
		if interactive {
			fmt.Fprint(os.Stderr, ">>> ")
		}
		if !sc.Scan() {
			if interactive {
				fmt.Fprintln(os.Stderr)
			}
			return sc.Err()
		}
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case line == "/bye" || line == "/exit" || line == "/quit":
			return nil
		case line == "/help" || line == "/?":
			fmt.Fprintln(os.Stderr, chatHelp)
			continue
		case line == "/clear":
			reset()
			continue
		case strings.HasPrefix(line, "/system"):
			system = strings.TrimSpace(strings.TrimPrefix(line, "/system"))
			reset()
			continue
		case strings.HasPrefix(line, "/image"):
			path := strings.TrimSpace(strings.TrimPrefix(line, "/image"))
			switch data, err := os.ReadFile(path); {
			case path == "":
				fmt.Fprintln(os.Stderr, "/image needs a file: /image PATH")
			case model.projector == "":
				fmt.Fprintln(os.Stderr, "this model has no vision projector: start owl chat with --mmproj MMPROJ.gguf")
			case err != nil:
				fmt.Fprintf(os.Stderr, "owl: %v\n", err)
			default:
				pending = append(pending, data)
				fmt.Fprintf(os.Stderr, "image %s will go with your next message\n", path)
			}
			continue
		case strings.HasPrefix(line, "/"):
			fmt.Fprintf(os.Stderr, "unknown command %s; /help lists them\n", strings.Fields(line)[0])
			continue
		}
		history = append(history, engine.Message{Role: "user", Content: line, Images: pending})
		pending = nil
		turnCtx, cancel := context.WithCancel(ctx)
		stopSig := make(chan os.Signal, 1)
		if interactive {
			signal.Notify(stopSig, os.Interrupt)
			go func() {
				select {
				case <-stopSig:
					cancel()
				case <-turnCtx.Done():
				}
			}()
		}
		res, err := e.Chat(turnCtx, engine.ChatRequest{Model: model.path, Projector: model.projector, Messages: history, GenerateOptions: opts}, func(c engine.Chunk) error {
			_, err := io.WriteString(out, c.Text)
			return err
		})
		signal.Stop(stopSig)
		cancel()
		fmt.Fprintln(out)
		switch {
		case err == nil:
			history = append(history, engine.Message{Role: "assistant", Content: res.Text})
			logTimings(res)
		case errors.Is(err, context.Canceled) && ctx.Err() == nil:
			// Interrupted by the user: keep what was said.
			history = append(history, engine.Message{Role: "assistant", Content: res.Text})
		case errors.Is(err, engine.ErrBadImage), errors.Is(err, engine.ErrBadRequest):
			history = history[:len(history)-1]
			fmt.Fprintf(os.Stderr, "owl: %v\n", err)
			if !interactive {
				return err
			}
		case errors.Is(err, engine.ErrContextFull):
			history = history[:len(history)-1]
			fmt.Fprintf(os.Stderr, "owl: %v; /clear starts a new conversation\n", err)
			if !interactive {
				return err
			}
		default:
			return err
		}
	}
}
