package fetch

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/fileutil"
	"github.com/kiln-dev/kiln/layout"
)

// Defaults. The stall timeout stands in for an overall timeout, which would
// kill a slow but healthy multi-gigabyte download.
const (
	defaultStallTimeout = 60 * time.Second
	progressInterval    = 200 * time.Millisecond // at most ~5 Progress calls a second
	maxListSize         = 16 << 20               // a checksum list is text; anything bigger is not one
	staleTmpAge         = 24 * time.Hour         // tmp-* files untouched this long belong to dead processes
	copyBufferSize      = 1 << 20
)

// Fetcher downloads files into CacheDir. The zero value plus CacheDir is
// ready to use; it is safe for concurrent use, also by several processes
// sharing CacheDir.
type Fetcher struct {
	CacheDir string       // e.g. $XDG_CACHE_HOME/kiln/downloads; created (0700) if missing
	Client   *http.Client // nil: a client with a 30s connect timeout and no overall timeout
	// Progress, if set, is called with bytes done and the total (-1 when
	// the server does not say) at most ~5 times a second, and once at the
	// end, on the goroutine that called Fetch; it should return quickly.
	Progress func(done, total int64)
	// Verify re-hashes a cached file before returning it, for when the disk
	// (not the network) is suspect. A bad copy is removed and fetched again.
	Verify bool

	stallTimeout time.Duration // 0: defaultStallTimeout; tests shorten it
}

// Result describes the verified local copy.
type Result struct {
	Path     string   // absolute path in CacheDir; read-only (0444), never modify it in place
	Checksum Checksum // the digest checked (a file: list resolved to Algo and Hex)
	Cached   bool     // true when no download happened
	Size     int64
}

// MismatchError reports a download whose content does not match the
// expected checksum: the upstream file changed, or the checksum is wrong.
type MismatchError struct {
	URL      string // with any password redacted
	Expected Checksum
	Got      Checksum
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("checksum mismatch for %s: expected %s, got %s", e.URL, e.Expected, e.Got)
}

// opError is a one-line "OP URL: cause" error. Go's own errors repeat the
// URL and the dial details ("Get "…": dial tcp …: connect: connection
// refused"); msg keeps only the root cause, while Unwrap still exposes the
// full chain for errors.Is (context.Canceled, syscall.ECONNREFUSED, …).
type opError struct {
	op, url, msg string
	err          error
}

func (e *opError) Error() string { return e.op + " " + e.url + ": " + e.msg }
func (e *opError) Unwrap() error { return e.err }

func newOpError(op string, u *url.URL, err error) error {
	return &opError{op: op, url: u.Redacted(), msg: rootCause(err), err: err}
}

// statusError is an HTTP response other than 200 OK.
type statusError struct {
	code   int
	status string
}

func (e *statusError) Error() string { return "HTTP " + e.status }

// stallError is the cause given to a download's context when no bytes
// arrived for d.
type stallError struct{ d time.Duration }

func (e *stallError) Error() string { return fmt.Sprintf("stalled: no data received for %s", e.d) }

// rootCause strips the wrapping that net/http, net and os add, keeping the
// part a person can act on ("connection refused", "no such host").
func rootCause(err error) string {
	for {
		switch e := err.(type) {
		case *url.Error:
			err = e.Err
		case *net.OpError:
			if e.Op == "dial" && e.Timeout() {
				return "connection timed out"
			}
			if e.Err == nil {
				return e.Error()
			}
			err = e.Err
		case *os.SyscallError:
			err = e.Err
		case *fs.PathError:
			err = e.Err
		case *net.DNSError:
			if e.IsNotFound {
				return "lookup " + e.Name + ": no such host"
			}
			return "lookup " + e.Name + ": " + e.Err
		case *statusError, *stallError:
			return e.Error()
		default:
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return "connection closed before the whole file arrived"
			}
			return err.Error()
		}
	}
}

var defaultClient = sync.OnceValue(func() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 30 * time.Second
	t.ResponseHeaderTimeout = defaultStallTimeout
	return &http.Client{Transport: t} // no Timeout: big files take as long as they take
})

func (f *Fetcher) client() *http.Client {
	if f.Client != nil {
		return f.Client
	}
	return defaultClient()
}

func (f *Fetcher) stall() time.Duration {
	if f.stallTimeout > 0 {
		return f.stallTimeout
	}
	return defaultStallTimeout
}

// Fetch returns a verified local copy of rawURL (http, https or file).
//
// With a file: checksum it first downloads the list and looks up the
// entry for the URL's file name; the list is kept in CacheDir so that an
// offline machine can still resolve it (only on network errors: an HTTP
// error from the list's server is reported, not papered over).
//
// A file already in the cache under ALGO-HEX is returned without touching
// the network. Otherwise the file streams into CacheDir/tmp-* while being
// hashed and is renamed into place (0444) only when it matches; on any
// failure, including ctx cancellation, the partial file is removed.
// Concurrent Fetches of the same file each download to their own tmp file;
// the atomic rename makes the last one win with identical content.
func (f *Fetcher) Fetch(ctx context.Context, rawURL string, sum Checksum) (Result, error) {
	u, err := parseSourceURL(rawURL)
	if err != nil {
		return Result{}, fmt.Errorf("download: %v", err)
	}
	if f.CacheDir == "" {
		return Result{}, errors.New("download: no cache folder given")
	}
	dir, err := filepath.Abs(f.CacheDir)
	if err != nil {
		return Result{}, fmt.Errorf("download cache %s: %w", f.CacheDir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Result{}, fmt.Errorf("download cache: %w", err)
	}

	if sum.Hex == "" {
		if sum.ListURL == "" {
			return Result{}, fmt.Errorf("download %s: no checksum given: want %s", u.Redacted(), checksumForms)
		}
		name := path.Base(u.Path)
		if name == "/" || name == "." {
			return Result{}, fmt.Errorf("download %s: the URL has no file name to look up in %s", u.Redacted(), sum.ListURL)
		}
		if sum, err = f.resolve(ctx, dir, sum.ListURL, name); err != nil {
			return Result{}, err
		}
	}
	sum = Checksum{Algo: strings.ToLower(sum.Algo), Hex: strings.ToLower(sum.Hex)}
	if err := sum.checkDigest(); err != nil {
		return Result{}, fmt.Errorf("download %s: checksum %q: %v", u.Redacted(), sum, err)
	}

	final := layout.Downloads(dir).File(sum.Algo, sum.Hex)
	if res, ok, err := f.cached(ctx, final, sum); err != nil || ok {
		return res, err
	}
	removeStaleTmp(dir)
	return f.download(ctx, dir, u, sum, final)
}

// Discard removes a download from the cache, for a file that arrived as
// asked but that its user refuses (an image the image gate turns away):
// kiln keeps no hostile file. Only a file in this Fetcher's cache folder
// is removed.
func (f *Fetcher) Discard(r Result) error {
	dir, err := filepath.Abs(f.CacheDir)
	if err != nil || f.CacheDir == "" || filepath.Dir(r.Path) != dir {
		return fmt.Errorf("download cache: %s is not one of its files", r.Path)
	}
	return os.Remove(r.Path)
}

// cached returns the cache entry for sum if it can be trusted. The file
// name is the checksum and files only get that name after verification,
// so a plausible size is enough unless Verify asks for a re-hash.
func (f *Fetcher) cached(ctx context.Context, final string, sum Checksum) (Result, bool, error) {
	fi, err := os.Stat(final)
	if err != nil {
		return Result{}, false, nil
	}
	if !fi.Mode().IsRegular() || !plausibleSize(fi.Size(), sum) {
		os.Remove(final)
		return Result{}, false, nil
	}
	if f.Verify {
		got, err := hashFile(ctx, final, sum.Algo)
		if err != nil {
			return Result{}, false, fmt.Errorf("verify cached %s: %w", final, err)
		}
		if got != sum.Hex {
			os.Remove(final) // damaged on disk; fetch it again
			return Result{}, false, nil
		}
	}
	return Result{Path: final, Checksum: sum, Cached: true, Size: fi.Size()}, true, nil
}

// emptyDigests are the digests of zero bytes: the only ones for which an
// empty cache file is plausible.
var emptyDigests = map[string]bool{
	hex.EncodeToString(sha256.New().Sum(nil)): true,
	hex.EncodeToString(sha512.New().Sum(nil)): true,
}

// plausibleSize rejects the one damage a crash or full disk can leave
// under a final name: an empty (truncated) file.
func plausibleSize(size int64, sum Checksum) bool {
	return size > 0 || emptyDigests[sum.Hex]
}

func newHash(algo string) hash.Hash {
	if algo == "sha512" {
		return sha512.New()
	}
	return sha256.New()
}

func hashFile(ctx context.Context, name, algo string) (string, error) {
	file, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer file.Close()
	h := newHash(algo)
	if _, err := io.CopyBuffer(h, &ctxReader{ctx, file}, make([]byte, copyBufferSize)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// download streams u into a tmp file in dir, hashing as it goes, and
// renames it to final once the digest matches.
func (f *Fetcher) download(ctx context.Context, dir string, u *url.URL, sum Checksum, final string) (res Result, err error) {
	body, total, err := f.open(ctx, u)
	if err != nil {
		return Result{}, newOpError("download", u, err)
	}
	defer body.Close()

	tmp, err := os.CreateTemp(dir, layout.DownloadTmpPattern)
	if err != nil {
		return Result{}, fmt.Errorf("download %s: %w", u.Redacted(), err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	h := newHash(sum.Algo)
	buf := make([]byte, copyBufferSize)
	var done int64
	last := time.Now()
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if _, werr := tmp.Write(buf[:n]); werr != nil {
				return Result{}, fmt.Errorf("download %s: %w", u.Redacted(), werr)
			}
			done += int64(n)
			if f.Progress != nil && time.Since(last) >= progressInterval {
				last = time.Now()
				f.Progress(done, total)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return Result{}, newOpError("download", u, rerr)
		}
	}
	if f.Progress != nil {
		f.Progress(done, total)
	}
	if total >= 0 && done != total {
		return Result{}, fmt.Errorf("download %s: got %d bytes, expected %d", u.Redacted(), done, total)
	}
	got := Checksum{Algo: sum.Algo, Hex: hex.EncodeToString(h.Sum(nil))}
	if got.Hex != sum.Hex {
		return Result{}, &MismatchError{URL: u.Redacted(), Expected: sum, Got: got}
	}
	// Read-only, because images are used as qcow2 backing files and must
	// never change under them; synced before the rename so a crash cannot
	// leave a verified name on unwritten data.
	if err := tmp.Chmod(0o444); err != nil {
		return Result{}, fmt.Errorf("download %s: %w", u.Redacted(), err)
	}
	if err := tmp.Sync(); err != nil {
		return Result{}, fmt.Errorf("download %s: %w", u.Redacted(), err)
	}
	if err := tmp.Close(); err != nil {
		return Result{}, fmt.Errorf("download %s: %w", u.Redacted(), err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return Result{}, fmt.Errorf("download %s: %w", u.Redacted(), err)
	}
	return Result{Path: final, Checksum: sum, Size: done}, nil
}

// open starts reading u and returns its body and size (-1 if unknown).
// Errors are raw; callers wrap them with newOpError.
func (f *Fetcher) open(ctx context.Context, u *url.URL) (io.ReadCloser, int64, error) {
	if u.Scheme == "file" {
		file, err := fileutil.OpenRegular(u.Path) // a FIFO or device would never end
		if err != nil {
			return nil, 0, err
		}
		fi, err := file.Stat()
		if err != nil {
			file.Close()
			return nil, 0, err
		}
		if !fi.Mode().IsRegular() {
			file.Close()
			return nil, 0, errors.New("not a regular file")
		}
		return &ctxReadCloser{ctxReader{ctx, file}, file}, fi.Size(), nil
	}

	// The stall timer runs from the request on and is pushed back by every
	// read that brings bytes; when it fires it cancels the request with a
	// stallError as the cause.
	d := f.stall()
	dlCtx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(d, func() { cancel(&stallError{d}) })
	fail := func(err error) (io.ReadCloser, int64, error) {
		timer.Stop()
		if dlCtx.Err() != nil {
			err = context.Cause(dlCtx)
		}
		cancel(nil)
		return nil, 0, err
	}
	req, err := http.NewRequestWithContext(dlCtx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fail(err)
	}
	// identity: otherwise Go asks for gzip and transparently decompresses,
	// and we would hash something other than the file the checksum is for.
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("User-Agent", "kiln")
	resp, err := f.client().Do(req)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		status := resp.Status
		if status == "" {
			status = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		}
		return fail(&statusError{code: resp.StatusCode, status: status})
	}
	return &stallBody{body: resp.Body, timer: timer, d: d, ctx: dlCtx, cancel: cancel}, resp.ContentLength, nil
}

// stallBody pushes the stall timer back on every read that brings bytes
// and reports why the request was canceled (stall or caller) instead of
// the transport's generic error.
type stallBody struct {
	body   io.ReadCloser
	timer  *time.Timer
	d      time.Duration
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if n > 0 {
		b.timer.Reset(b.d)
	}
	if err != nil && err != io.EOF && b.ctx.Err() != nil {
		err = context.Cause(b.ctx)
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.timer.Stop()
	b.cancel(nil)
	return b.body.Close()
}

// ctxReader makes local-file copies honour cancellation between reads.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, context.Cause(r.ctx)
	}
	return r.r.Read(p)
}

type ctxReadCloser struct {
	ctxReader
	c io.Closer
}

func (r *ctxReadCloser) Close() error { return r.c.Close() }

// resolve downloads the checksum list at listURL and returns name's entry.
// A successfully used http(s) list is kept in dir, and used when the
// network is unreachable, so that file: checksums work offline too.
func (f *Fetcher) resolve(ctx context.Context, dir, listURL, name string) (Checksum, error) {
	u, err := parseSourceURL(listURL)
	if err != nil {
		return Checksum{}, fmt.Errorf("checksum list: %v", err)
	}
	where := fmt.Sprintf("%s at %s", path.Base(u.Path), u.Redacted())
	keep := layout.Downloads(dir).List(listKey(listURL))

	data, err := f.readList(ctx, u)
	fromCache := false
	if err != nil {
		var se *statusError
		if u.Scheme == "file" || errors.As(err, &se) || ctx.Err() != nil {
			return Checksum{}, err
		}
		saved, rerr := os.ReadFile(keep)
		if rerr != nil {
			return Checksum{}, err
		}
		data, fromCache = saved, true
	}
	sum, err := ParseSumsList(data, name)
	if err != nil {
		var le *listError
		if errors.As(err, &le) {
			e := *le
			e.where = where
			if fromCache {
				e.where += " (saved copy; the list could not be downloaded)"
			}
			return Checksum{}, &e
		}
		return Checksum{}, fmt.Errorf("%s: %w", where, err)
	}
	if !fromCache && u.Scheme != "file" {
		// Best effort: a failure only costs offline resolution later.
		_ = writeAtomic(dir, keep, data)
	}
	return sum, nil
}

func (f *Fetcher) readList(ctx context.Context, u *url.URL) ([]byte, error) {
	body, _, err := f.open(ctx, u)
	if err != nil {
		return nil, newOpError("download checksum list", u, err)
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, maxListSize+1))
	if err != nil {
		return nil, newOpError("download checksum list", u, err)
	}
	if len(data) > maxListSize {
		return nil, fmt.Errorf("checksum list %s is larger than %d MiB; is it really a checksum list?", u.Redacted(), maxListSize>>20)
	}
	return data, nil
}

// listKey names a saved checksum list after its URL (lists change under a
// fixed URL, unlike images, so the URL is the right key here).
func listKey(listURL string) string {
	h := sha256.Sum256([]byte(listURL))
	return hex.EncodeToString(h[:16])
}

// writeAtomic writes data to name via a tmp file in dir, so readers see
// the old or the new content, never half of it.
func writeAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, layout.DownloadTmpPattern)
	if err != nil {
		return err
	}
	if _, err = tmp.Write(data); err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// removeStaleTmp deletes tmp files left by killed processes; multi-GB
// leftovers would otherwise fill the disk. Live downloads write at least
// once per stall timeout, so a day-old mtime means nobody owns the file.
func removeStaleTmp(dir string) {
	names, _ := filepath.Glob(filepath.Join(dir, layout.DownloadTmpPattern))
	for _, n := range names {
		if fi, err := os.Lstat(n); err == nil && time.Since(fi.ModTime()) > staleTmpAge {
			os.Remove(n)
		}
	}
}
