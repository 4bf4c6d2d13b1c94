package server

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/owlengine/owl/fleet"
	"github.com/owlengine/owl/internal/natstest"
)

// The cluster and edge configurations of docs/fleet are what they say:
// three JetStream nodes in one cluster of domain "hub" taking leaf
// nodes, and an edge device's leaf node without JetStream. Started on
// loopback (their hosts and folders moved), a batch queued on the
// cluster is run by a worker reaching it through the leaf node.
func TestFleetDocsConfigs(t *testing.T) {
	dir := filepath.Join("..", "docs", "fleet")
	var hubs []*natsserver.Options
	for i := 1; i <= 3; i++ {
		o, err := natsserver.ProcessConfigFile(filepath.Join(dir, fmt.Sprintf("n%d.conf", i)))
		if err != nil {
			t.Fatal(err)
		}
		if !o.JetStream || o.JetStreamDomain != "hub" || o.Cluster.Name != "owl" || len(o.Routes) != 3 || o.LeafNode.Port == 0 ||
			o.ServerName != fmt.Sprintf("n%d", i) {
			t.Fatalf("n%d.conf: jetstream %v domain %q cluster %q routes %d leaf port %d name %q", i, o.JetStream, o.JetStreamDomain,
				o.Cluster.Name, len(o.Routes), o.LeafNode.Port, o.ServerName)
		}
		hubs = append(hubs, o)
	}
	leaf, err := natsserver.ProcessConfigFile(filepath.Join(dir, "leaf.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if leaf.JetStream || len(leaf.LeafNode.Remotes) != 1 || len(leaf.LeafNode.Remotes[0].URLs) != 3 {
		t.Fatalf("leaf.conf: jetstream %v remotes %+v", leaf.JetStream, leaf.LeafNode.Remotes)
	}

	// To loopback: each node's client, cluster and leaf ports free ones,
	// the hosts named in routes and remotes those ports.
	ports := natstest.FreePorts(t, 10)
	clusterPort := map[string]int{}
	leafPort := map[string]int{}
	for i := range hubs {
		host := fmt.Sprintf("n%d.owl.internal", i+1)
		clusterPort[host], leafPort[host] = ports[3+i], ports[6+i]
	}
	moveURLs := func(us []*url.URL, to map[string]int) {
		for _, u := range us {
			p, ok := to[u.Hostname()]
			if !ok {
				t.Fatalf("%s names a host of no node", u)
			}
			u.Host = fmt.Sprintf("127.0.0.1:%d", p)
		}
	}
	for i, o := range hubs {
		o.Host, o.Port, o.HTTPPort, o.StoreDir, o.NoLog, o.NoSigs = "127.0.0.1", ports[i], 0, t.TempDir(), true, true
		o.Cluster.Host, o.Cluster.Port = "127.0.0.1", ports[3+i]
		o.LeafNode.Host, o.LeafNode.Port = "127.0.0.1", ports[6+i]
		moveURLs(o.Routes, clusterPort)
	}
	leaf.Host, leaf.Port, leaf.NoLog, leaf.NoSigs = "127.0.0.1", ports[9], true, true
	moveURLs(leaf.LeafNode.Remotes[0].URLs, leafPort)
	hub := natstest.StartOpts(t, hubs)
	edge := natstest.StartOpts(t, []*natsserver.Options{leaf})
	deadline := time.Now().Add(30 * time.Second)
	for edge.Servers[0].NumLeafNodes() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the leaf node did not connect")
		}
		time.Sleep(20 * time.Millisecond)
	}

	cfg := fleet.Config{Replicas: 3, Domain: "hub", AckWait: 2 * time.Second, Heartbeat: 300 * time.Millisecond}
	ts, s, c := fleetServer(t, t.TempDir(), hub.URL(), cfg)
	w := startWorker(t, edge.URL(), cfg, "edge-1", "", fleet.WorkerOptions{}, 0)
	var lines []batchLine
	for i := range 4 {
		lines = append(lines, chatLine(fmt.Sprintf("edge-%d", i), "tiny"))
	}
	b := waitBatch(t, c, submit(t, c, jsonl(lines...)).ID, done)
	checkAll(t, ts, s, c, b, byCustomID(lines))
	if got := w.metric("owl_worker_lines_total", "outcome", "done"); got != 4 {
		t.Fatalf("the edge worker ran %v lines", got)
	}
}

// counting counts the requests a handler serves.
type counting struct {
	h http.Handler
	n atomic.Int64
}

func (c *counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.n.Add(1)
	c.h.ServeHTTP(w, r)
}

// The load balancer configuration of docs/fleet, run by HAProxy in front
// of two servers: the batch APIs go to the first, requests of one
// session to one server, sessions over both; a server that stops
// answering its health check leaves the pool.
func TestFleetDocsHAProxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("no haproxy (make deps installs it): the load balancer configuration is not checked")
	}
	raw, err := os.ReadFile(filepath.Join("..", "docs", "fleet", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", filepath.Join("..", "docs", "fleet", "haproxy.cfg")).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	var owl [2]*counting
	var addr [2]string
	var ts [2]*httptest.Server
	for i := range owl {
		s, err := New(Config{Engine: sharedEngine, ModelsDir: modelsDir, DataDir: t.TempDir(), Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		owl[i] = &counting{h: s}
		ts[i] = httptest.NewServer(owl[i])
		t.Cleanup(func() { ts[i].Close(); s.Close() })
		addr[i] = ts[i].Listener.Addr().String()
	}
	port := natstest.FreePorts(t, 1)[0]
	cfg := strings.NewReplacer("bind :11435", fmt.Sprintf("bind 127.0.0.1:%d", port),
		"owl1.owl.internal:11435", addr[0], "owl2.owl.internal:11435", addr[1], "inter 2s", "inter 200ms").Replace(string(raw))
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	os.WriteFile(path, []byte(cfg), 0o644)
	cmd := exec.Command(bin, "-db", "-f", path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lb := fmt.Sprintf("http://127.0.0.1:%d", port)
	get := func(path, session string) int {
		req, _ := http.NewRequest(http.MethodGet, lb+path, nil)
		if session != "" {
			req.Header.Set("X-Session-Affinity", session)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(20 * time.Second)
	for get("/health", "") != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("haproxy does not answer:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	hits := func() [2]int64 { return [2]int64{owl[0].n.Load(), owl[1].n.Load()} }
	delta := func(f func()) [2]int64 {
		before := hits()
		f()
		after := hits()
		return [2]int64{after[0] - before[0], after[1] - before[1]}
	}
	if d := delta(func() {
		for range 6 {
			if code := get("/v1/batches", ""); code != 200 {
				t.Fatalf("/v1/batches through haproxy: %d", code)
			}
		}
	}); d[1] != 0 || d[0] < 6 {
		t.Fatalf("batch requests went to %v", d)
	}
	both := [2]int64{}
	for i := range 12 {
		d := delta(func() {
			for range 3 {
				get("/v1/models", fmt.Sprintf("session-%d", i))
			}
		})
		// Health checks land too: the session's three are all on one.
		if d[0] >= 3 && d[1] >= 3 {
			t.Fatalf("session-%d went to both servers: %v", i, d)
		}
		for k := range 2 {
			if d[k] >= 3 {
				both[k]++
			}
		}
	}
	if both[0] == 0 || both[1] == 0 {
		t.Fatalf("twelve sessions all on one server: %v", both)
	}
	// The second server goes: its sessions move to the first.
	ts[1].Close()
	deadline = time.Now().Add(20 * time.Second)
	for {
		ok := 0
		for i := range 12 {
			if get("/v1/models", fmt.Sprintf("session-%d", i)) == 200 {
				ok++
			}
		}
		if ok == 12 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 12 sessions answered after a server left:\n%s", ok, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
