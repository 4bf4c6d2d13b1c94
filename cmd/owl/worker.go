package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/fleet"
	"github.com/owlengine/owl/server"
)

// natsFlags say how to reach a fleet's NATS JetStream cluster; owl serve
// and owl worker share them.
type natsFlags struct {
	url        string
	creds      string
	ca         string
	domain     string
	replicas   int
	ackWait    time.Duration
	maxDeliver int
}

func (n *natsFlags) add(fs *pflag.FlagSet, use string) {
	fs.StringVar(&n.url, "nats", os.Getenv("OWL_NATS"), use+" (nats://HOST:4222, comma-separated for a cluster; OWL_NATS)")
	fs.StringVar(&n.creds, "nats-creds", os.Getenv("OWL_NATS_CREDS"), "NATS credentials file (a user's JWT and NKey; OWL_NATS_CREDS)")
	fs.StringVar(&n.ca, "nats-ca", "", "CA certificate (PEM) the NATS servers' TLS certificates are checked against")
	fs.StringVar(&n.domain, "nats-domain", "", "JetStream domain of the cluster holding the fleet's streams (for a process on a leaf node)")
	fs.IntVar(&n.replicas, "nats-replicas", 1, "replicas of the fleet's streams when this process creates them (3 on a cluster of three nodes or more)")
	fs.DurationVar(&n.ackWait, "nats-ack-wait", 30*time.Second, "how long a worker may hold a line without a sign of progress")
	fs.IntVar(&n.maxDeliver, "nats-max-deliver", 5, "deliveries of a line before it fails with why, and goes to the dead-letter stream")
}

// connect dials the cluster, or returns nil when no URL was given.
func (n *natsFlags) connect(ctx context.Context, name string) (*fleet.Cluster, error) {
	if n.url == "" {
		return nil, nil
	}
	switch {
	case n.replicas < 1 || n.replicas > 5:
		return nil, usageError{fmt.Errorf("--nats-replicas %d: want 1 to 5", n.replicas)}
	case n.ackWait < time.Second:
		return nil, usageError{fmt.Errorf("--nats-ack-wait %s: want at least 1s", n.ackWait)}
	case n.maxDeliver < 1:
		return nil, usageError{fmt.Errorf("--nats-max-deliver %d must be positive", n.maxDeliver)}
	}
	opts := []nats.Option{nats.Name(name)}
	if n.creds != "" {
		opts = append(opts, nats.UserCredentials(n.creds))
	}
	if n.ca != "" {
		opts = append(opts, nats.RootCAs(n.ca))
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return fleet.Connect(cctx, n.url, fleet.Config{Replicas: n.replicas, AckWait: n.ackWait, MaxDeliver: n.maxDeliver, Domain: n.domain}, opts...)
}

type workerFlags struct {
	hostFlags
	nats         natsFlags
	kinds        string
	id           string
	metrics      string
	lineTimeout  time.Duration
	drainTimeout time.Duration
}

func newWorkerCmd() *cobra.Command {
	var f workerFlags
	cmd := &cobra.Command{
		Use:   "worker --nats URL",
		Short: "run batch lines from a NATS JetStream fleet",
		Long: `Worker takes the lines of batches (OpenAI's Batch API, sent to an owl
serve --nats) off the fleet's JetStream work queue, runs them through its
own engine on the models of --models-dir, and stores each result in the
fleet's results bucket for the server to collect. It takes only lines for
the models it holds (and the kinds of work --kinds names), advertises them
while it runs, signals progress on long lines, and hands back a line it
cannot run now (memory, a model that would not load) for another
delivery. SIGINT or SIGTERM stops taking lines, lets those under way
finish for --drain-timeout and hands back the rest. docs/fleet.md
describes clusters, leaf nodes and operations.`,
		Example: `  owl worker --nats nats://127.0.0.1:4222
  owl worker --nats nats://n1:4222,nats://n2:4222,nats://n3:4222 --kinds transcribe --models-dir /srv/owl
  owl worker --nats nats://127.0.0.1:4222 --metrics 127.0.0.1:9464`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd.Context(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	f.nats.add(fs, "the fleet's NATS servers")
	f.hostFlags.register(fs, "lines run at once (the engine batches them)")
	fs.StringVar(&f.kinds, "kinds", "", "kinds of work to take: some of "+strings.Join(fleet.Kinds, ",")+" (default: all its models can do)")
	fs.StringVar(&f.id, "id", os.Getenv("OWL_WORKER_ID"), "the worker's name in the fleet (default HOST-PID-RANDOM; OWL_WORKER_ID)")
	fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus /metrics and /health on this address (default: none)")
	fs.DurationVar(&f.lineTimeout, "line-timeout", 0, "longest run of one line before it is handed back (default: none)")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", 30*time.Second, "how long lines under way may finish at shutdown before they are handed back")
	fs.SetNormalizeFunc(normalizeFlag)
	return cmd
}

func (f *workerFlags) run(ctx context.Context, stderr io.Writer) error {
	if f.nats.url == "" {
		return usageError{errors.New("owl worker needs --nats URL (or OWL_NATS): the fleet it takes lines from")}
	}
	if f.lineTimeout < 0 || f.drainTimeout < 0 {
		return usageError{errors.New("--line-timeout and --drain-timeout must not be negative")}
	}
	var kinds []string
	if f.kinds != "" {
		kinds = strings.Split(f.kinds, ",")
	}
	eo, err := f.hostFlags.options()
	if err != nil {
		return err
	}
	if err := f.hostFlags.folder(); err != nil {
		return err
	}
	if err := f.gpu.apply(&eo); err != nil {
		return err
	}
	e := engine.New(eo)
	defer e.Close()
	srv, err := server.New(server.Config{Engine: e, ModelsDir: f.modelsDir, Version: version, NoBatches: true})
	if err != nil {
		return err
	}
	defer srv.Close()
	models, err := srv.FleetModels(kinds)
	if err != nil {
		return usageError{fmt.Errorf("--kinds: %w", err)}
	}
	if len(models) == 0 {
		return fmt.Errorf("%s holds no model for the work asked (owl pull fills it)", f.modelsDir)
	}
	c, err := f.nats.connect(ctx, "owl worker")
	if err != nil {
		return err
	}
	defer c.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if f.metrics != "" {
		ln, err := net.Listen("tcp", f.metrics)
		if err != nil {
			return usageError{fmt.Errorf("--metrics: %w", err)}
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
			if !c.Conn().IsConnected() {
				http.Error(w, `{"status":"disconnected"}`, http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"status":"ok"}`)
		})
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(ln)
		defer hs.Close()
		fmt.Fprintf(stderr, "owl worker: metrics on http://%s/metrics\n", ln.Addr())
	}
	var held []string
	for _, m := range models {
		held = append(held, m.Name+" ("+strings.Join(m.Work, ", ")+")")
	}
	fmt.Fprintf(stderr, "owl %s worker taking lines from %s for %s\n", version, c.Conn().ConnectedUrlRedacted(), strings.Join(held, "; "))
	slog.Info("worker", "nats", c.Conn().ConnectedUrlRedacted(), "models", len(models))
	// Once shutdown begins, a second signal kills the process the usual way.
	stopReset := context.AfterFunc(ctx, func() {
		signal.Reset(os.Interrupt, syscall.SIGTERM)
		fmt.Fprintf(stderr, "owl worker: stopping: lines under way have %s to finish\n", f.drainTimeout)
	})
	defer stopReset()
	if err := c.Work(ctx, srv, fleet.WorkerOptions{ID: f.id, Models: models, Parallel: f.parallel, LineTimeout: f.lineTimeout,
		DrainTimeout: f.drainTimeout, Version: version, Registerer: reg}); err != nil {
		return err
	}
	fmt.Fprintln(stderr, "owl worker: stopped")
	return nil
}
