package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultEndpoint is the Hugging Face hub.
const DefaultEndpoint = "https://huggingface.co"

// Errors a hub request can end in; each is wrapped with the file or
// repository and the status that explain it.
var (
	// ErrNotFound: the repository, revision or file does not exist (404).
	ErrNotFound = errors.New("not found on the hub")
	// ErrAccess: the hub wants a token (401) or refuses the one given (403).
	ErrAccess = errors.New("the hub refused access")
	// ErrServer: the hub or its CDN failed (5xx) or asked to slow down (429).
	ErrServer = errors.New("the hub failed")
	// ErrNetwork: the endpoint could not be reached at all.
	ErrNetwork = errors.New("cannot reach the hub")
	// ErrProtocol: an answer the hub never gives (bad headers, bad JSON).
	ErrProtocol = errors.New("unexpected answer from the hub")
)

// Client talks to the hub at Endpoint. Its fields may be set before first
// use and not after; a Client may then be used by several goroutines.
type Client struct {
	// Endpoint is the hub's base URL, or a mirror's.
	Endpoint string
	// Token, when set, is sent as "Authorization: Bearer" to Endpoint's host
	// only, never to a CDN a download is redirected to.
	Token string
	// HTTP does the requests; nil means one with connect and response
	// timeouts and the proxy from the environment (HTTPS_PROXY).
	HTTP *http.Client
	// UserAgent names the program in requests.
	UserAgent string
	// Retries is how many more times a request is tried after a failure
	// that may pass: a 5xx or 429 answer, or a download cut short.
	Retries int
	// RetryDelay is the wait before the first retry; it doubles after each.
	RetryDelay time.Duration
	// StallTimeout aborts a download that receives nothing for this long
	// (0: a minute).
	StallTimeout time.Duration
}

// NewClient returns a client configured from the environment:
// OWL_HF_ENDPOINT (or huggingface_hub's HF_ENDPOINT) for a mirror, HF_TOKEN
// for gated and private repositories, 3 retries a second apart at first.
func NewClient(userAgent string) *Client {
	return &Client{Endpoint: EndpointFromEnv(), Token: os.Getenv("HF_TOKEN"), UserAgent: userAgent,
		Retries: 3, RetryDelay: time.Second}
}

// EndpointFromEnv is $OWL_HF_ENDPOINT, else $HF_ENDPOINT, else
// DefaultEndpoint, without a trailing slash.
func EndpointFromEnv() string {
	for _, k := range []string{"OWL_HF_ENDPOINT", "HF_ENDPOINT"} {
		if v := os.Getenv(k); v != "" {
			return strings.TrimRight(v, "/")
		}
	}
	return DefaultEndpoint
}

var defaultHTTP = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   30 * time.Second,
	ResponseHeaderTimeout: time.Minute,
	IdleConnTimeout:       90 * time.Second,
	ForceAttemptHTTP2:     true,
}}

func (c *Client) endpoint() (*url.URL, error) {
	ep := strings.TrimRight(c.Endpoint, "/")
	if ep == "" {
		ep = DefaultEndpoint
	}
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("hub endpoint %q is not an http(s) URL (OWL_HF_ENDPOINT)", c.Endpoint)
	}
	return u, nil
}

// httpClient returns c.HTTP (or the default) with a redirect policy that
// keeps the token to the endpoint's host; with stopAtOtherHost, a redirect
// to another host is not followed but answered as is (the hub's headers
// are on the redirect itself).
func (c *Client) httpClient(ep *url.URL, stopAtOtherHost bool) *http.Client {
	base := c.HTTP
	if base == nil {
		base = defaultHTTP
	}
	hc := *base
	hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return fmt.Errorf("%w: more than 10 redirects", ErrProtocol)
		}
		if req.URL.Host != ep.Host {
			if stopAtOtherHost {
				return http.ErrUseLastResponse
			}
			req.Header.Del("Authorization")
		}
		return nil
	}
	return &hc
}

func (c *Client) newRequest(ctx context.Context, method string, u *url.URL, ep *url.URL) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	if c.Token != "" && u.Host == ep.Host {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

// escapePath escapes each segment of a repository path.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// ResolveURL is where the hub serves file path of repo at revision.
func (c *Client) ResolveURL(repo, revision, path string) (string, error) {
	ep, err := c.endpoint()
	if err != nil {
		return "", err
	}
	return ep.String() + "/" + repo + "/resolve/" + url.PathEscape(revision) + "/" + escapePath(path), nil
}

// FileInfo is what the hub says of one file.
type FileInfo struct {
	Repo, Revision, Path string
	URL                  string // the resolve URL
	Commit               string // X-Repo-Commit: the commit the revision points at
	ETag                 string // without quotes or W/
	SHA256               string // lowercase hex; "" when the hub gave no sha256 (files kept in git)
	Size                 int64  // -1 when the hub did not say
}

// Label names the file for messages: hf.co/ORG/REPO:PATH.
func (f FileInfo) Label() string { return "hf.co/" + f.Repo + ":" + f.Path }

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func normalizeETag(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	return strings.Trim(s, `"`)
}

// Stat asks the hub about one file without downloading it: a HEAD request
// on its resolve URL that follows the hub's own (same-host) redirects but
// not the one to a CDN.
func (c *Client) Stat(ctx context.Context, repo, revision, path string) (FileInfo, error) {
	if revision == "" {
		revision = DefaultRevision
	}
	fi := FileInfo{Repo: repo, Revision: revision, Path: path, Size: -1}
	if err := CheckPath(path); err != nil {
		return fi, fmt.Errorf("%w: %v", ErrBadRef, err)
	}
	ep, err := c.endpoint()
	if err != nil {
		return fi, err
	}
	if fi.URL, err = c.ResolveURL(repo, revision, path); err != nil {
		return fi, err
	}
	u, _ := url.Parse(fi.URL)
	label := fi.Label()
	var resp *http.Response
	err = c.retry(ctx, func() (bool, error) {
		req, err := c.newRequest(ctx, http.MethodHead, u, ep)
		if err != nil {
			return false, err
		}
		resp, err = c.httpClient(ep, true).Do(req)
		if err != nil {
			return false, requestError(ctx, label, ep, err)
		}
		resp.Body.Close()
		if err := statusError(resp, label, c.Token != ""); err != nil {
			return errors.Is(err, ErrServer), err
		}
		return false, nil
	})
	if err != nil {
		return fi, err
	}
	h := resp.Header
	fi.Commit = h.Get("X-Repo-Commit")
	linked := normalizeETag(h.Get("X-Linked-Etag"))
	fi.ETag = linked
	if fi.ETag == "" {
		fi.ETag = normalizeETag(h.Get("ETag"))
	}
	if hex64.MatchString(strings.ToLower(fi.ETag)) {
		fi.SHA256 = strings.ToLower(fi.ETag)
	}
	sizeHeader := h.Get("X-Linked-Size")
	if sizeHeader == "" && resp.StatusCode == http.StatusOK {
		sizeHeader = h.Get("Content-Length")
	}
	if sizeHeader != "" {
		n, err := strconv.ParseInt(sizeHeader, 10, 64)
		if err != nil || n < 0 {
			return fi, fmt.Errorf("%s: %w: size %q", label, ErrProtocol, sizeHeader)
		}
		fi.Size = n
	}
	if fi.ETag == "" && fi.Commit == "" {
		// Not the hub: a captive portal or a misconfigured mirror.
		return fi, fmt.Errorf("%s: %w: %s answered %s without X-Repo-Commit or ETag; is OWL_HF_ENDPOINT a Hugging Face hub?",
			label, ErrProtocol, ep.Host, resp.Status)
	}
	return fi, nil
}

// RepoFile is one file of a repository listing.
type RepoFile struct {
	Path   string
	Size   int64
	BlobID string // git object id
	SHA256 string // the LFS oid, or "" for a file kept in git
}

type treeEntry struct {
	Type string `json:"type"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	OID  string `json:"oid"`
	LFS  *struct {
		OID  string `json:"oid"`
		Size int64  `json:"size"`
	} `json:"lfs"`
}

// Limits on a listing, far above real repositories.
const (
	maxListPages   = 100
	maxListBytes   = 64 << 20
	maxListEntries = 100000
)

// ListFiles lists every file of repo at revision, in every folder.
func (c *Client) ListFiles(ctx context.Context, repo, revision string) ([]RepoFile, error) {
	if revision == "" {
		revision = DefaultRevision
	}
	ep, err := c.endpoint()
	if err != nil {
		return nil, err
	}
	label := "hf.co/" + repo
	next := ep.String() + "/api/models/" + repo + "/tree/" + url.PathEscape(revision) + "?recursive=true"
	var files []RepoFile
	for page := 0; next != ""; page++ {
		if page == maxListPages {
			return nil, fmt.Errorf("%s: %w: more than %d pages of files", label, ErrProtocol, maxListPages)
		}
		u, err := url.Parse(next)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: next page %q", label, ErrProtocol, next)
		}
		if u.Host != ep.Host {
			return nil, fmt.Errorf("%s: %w: next page on another host %s", label, ErrProtocol, u.Host)
		}
		var entries []treeEntry
		err = c.retry(ctx, func() (bool, error) {
			req, err := c.newRequest(ctx, http.MethodGet, u, ep)
			if err != nil {
				return false, err
			}
			resp, err := c.httpClient(ep, false).Do(req)
			if err != nil {
				return false, requestError(ctx, label, ep, err)
			}
			defer resp.Body.Close()
			if err := statusError(resp, label, c.Token != ""); err != nil {
				return errors.Is(err, ErrServer), err
			}
			body, err := io.ReadAll(io.LimitReader(resp.Body, maxListBytes+1))
			if err != nil {
				return true, fmt.Errorf("%s: %w: reading the file list: %v", label, ErrServer, err)
			}
			if len(body) > maxListBytes {
				return false, fmt.Errorf("%s: %w: file list over %d bytes", label, ErrProtocol, maxListBytes)
			}
			if err := json.Unmarshal(body, &entries); err != nil {
				return false, fmt.Errorf("%s: %w: file list: %v", label, ErrProtocol, err)
			}
			next = nextLink(resp.Header.Values("Link"), u)
			return false, nil
		})
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.Type != "file" {
				continue
			}
			f := RepoFile{Path: e.Path, Size: e.Size, BlobID: e.OID}
			if e.LFS != nil {
				f.SHA256 = strings.ToLower(e.LFS.OID)
				f.Size = e.LFS.Size
			}
			files = append(files, f)
		}
		if len(files) > maxListEntries {
			return nil, fmt.Errorf("%s: %w: more than %d files", label, ErrProtocol, maxListEntries)
		}
	}
	return files, nil
}

// nextLink finds the rel="next" URL of Link headers, resolved against base.
func nextLink(links []string, base *url.URL) string {
	for _, h := range links {
		for _, link := range strings.Split(h, ",") {
			target, params, ok := strings.Cut(strings.TrimSpace(link), ";")
			if !ok || !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
				continue
			}
			target = strings.Trim(strings.TrimSpace(target), "<>")
			u, err := base.Parse(target)
			if err != nil {
				return ""
			}
			return u.String()
		}
	}
	return ""
}

// statusError turns an answer that is not a success into an error that
// names the file and the status.
func statusError(resp *http.Response, label string, haveToken bool) error {
	code := resp.StatusCode
	if code < 400 {
		return nil
	}
	detail := resp.Status
	if ec := resp.Header.Get("X-Error-Code"); ec != "" {
		detail += ", " + ec
	}
	if msg := resp.Header.Get("X-Error-Message"); msg != "" {
		detail += ": " + msg
	}
	switch {
	case code == http.StatusNotFound:
		return fmt.Errorf("%s: %w (%s)", label, ErrNotFound, detail)
	case code == http.StatusUnauthorized && !haveToken:
		return fmt.Errorf("%s: %w (%s): the repository is private or gated, or does not exist; set HF_TOKEN to a token that may read it", label, ErrAccess, detail)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return fmt.Errorf("%s: %w (%s): HF_TOKEN may not read this repository (a gated one needs its terms accepted on the hub)", label, ErrAccess, detail)
	case code == http.StatusTooManyRequests || code >= 500:
		return fmt.Errorf("%s: %w (%s)", label, ErrServer, detail)
	}
	return fmt.Errorf("%s: %w (%s)", label, ErrProtocol, detail)
}

// requestError explains a request that got no answer.
func requestError(ctx context.Context, label string, ep *url.URL, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if isUnreachable(err) {
		return fmt.Errorf("%s: %w %s (%v): check the network connection, a proxy (HTTPS_PROXY) or a mirror (OWL_HF_ENDPOINT); models already in the store need no network",
			label, ErrNetwork, ep.Host, unwrapURLError(err))
	}
	return fmt.Errorf("%s: %w: %v", label, ErrServer, unwrapURLError(err))
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// isUnreachable reports whether err means no connection could be made.
func isUnreachable(err error) bool {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	for _, e := range []error{syscall.ECONNREFUSED, syscall.ENETUNREACH, syscall.EHOSTUNREACH, syscall.ENETDOWN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// retry runs attempt until it succeeds, fails for good, or has failed
// Retries+1 times; attempt reports whether its error may pass.
func (c *Client) retry(ctx context.Context, attempt func() (retryable bool, err error)) error {
	delay := c.RetryDelay
	for i := 0; ; i++ {
		retryable, err := attempt()
		if err == nil || !retryable || i >= c.Retries || ctx.Err() != nil {
			if err != nil && retryable && i > 0 {
				err = fmt.Errorf("%w (after %d attempts)", err, i+1)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
}
