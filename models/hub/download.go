package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Errors a download can end in, besides those of a request.
var (
	// ErrInterrupted: the connection broke before the whole file came; the
	// partial file keeps what arrived and the next download resumes it.
	ErrInterrupted = errors.New("download interrupted")
	// ErrChecksum: the whole file arrived but is not the one the hub
	// describes (another sha256 or size); the partial file is removed.
	ErrChecksum = errors.New("downloaded file does not match the hub's checksum")
)

// Progress reports a download: Done of Total bytes are in the partial file
// (Total is -1 when unknown).
type Progress func(done, total int64)

// Downloaded describes a completed, verified download.
type Downloaded struct {
	SHA256   string // of the file's bytes, lowercase hex
	Size     int64
	Resumed  int64 // bytes that were already in the partial file
	Verified bool  // the hub gave a sha256 and it matched
}

const copyChunk = 256 << 10

// Download fetches the file f describes into the file at partial, resuming
// from the bytes already there with a Range request, and checks the result
// against f's size and sha256. On success the partial file holds exactly the
// file, synced to disk; on ErrInterrupted (or cancellation) it keeps what
// arrived; on ErrChecksum it is removed. Download does not lock partial:
// callers that may run at once must.
//
// A server that ignores the Range request (answers 200) has the partial file
// rewritten from the start; one that cannot satisfy it (416) has it
// discarded and fetched again.
func (c *Client) Download(ctx context.Context, f FileInfo, partial string, progress Progress) (Downloaded, error) {
	ep, err := c.endpoint()
	if err != nil {
		return Downloaded{}, err
	}
	u, err := url.Parse(f.URL)
	if err != nil || f.URL == "" {
		return Downloaded{}, fmt.Errorf("%s: %w: no resolve URL", f.Label(), ErrProtocol)
	}
	file, err := os.OpenFile(partial, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return Downloaded{}, err
	}
	defer file.Close()
	d := &download{c: c, ep: ep, u: u, f: f, file: file, progress: progress, h: sha256.New()}
	if err := d.rehash(); err != nil {
		return Downloaded{}, err
	}
	d.resumed = d.done
	err = c.retry(ctx, func() (bool, error) { return d.attempt(ctx) })
	if err != nil {
		if errors.Is(err, ErrChecksum) {
			file.Close()
			os.Remove(partial)
		}
		return Downloaded{}, err
	}
	if err := file.Sync(); err != nil {
		return Downloaded{}, err
	}
	got := hex.EncodeToString(d.h.Sum(nil))
	res := Downloaded{SHA256: got, Size: d.done, Resumed: d.resumed}
	if f.SHA256 != "" {
		if got != f.SHA256 {
			file.Close()
			os.Remove(partial)
			return Downloaded{}, fmt.Errorf("%s: %w: got sha256 %s for %d bytes, the hub says %s; the download was discarded",
				f.Label(), ErrChecksum, got, d.done, f.SHA256)
		}
		res.Verified = true
	}
	return res, nil
}

// download is the state of one Download across its attempts: the partial
// file, how many bytes it holds and their running hash.
type download struct {
	c        *Client
	ep, u    *url.URL
	f        FileInfo
	file     *os.File
	progress Progress
	h        hash.Hash
	done     int64 // bytes in the file, all hashed
	resumed  int64
	total    int64 // expected size; -1 unknown
}

// rehash hashes what the partial file already holds, discarding it when it
// is longer than the file can be.
func (d *download) rehash() error {
	d.total = d.f.Size
	st, err := d.file.Stat()
	if err != nil {
		return err
	}
	if d.total >= 0 && st.Size() > d.total {
		return d.restart()
	}
	if _, err := d.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	n, err := io.Copy(d.h, io.LimitReader(d.file, st.Size()))
	if err != nil {
		return fmt.Errorf("reading the partial file %s: %w", d.file.Name(), err)
	}
	d.done = n
	return nil
}

// restart empties the partial file.
func (d *download) restart() error {
	if err := d.file.Truncate(0); err != nil {
		return err
	}
	if _, err := d.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	d.h.Reset()
	d.done, d.resumed = 0, 0
	return nil
}

func (d *download) report() {
	if d.progress != nil {
		d.progress(d.done, d.total)
	}
}

// attempt makes one request and appends its body to the partial file.
func (d *download) attempt(ctx context.Context) (bool, error) {
	label := d.f.Label()
	if d.total >= 0 && d.done == d.total {
		d.report()
		return false, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := d.c.newRequest(ctx, http.MethodGet, d.u, d.ep)
	if err != nil {
		return false, err
	}
	// The bytes as stored: sizes, offsets and the sha256 are of those, and
	// a compressed answer could not be resumed by offset.
	req.Header.Set("Accept-Encoding", "identity")
	if d.done > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", d.done))
	}
	resp, err := d.c.httpClient(d.ep, false).Do(req)
	if err != nil {
		err = requestError(ctx, label, d.ep, err)
		return !errors.Is(err, ErrNetwork) && ctx.Err() == nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		// The whole file: the server did not honour Range, or none was sent.
		if err := d.restart(); err != nil {
			return false, err
		}
	case http.StatusPartialContent:
		start, total, err := contentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return false, fmt.Errorf("%s: %w: %v", label, ErrProtocol, err)
		}
		if start != d.done {
			if err := d.restart(); err != nil {
				return false, err
			}
			return true, fmt.Errorf("%s: %w: asked for bytes from %d, got them from %d", label, ErrInterrupted, d.done, start)
		}
		if d.total < 0 {
			d.total = total
		} else if total >= 0 && total != d.total {
			return false, fmt.Errorf("%s: %w: the file is %d bytes, the hub said %d", label, ErrChecksum, total, d.total)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		// What the partial file holds cannot be the start of this file.
		if err := d.restart(); err != nil {
			return false, err
		}
		return true, fmt.Errorf("%s: %w: the server could not resume at byte %d (416); starting again", label, ErrInterrupted, d.done)
	default:
		if err := statusError(resp, label, d.c.Token != ""); err != nil {
			return errors.Is(err, ErrServer), err
		}
		return false, fmt.Errorf("%s: %w: %s", label, ErrProtocol, resp.Status)
	}
	if d.total < 0 && resp.StatusCode == http.StatusOK && resp.ContentLength >= 0 {
		d.total = resp.ContentLength
	}
	if resp.StatusCode == http.StatusOK && d.total >= 0 && resp.ContentLength >= 0 && resp.ContentLength != d.total {
		return false, fmt.Errorf("%s: %w: the server sends %d bytes, the hub said %d", label, ErrChecksum, resp.ContentLength, d.total)
	}
	d.report()
	if err := d.copyBody(ctx, cancel, resp.Body); err != nil {
		var we *writeError
		switch {
		case ctx.Err() != nil && context.Cause(ctx) != errStalled:
			return false, context.Cause(ctx)
		case errors.As(err, &we):
			return false, err
		case errors.Is(err, ErrChecksum):
			return false, fmt.Errorf("%s: %w", label, err)
		}
		return true, fmt.Errorf("%s: %w at %d of %s bytes (the partial file is kept; pulling again resumes it): %v",
			label, ErrInterrupted, d.done, sizeText(d.total), err)
	}
	if d.total >= 0 && d.done != d.total {
		if d.done > d.total {
			return false, fmt.Errorf("%s: %w: got %d bytes, the hub said %d", label, ErrChecksum, d.done, d.total)
		}
		return true, fmt.Errorf("%s: %w at %d of %d bytes (the partial file is kept; pulling again resumes it)", label, ErrInterrupted, d.done, d.total)
	}
	d.total = d.done
	return false, nil
}

var errStalled = errors.New("no data")

// writeError is a failure to write the partial file (a full disk): not
// something a retry mends.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// copyBody appends body to the partial file, hashing and reporting as it
// goes, and cancels the request when nothing arrives for StallTimeout.
func (d *download) copyBody(ctx context.Context, cancel context.CancelCauseFunc, body io.Reader) error {
	stall := d.c.StallTimeout
	if stall <= 0 {
		stall = time.Minute
	}
	timer := time.AfterFunc(stall, func() { cancel(errStalled) })
	defer timer.Stop()
	buf := make([]byte, copyChunk)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			timer.Reset(stall)
			if d.total >= 0 && d.done+int64(n) > d.total {
				return fmt.Errorf("%w: the server sends more than the %d bytes the hub said", ErrChecksum, d.total)
			}
			if _, err := d.file.Write(buf[:n]); err != nil {
				return &writeError{fmt.Errorf("writing %s: %w", d.file.Name(), err)}
			}
			d.h.Write(buf[:n])
			d.done += int64(n)
			d.report()
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			if context.Cause(ctx) == errStalled {
				return fmt.Errorf("nothing received for %v", stall)
			}
			return rerr
		}
	}
}

// contentRange parses "bytes START-END/TOTAL" (TOTAL may be "*": -1).
func contentRange(s string) (start, total int64, err error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, fmt.Errorf("Content-Range %q", s)
	}
	span, tot, ok := strings.Cut(rest, "/")
	first, _, ok2 := strings.Cut(span, "-")
	if !ok || !ok2 {
		return 0, 0, fmt.Errorf("Content-Range %q", s)
	}
	if start, err = strconv.ParseInt(first, 10, 64); err != nil || start < 0 {
		return 0, 0, fmt.Errorf("Content-Range %q", s)
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total < 0 {
			return 0, 0, fmt.Errorf("Content-Range %q", s)
		}
	}
	return start, total, nil
}

func sizeText(n int64) string {
	if n < 0 {
		return "?"
	}
	return strconv.FormatInt(n, 10)
}
