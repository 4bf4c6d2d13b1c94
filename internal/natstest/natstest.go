// Package natstest runs real NATS JetStream servers in the test's
// process, alone or as a cluster on loopback, for the fleet's tests.
package natstest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a set of NATS servers started by a test.
type Cluster struct {
	t       testing.TB
	Servers []*server.Server
	Opts    []*server.Options
}

// FreePorts returns n loopback ports free at the time of asking.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// Options are the options of an n-node JetStream cluster on loopback
// (a single server for n = 1), each node storing in a folder of the test's.
func Options(t testing.TB, n int) []*server.Options {
	t.Helper()
	ports := FreePorts(t, 2*n)
	var out []*server.Options
	for i := range n {
		o := &server.Options{ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: ports[i], JetStream: true,
			StoreDir: t.TempDir(), NoLog: true, NoSigs: true, MaxPayload: 8 << 20}
		if n > 1 {
			o.Cluster = server.ClusterOpts{Name: "owl", Host: "127.0.0.1", Port: ports[n+i]}
			for j := range n {
				if j != i {
					o.Routes = append(o.Routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", ports[n+j])})
				}
			}
		}
		out = append(out, o)
	}
	return out
}

// Start runs an n-node cluster until the test ends, once JetStream
// answers on it.
func Start(t testing.TB, n int) *Cluster { return StartOpts(t, Options(t, n)) }

// StartOpts runs servers with the options given until the test ends,
// once JetStream answers on every one.
func StartOpts(t testing.TB, opts []*server.Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Opts: opts}
	for _, o := range opts {
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		c.Servers = append(c.Servers, s)
	}
	t.Cleanup(func() {
		for _, s := range c.Servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	for i, s := range c.Servers {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatalf("nats server %d did not start", i)
		}
	}
	for i := range c.Servers {
		if opts[i].JetStream {
			c.WaitJetStream(i, opts[i].JetStreamDomain)
		}
	}
	return c
}

// WaitJetStream waits until JetStream answers on server i (for a
// cluster: once it has a leader).
func (c *Cluster) WaitJetStream(i int, domain string) {
	c.t.Helper()
	nc, err := nats.Connect(c.Servers[i].ClientURL())
	if err != nil {
		c.t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if domain != "" {
		js, _ = jetstream.NewWithDomain(nc, domain)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("jetstream on server %d: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// URL is every server's client URL, comma-separated, as clients take it.
func (c *Cluster) URL() string {
	var us []string
	for _, s := range c.Servers {
		us = append(us, s.ClientURL())
	}
	return strings.Join(us, ",")
}

// Kill stops server i at once, as a node lost.
func (c *Cluster) Kill(i int) {
	c.Servers[i].Shutdown()
	c.Servers[i].WaitForShutdown()
}
