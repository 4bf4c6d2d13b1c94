package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// What the fleet keeps in JetStream.
const (
	// LinesStream is the work queue of batch lines, one subject per
	// line: owl.line.KIND.MODEL.BATCH.LINE.
	LinesStream = "OWL_LINES"
	// ResultsBucket is the key-value bucket of results, keyed BATCH.LINE:
	// a line run twice overwrites its result.
	ResultsBucket = "OWL_RESULTS"
	// WorkersBucket holds each live worker's advertisement (its models,
	// kinds and counters), which expires when its heartbeats stop.
	WorkersBucket = "OWL_WORKERS"
	// BlobsBucket is the object store for request bodies and results too
	// large for a message.
	BlobsBucket = "OWL_BLOBS"
	// DeadStream keeps the lines that ran out of deliveries, with why
	// (owl.dead.BATCH).
	DeadStream = "OWL_DEAD"
	// AdvisoriesStream keeps JetStream's max-deliveries advisories of the
	// lines stream, so that a line whose every worker died on it is
	// dead-lettered even when no server was listening at the time.
	AdvisoriesStream = "OWL_ADVISORIES"

	lineSubjects     = "owl.line.>"
	deadSubjects     = "owl.dead.>"
	advisorySubjects = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + LinesStream + ".>"
	deadLetterer     = "owl-dead-letters"
)

// maxInline is the largest body or result carried in a message or value;
// larger ones go to the blob store (NATS's default payload limit is 1 MiB).
const maxInline = 256 << 10

// Config tunes a fleet's streams and consumers. The zero value is
// usable: Connect fills in the defaults.
type Config struct {
	// Replicas of every stream and bucket (1; 3 on a cluster of three or
	// more nodes, so that losing a node loses nothing).
	Replicas int
	// AckWait is how long a worker may hold a line without a sign of
	// progress before it is given to another (30s; a worker signals
	// progress every third of it while it runs a line).
	AckWait time.Duration
	// MaxDeliver is how often a line is handed out before it is
	// dead-lettered (5).
	MaxDeliver int
	// Heartbeat is how often a worker renews its advertisement (5s); it
	// expires after three missed.
	Heartbeat time.Duration
	// Domain is the JetStream domain to use ("": the local one), for a
	// process on a leaf node reaching the hub's JetStream.
	Domain string
	// ResultsMaxBytes bounds the results bucket (0: no bound). Servers
	// take results out as they arrive, so a bound holds what is in flight.
	ResultsMaxBytes int64
}

func (c Config) withDefaults() Config {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 5 * time.Second
	}
	return c
}

// Cluster is a connection to a NATS JetStream system holding a fleet's
// queues and results, shared by servers (which put batch lines on it)
// and workers (which run them).
type Cluster struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	cfg     Config
	lines   jetstream.Stream
	dead    jetstream.Stream
	adv     jetstream.Stream
	results jetstream.KeyValue
	workers jetstream.KeyValue
	blobs   jetstream.ObjectStore
	owned   bool // nc is Connect's
}

// Connect dials the NATS servers in url (comma-separated for a cluster),
// reconnecting for as long as the process runs, and opens the fleet's
// streams, creating those missing.
func Connect(ctx context.Context, url string, cfg Config, opts ...nats.Option) (*Cluster, error) {
	opts = append([]nats.Option{nats.Name("owl"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("fleet: connecting to %s: %w", url, err)
	}
	c, err := Open(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.owned = true
	return c, nil
}

// Open opens the fleet's streams over nc, creating those missing. The
// connection stays the caller's.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Cluster, error) {
	cfg = cfg.withDefaults()
	var js jetstream.JetStream
	var err error
	if cfg.Domain != "" {
		js, err = jetstream.NewWithDomain(nc, cfg.Domain)
	} else {
		js, err = jetstream.New(nc)
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	c := &Cluster{nc: nc, js: js, cfg: cfg}
	r := cfg.Replicas
	if c.lines, err = ensureStream(ctx, js, jetstream.StreamConfig{Name: LinesStream, Description: "owl batch lines waiting for a worker",
		Subjects: []string{lineSubjects}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: r,
		Duplicates: 10 * time.Minute}); err != nil {
		return nil, err
	}
	if c.dead, err = ensureStream(ctx, js, jetstream.StreamConfig{Name: DeadStream, Description: "owl batch lines that ran out of deliveries",
		Subjects: []string{deadSubjects}, Storage: jetstream.FileStorage, Replicas: r, MaxAge: 7 * 24 * time.Hour}); err != nil {
		return nil, err
	}
	if c.adv, err = ensureStream(ctx, js, jetstream.StreamConfig{Name: AdvisoriesStream, Description: "max-deliveries advisories of owl's lines",
		Subjects: []string{advisorySubjects}, Storage: jetstream.FileStorage, Replicas: r, MaxAge: 24 * time.Hour}); err != nil {
		return nil, err
	}
	if c.results, err = ensureKV(ctx, js, jetstream.KeyValueConfig{Bucket: ResultsBucket, Description: "owl batch results by BATCH.LINE",
		History: 1, Storage: jetstream.FileStorage, Replicas: r, MaxBytes: cfg.ResultsMaxBytes}); err != nil {
		return nil, err
	}
	if c.workers, err = ensureKV(ctx, js, jetstream.KeyValueConfig{Bucket: WorkersBucket, Description: "owl workers and what they run",
		History: 1, Storage: jetstream.FileStorage, Replicas: r, TTL: 3 * cfg.Heartbeat}); err != nil {
		return nil, err
	}
	if c.blobs, err = ensureObjects(ctx, js, jetstream.ObjectStoreConfig{Bucket: BlobsBucket, Description: "owl request bodies and results too large for a message",
		Storage: jetstream.FileStorage, Replicas: r, TTL: 8 * 24 * time.Hour}); err != nil {
		return nil, err
	}
	return c, nil
}

// Close closes the connection if Connect made it.
func (c *Cluster) Close() {
	if c.owned {
		c.nc.Close()
	}
}

// Conn is the cluster's NATS connection.
func (c *Cluster) Conn() *nats.Conn { return c.nc }

// Config is the configuration in effect, defaults filled in.
func (c *Cluster) Config() Config { return c.cfg }

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return ensure("stream "+cfg.Name, func() (jetstream.Stream, error) { return js.Stream(ctx, cfg.Name) },
		func() (jetstream.Stream, error) { return js.CreateStream(ctx, cfg) })
}

func ensureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return ensure("bucket "+cfg.Bucket, func() (jetstream.KeyValue, error) { return js.KeyValue(ctx, cfg.Bucket) },
		func() (jetstream.KeyValue, error) { return js.CreateKeyValue(ctx, cfg) })
}

func ensureObjects(ctx context.Context, js jetstream.JetStream, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	return ensure("object store "+cfg.Bucket, func() (jetstream.ObjectStore, error) { return js.ObjectStore(ctx, cfg.Bucket) },
		func() (jetstream.ObjectStore, error) { return js.CreateObjectStore(ctx, cfg) })
}

// ensure opens what get finds, creating it when missing; another
// process creating it meanwhile is no error.
func ensure[T any](what string, get, create func() (T, error)) (T, error) {
	var zero T
	for range 3 {
		v, err := get()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, jetstream.ErrBucketNotFound) {
			return zero, fmt.Errorf("fleet: %s: %w", what, err)
		}
		v, err = create()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && !errors.Is(err, jetstream.ErrBucketExists) {
			return zero, fmt.Errorf("fleet: creating %s: %w", what, err)
		}
	}
	return zero, fmt.Errorf("fleet: %s: created and gone again", what)
}

// Kinds of work, by the endpoint a line calls.
const (
	KindChat       = "chat"
	KindComplete   = "complete"
	KindEmbed      = "embed"
	KindTranscribe = "transcribe"
)

// Kinds lists every kind of work.
var Kinds = []string{KindChat, KindComplete, KindEmbed, KindTranscribe}

// KindOf is the kind of work of an endpoint, "" for one batches do not run.
func KindOf(url string) string {
	switch url {
	case "/v1/chat/completions":
		return KindChat
	case "/v1/completions":
		return KindComplete
	case "/v1/embeddings":
		return KindEmbed
	case "/v1/audio/transcriptions":
		return KindTranscribe
	}
	return ""
}

// token writes s as one subject token (and consumer name): letters,
// digits, '-' and '_' kept, every other byte as _XX.
func token(s string) string {
	var b strings.Builder
	for i := range len(s) {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '-':
			b.WriteByte(ch)
		default:
			fmt.Fprintf(&b, "_%02X", ch)
		}
	}
	return b.String()
}

// LineKey is a line's key in subjects and buckets, from its custom id.
func LineKey(customID string) string {
	h := sha256.Sum256([]byte(customID))
	return hex.EncodeToString(h[:16])
}

func lineSubject(kind, model, batch, line string) string {
	return "owl.line." + kind + "." + token(model) + "." + batch + "." + line
}

func consumerName(kind, model string) string { return kind + "_" + token(model) }

func resultKey(batch, line string) string { return batch + "." + line }
