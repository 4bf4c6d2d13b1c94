package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// owl serve --tls-self-signed serves HTTPS with a certificate it makes
// once and keeps; a client that trusts it connects, plain HTTP does not,
// and a restart keeps the same certificate.
func TestServeTLSSelfSigned(t *testing.T) {
	dir := modelsFolder(t)
	env := append(os.Environ(), "OWL_CACHE_DIR="+t.TempDir())
	fingerprint := regexp.MustCompile(`TLS certificate .* \(SHA-256 ([0-9a-f]{64})\)`)
	var first string
	for run := range 2 {
		p := startServe(t, env, "--host", "127.0.0.1:0", "--models-dir", dir, "--tls-self-signed")
		m := fingerprint.FindStringSubmatch(p.stderr.String())
		if m == nil || !strings.Contains(p.stderr.String(), "serving on https://") {
			t.Fatalf("stderr: %s", p.stderr.String())
		}
		if run == 0 {
			first = m[1]
		} else if m[1] != first {
			t.Fatalf("the certificate changed across restarts: %s, then %s", first, m[1])
		}
		pemBytes, err := os.ReadFile(filepath.Join(dir, "tls", "owl-cert.pem"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemBytes)
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		url := strings.Replace(p.url, "http://", "https://", 1)
		resp, err := client.Get(url + "/health")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "ok") {
			t.Fatalf("https /health: %d %s", resp.StatusCode, body)
		}
		if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(p.url + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Fatal("plain HTTP was served on the TLS port")
			}
		}
		p.stop(t, os.Interrupt)
	}
	if r := owl(t, "", "serve", "--tls-cert", "x.pem"); r.code != 2 || !strings.Contains(r.stderr, "--tls-key") {
		t.Fatalf("a certificate without its key: %+v", r)
	}
}
