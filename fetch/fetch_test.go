package fetch

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// content is a fake image, big enough to need several reads.
var content = bytes.Repeat([]byte("kiln base image\n"), 200_000)

func sha256Of(b []byte) Checksum {
	h := sha256.Sum256(b)
	return Checksum{Algo: "sha256", Hex: hex.EncodeToString(h[:])}
}

func sha512Of(b []byte) Checksum {
	h := sha512.Sum512(b)
	return Checksum{Algo: "sha512", Hex: hex.EncodeToString(h[:])}
}

// files serves fixed content by path and counts requests, so tests can
// prove the network was not used.
type files struct {
	m    map[string][]byte
	hits atomic.Int64
}

func (s *files) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	b, ok := s.m[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.Write(b)
}

func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	return srv
}

// entries lists dir, so tests can check that nothing partial was left.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func checkFile(t *testing.T, res Result, want []byte) {
	t.Helper()
	got, err := os.ReadFile(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s holds %d bytes, want %d", res.Path, len(got), len(want))
	}
	if res.Size != int64(len(want)) {
		t.Errorf("Size = %d, want %d", res.Size, len(want))
	}
	fi, err := os.Stat(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 {
		t.Errorf("%s has mode %v, want 0444", res.Path, fi.Mode().Perm())
	}
}

func TestFetchCachesAndReusesOffline(t *testing.T) {
	fs := &files{m: map[string][]byte{"/images/disk.qcow2": content}}
	srv := serve(t, fs)
	dir := filepath.Join(t.TempDir(), "downloads")
	var calls []int64
	f := &Fetcher{CacheDir: dir, Progress: func(done, total int64) {
		if total != int64(len(content)) {
			t.Errorf("Progress total = %d, want %d", total, len(content))
		}
		calls = append(calls, done)
	}}
	sum := sha256Of(content)
	url := srv.URL + "/images/disk.qcow2"

	res, err := f.Fetch(t.Context(), url, sum)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cached || res.Checksum != sum || res.Path != filepath.Join(dir, "sha256-"+sum.Hex) {
		t.Fatalf("first Fetch = %+v", res)
	}
	checkFile(t, res, content)
	if len(calls) == 0 || calls[len(calls)-1] != int64(len(content)) {
		t.Errorf("Progress calls %v; want the last one to report %d", calls, len(content))
	}
	if got := entries(t, dir); !slices.Equal(got, []string{"sha256-" + sum.Hex}) {
		t.Errorf("cache holds %v", got)
	}

	srv.Close() // offline from here on
	hits := fs.hits.Load()
	res2, err := f.Fetch(t.Context(), url, sum)
	if err != nil {
		t.Fatalf("offline Fetch: %v", err)
	}
	if !res2.Cached || res2.Path != res.Path || res2.Size != res.Size {
		t.Fatalf("offline Fetch = %+v, want the cached copy %+v", res2, res)
	}
	// Keyed by content: another URL for the same checksum is served from the cache too.
	res3, err := f.Fetch(t.Context(), "https://mirror.invalid/other-name.qcow2", sum)
	if err != nil || !res3.Cached || res3.Path != res.Path {
		t.Fatalf("Fetch from another URL = %+v, %v; want the cached copy", res3, err)
	}
	if fs.hits.Load() != hits {
		t.Error("cached Fetch touched the network")
	}
}

func TestFetchSHA512AndEmptyFile(t *testing.T) {
	srv := serve(t, &files{m: map[string][]byte{"/big.img": content, "/empty.img": {}}})
	dir := t.TempDir()
	f := &Fetcher{CacheDir: dir}
	for _, tc := range []struct {
		path string
		data []byte
		sum  Checksum
	}{
		{"/big.img", content, sha512Of(content)},
		{"/empty.img", nil, sha256Of(nil)},
	} {
		res, err := f.Fetch(t.Context(), srv.URL+tc.path, tc.sum)
		if err != nil {
			t.Fatal(err)
		}
		checkFile(t, res, tc.data)
		// An empty file is a plausible cache entry only for the empty digest.
		if res, err = f.Fetch(t.Context(), srv.URL+tc.path, tc.sum); err != nil || !res.Cached {
			t.Fatalf("second Fetch of %s = %+v, %v; want cached", tc.path, res, err)
		}
	}
}

func TestFetchErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String() + "/x.qcow2"
	ln.Close()

	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/disk.qcow2":
			w.Write(content)
		case "/short.qcow2": // promises more than it sends
			w.Header().Set("Content-Length", fmt.Sprint(len(content)+10))
			w.Write(content)
		case "/boom":
			http.Error(w, "boom", http.StatusInternalServerError)
		default:
			http.NotFound(w, r)
		}
	}))
	good, wrong := sha256Of(content), sha256Of([]byte("something else"))
	tests := []struct {
		name string
		url  string
		sum  Checksum
		want string // the whole message
	}{
		{"mismatch", srv.URL + "/disk.qcow2", wrong,
			fmt.Sprintf("checksum mismatch for %s/disk.qcow2: expected %s, got %s", srv.URL, wrong, good)},
		{"404", srv.URL + "/missing.qcow2", good, "download " + srv.URL + "/missing.qcow2: HTTP 404 Not Found"},
		{"500", srv.URL + "/boom", good, "download " + srv.URL + "/boom: HTTP 500 Internal Server Error"},
		{"refused", refused, good, "download " + refused + ": connection refused"},
		{"short body", srv.URL + "/short.qcow2", good, "download " + srv.URL + "/short.qcow2: connection closed before the whole file arrived"},
		{"password redacted", strings.Replace(srv.URL, "://", "://u:secret@", 1) + "/missing.qcow2", good,
			"download " + strings.Replace(srv.URL, "://", "://u:xxxxx@", 1) + "/missing.qcow2: HTTP 404 Not Found"},
		{"no checksum", srv.URL + "/disk.qcow2", Checksum{}, "download " + srv.URL + "/disk.qcow2: no checksum given: want " + checksumForms},
		{"bad checksum", srv.URL + "/disk.qcow2", Checksum{Algo: "sha256", Hex: "abc"},
			"download " + srv.URL + `/disk.qcow2: checksum "sha256:abc": sha256 needs 64 hex digits`},
		{"ftp", "ftp://example.org/x.qcow2", good, `download: URL "ftp://example.org/x.qcow2" is not http://, https:// or file://`},
		{"missing file", "file:///nonexistent/x.qcow2", good, "download file:///nonexistent/x.qcow2: no such file or directory"},
		{"directory", "file:///", good, "download file:///: not a regular file"},
		{"list has no entry", srv.URL + "/disk.qcow2", Checksum{ListURL: srv.URL + "/disk.qcow2"},
			"disk.qcow2 at " + srv.URL + `/disk.qcow2 is not a checksum list (no "HEX  NAME" or "SHA256 (NAME) = HEX" lines)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := (&Fetcher{CacheDir: dir}).Fetch(t.Context(), tt.url, tt.sum)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error\n got %v\nwant %s", err, tt.want)
			}
			if got := entries(t, dir); len(got) != 0 {
				t.Errorf("cache holds %v after a failed Fetch", got)
			}
		})
	}

	t.Run("mismatch is a MismatchError", func(t *testing.T) {
		_, err := (&Fetcher{CacheDir: t.TempDir()}).Fetch(t.Context(), srv.URL+"/disk.qcow2", wrong)
		var me *MismatchError
		if !errors.As(err, &me) || me.Expected != wrong || me.Got != good {
			t.Fatalf("error %#v is not the expected MismatchError", err)
		}
	})
}

func TestFetchSumsList(t *testing.T) {
	sum := sha256Of(content)
	fs := &files{m: map[string][]byte{
		"/images/disk.qcow2": content,
		"/images/SHA256SUMS": []byte(strings.Repeat("0", 64) + "  other.qcow2\n" + sum.Hex + " *disk.qcow2\n"),
		"/images/SHA512SUMS": []byte("SHA512 (./disk.qcow2) = " + sha512Of(content).Hex + "\n"),
	}}
	srv := serve(t, fs)
	dir := t.TempDir()
	f := &Fetcher{CacheDir: dir}
	img := srv.URL + "/images/disk.qcow2"

	res, err := f.Fetch(t.Context(), img, Checksum{ListURL: srv.URL + "/images/SHA256SUMS"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Cached || res.Checksum != sum {
		t.Fatalf("Fetch = %+v, want checksum %v", res, sum)
	}
	checkFile(t, res, content)

	res, err = f.Fetch(t.Context(), img, Checksum{ListURL: srv.URL + "/images/SHA512SUMS"})
	if err != nil || res.Checksum != sha512Of(content) {
		t.Fatalf("Fetch with SHA512SUMS = %+v, %v", res, err)
	}

	_, err = f.Fetch(t.Context(), srv.URL+"/images/missing.qcow2", Checksum{ListURL: srv.URL + "/images/SHA256SUMS"})
	want := "SHA256SUMS at " + srv.URL + `/images/SHA256SUMS has no entry for "missing.qcow2"`
	if err == nil || err.Error() != want || !errors.Is(err, ErrNoEntry) {
		t.Errorf("error\n got %v\nwant %s", err, want)
	}

	_, err = f.Fetch(t.Context(), img, Checksum{ListURL: srv.URL + "/images/NOSUMS"})
	want = "download checksum list " + srv.URL + "/images/NOSUMS: HTTP 404 Not Found"
	if err == nil || err.Error() != want {
		t.Errorf("error\n got %v\nwant %s", err, want)
	}

	// Offline, the saved list still resolves the checksum, and the image is cached.
	srv.Close()
	res, err = f.Fetch(t.Context(), img, Checksum{ListURL: srv.URL + "/images/SHA256SUMS"})
	if err != nil || !res.Cached || res.Checksum != sum {
		t.Fatalf("offline Fetch = %+v, %v; want the cached copy", res, err)
	}
	// A list never fetched cannot be resolved offline; the error says why.
	_, err = f.Fetch(t.Context(), img, Checksum{ListURL: srv.URL + "/other/SHA256SUMS"})
	want = "download checksum list " + srv.URL + "/other/SHA256SUMS: connection refused"
	if err == nil || err.Error() != want {
		t.Errorf("error\n got %v\nwant %s", err, want)
	}
}

func fileURL(p string) string { return (&url.URL{Scheme: "file", Path: p}).String() }

func TestFetchFileURL(t *testing.T) {
	src := t.TempDir()
	img := filepath.Join(src, "disk image.qcow2")
	if err := os.WriteFile(img, content, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256Of(content)
	list := filepath.Join(src, "SHA256SUMS")
	if err := os.WriteFile(list, []byte(sum.Hex+"  disk image.qcow2\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, c := range []Checksum{sum, {ListURL: fileURL(list)}} {
		dir := t.TempDir()
		res, err := (&Fetcher{CacheDir: dir}).Fetch(t.Context(), fileURL(img), c)
		if err != nil {
			t.Fatalf("Fetch with %v: %v", c, err)
		}
		if res.Checksum != sum || res.Cached {
			t.Fatalf("Fetch = %+v", res)
		}
		checkFile(t, res, content)
	}

	dir := t.TempDir()
	wrong := sha256Of(nil)
	_, err := (&Fetcher{CacheDir: dir}).Fetch(t.Context(), fileURL(img), wrong)
	want := fmt.Sprintf("checksum mismatch for %s: expected %s, got %s", fileURL(img), wrong, sum)
	if err == nil || err.Error() != want {
		t.Fatalf("error\n got %v\nwant %s", err, want)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("cache holds %v after a mismatch", got)
	}
}

// hang serves the first part of content, then hangs until the client goes
// away or the test ends.
func hang(t *testing.T, sent chan<- struct{}) *httptest.Server {
	release := make(chan struct{})
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(content)))
		w.Write(content[:len(content)/3])
		w.(http.Flusher).Flush()
		if sent != nil {
			sent <- struct{}{}
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	return srv
}

func TestFetchStall(t *testing.T) {
	srv := hang(t, nil)
	dir := t.TempDir()
	f := &Fetcher{CacheDir: dir, stallTimeout: 200 * time.Millisecond}
	start := time.Now()
	_, err := f.Fetch(t.Context(), srv.URL+"/disk.qcow2", sha256Of(content))
	want := "download " + srv.URL + "/disk.qcow2: stalled: no data received for 200ms"
	if err == nil || err.Error() != want {
		t.Fatalf("error\n got %v\nwant %s", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stall detected after %v", d)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("cache holds %v after a stall", got)
	}
}

func TestFetchCancel(t *testing.T) {
	sent := make(chan struct{}, 1)
	srv := hang(t, sent)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-sent
		time.Sleep(50 * time.Millisecond) // let the client write some of it
		cancel()
	}()
	_, err := (&Fetcher{CacheDir: dir}).Fetch(ctx, srv.URL+"/disk.qcow2", sha256Of(content))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v; want one matching context.Canceled", err)
	}
	if want := "download " + srv.URL + "/disk.qcow2: context canceled"; err.Error() != want {
		t.Errorf("error\n got %v\nwant %s", err, want)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("cache holds %v after cancel", got)
	}
}

func TestFetchConcurrent(t *testing.T) {
	fs := &files{m: map[string][]byte{"/disk.qcow2": content}}
	srv := serve(t, fs)
	dir := t.TempDir()
	f := &Fetcher{CacheDir: dir}
	sum := sha256Of(content)
	const n = 8
	results := make([]Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = f.Fetch(t.Context(), srv.URL+"/disk.qcow2", sum) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Fetch %d: %v", i, errs[i])
		}
		checkFile(t, results[i], content)
	}
	if got := entries(t, dir); !slices.Equal(got, []string{"sha256-" + sum.Hex}) {
		t.Errorf("cache holds %v", got)
	}
}

func TestFetchDamagedCache(t *testing.T) {
	fs := &files{m: map[string][]byte{"/disk.qcow2": content}}
	srv := serve(t, fs)
	dir := t.TempDir()
	sum := sha256Of(content)
	url := srv.URL + "/disk.qcow2"
	res, err := (&Fetcher{CacheDir: dir}).Fetch(t.Context(), url, sum)
	if err != nil {
		t.Fatal(err)
	}
	damage := func(data []byte) {
		t.Helper()
		if err := os.Chmod(res.Path, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(res.Path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name       string
		data       []byte
		verify     bool
		wantCached bool
	}{
		{"empty file is refetched", nil, false, false},
		{"same-size damage is trusted by name without Verify", bytes.ToUpper(content), false, true},
		{"Verify refetches damage", bytes.ToUpper(content), true, false},
		{"Verify accepts a good copy", content, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			damage(tt.data)
			got, err := (&Fetcher{CacheDir: dir, Verify: tt.verify}).Fetch(t.Context(), url, sum)
			if err != nil {
				t.Fatal(err)
			}
			if got.Cached != tt.wantCached {
				t.Errorf("Cached = %v, want %v", got.Cached, tt.wantCached)
			}
			if !tt.wantCached {
				checkFile(t, got, content)
			}
		})
	}
}

func TestFetchKeepsContentEncoding(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(content)
	zw.Close()
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A misconfigured server labelling a .gz file as gzip-encoded: the
		// checksum is of the .gz file, so it must be stored as sent.
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(gz.Bytes())
	}))
	res, err := (&Fetcher{CacheDir: t.TempDir()}).Fetch(t.Context(), srv.URL+"/disk.qcow2.gz", sha256Of(gz.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, res, gz.Bytes())
}

func TestFetchRemovesStaleTmp(t *testing.T) {
	srv := serve(t, &files{m: map[string][]byte{"/disk.qcow2": content}})
	dir := t.TempDir()
	old, fresh := filepath.Join(dir, "tmp-old"), filepath.Join(dir, "tmp-fresh")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-2 * staleTmpAge)
	if err := os.Chtimes(old, long, long); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Fetcher{CacheDir: dir}).Fetch(t.Context(), srv.URL+"/disk.qcow2", sha256Of(content)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("stale %s was kept", old)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh tmp file (maybe another process's download) was removed: %v", err)
	}
}

// TestDiscard: a download its user refuses leaves the cache; nothing
// outside the cache folder can be removed through it.
func TestDiscard(t *testing.T) {
	dir := t.TempDir()
	f := &Fetcher{CacheDir: dir}
	in := filepath.Join(dir, "sha256-"+strings.Repeat("a", 64))
	out := filepath.Join(t.TempDir(), "sha256-"+strings.Repeat("a", 64))
	for _, p := range []string{in, out} {
		if err := os.WriteFile(p, []byte("x"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Discard(Result{Path: in}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(in); !os.IsNotExist(err) {
		t.Errorf("the discarded download is still there: %v", err)
	}
	if err := f.Discard(Result{Path: out}); err == nil {
		t.Error("Discard removed a file outside its cache")
	}
	if _, err := os.Stat(out); err != nil {
		t.Errorf("a file outside the cache is gone: %v", err)
	}
}
