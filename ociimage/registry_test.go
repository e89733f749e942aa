package ociimage

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/testregistry"
)

// These tests push to and pull from a real registry (Debian's
// docker-registry), with small real qcow2 images made by qemu-img.

const testChunk = 1 << 20 // so the 4 MiB base goes in several layers

// chainStore is a store holding debian:12 (4 MiB of random data),
// hello:1.0.0 on it and hello:1.1.0 on hello:1.0.0, each overlay changing
// 256 KiB, as kiln build leaves them. Each call makes other images.
func chainStore(t *testing.T) *images.Store {
	t.Helper()
	s, err := images.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4<<20)
	rand.Read(data)
	base := addImage(t, s, "debian:12", data, nil)
	v1 := addImage(t, s, "hello:1.0.0", data, &base)
	v2 := addImage(t, s, "hello:1.1.0", data, &v1)
	if err := s.Tag(v2.Ref(), "stable"); err != nil {
		t.Fatal(err)
	}
	return s
}

func addImage(t *testing.T, s *images.Store, ref string, data []byte, base *images.Manifest) images.Manifest {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	r, _ := images.ParseRef(ref)
	m := images.Manifest{Name: r.Name, Version: r.Version, Base: images.BaseInfo{Source: "test"}, KilnVersion: "test",
		TemplateDigest: "sha256:" + strings.Repeat("ab", 32)}
	q := filepath.Join(dir, "img.qcow2")
	if base == nil {
		raw := filepath.Join(dir, "data.raw")
		if err := os.WriteFile(raw, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := disk.Convert(ctx, raw, q, disk.ConvertOptions{}); err != nil {
			t.Fatal(err)
		}
	} else {
		// An overlay changing 256 KiB, as a build's compaction leaves it.
		if err := disk.CreateOverlay(ctx, s.BlobPath(base.Digest), base.Format, q, 0); err != nil {
			t.Fatal(err)
		}
		off := int64(len(data) / 2)
		if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c",
			fmt.Sprintf("write -P %d %d 256k", ref[len(ref)-3], off), q).CombinedOutput(); err != nil {
			t.Fatalf("qemu-io: %v\n%s", err, out)
		}
		if err := disk.Rebase(ctx, q, strings.TrimPrefix(base.Digest, "sha256:"), base.Format); err != nil {
			t.Fatal(err)
		}
		m.BackingDigest = base.Digest
		m.Parent = &images.Parent{Ref: base.Ref().String(), Digest: base.Digest}
		m.Base = images.BaseInfo{Source: "image:" + base.Ref().String(), Checksum: base.Digest}
	}
	got, err := s.Add(ctx, m, q, images.AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func emptyStore(t *testing.T) *images.Store {
	t.Helper()
	s, err := images.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// counter is a transport that counts layer bytes fetched (GETs of blobs
// other than the small config) and can break one upload.
type counter struct {
	base       http.RoundTripper
	blobGets   atomic.Int64
	blobBytes  atomic.Int64
	breakAfter int64 // > 0: the third blob upload fails after this many bytes
	uploads    atomic.Int64
	broke      atomic.Bool
}

func (c *counter) RoundTrip(req *http.Request) (*http.Response, error) {
	if c.breakAfter > 0 && req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/blobs/uploads/") &&
		c.uploads.Add(1) == 3 && req.ContentLength > c.breakAfter && c.broke.CompareAndSwap(false, true) {
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(&failingReader{r: req.Body, left: c.breakAfter})
	}
	resp, err := c.base.RoundTrip(req)
	if err == nil && req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") && resp.ContentLength > 4096 {
		c.blobGets.Add(1)
		c.blobBytes.Add(resp.ContentLength)
	}
	return resp, err
}

type failingReader struct {
	r    io.Reader
	left int64
}

var errCut = errors.New("connection cut by the test")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.left <= 0 {
		return 0, errCut
	}
	if int64(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.left -= int64(n)
	return n, err
}

func ref(t *testing.T, s string) Reference {
	t.Helper()
	r, err := ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustRef(s string) images.Ref {
	r, err := images.ParseRef(s)
	if err != nil {
		panic(err)
	}
	return r
}

func TestPushPullKeepsRefsDigestsLineageAndChannels(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	ctx := context.Background()
	a := chainStore(t)
	o := Options{ChunkSize: testChunk}
	pushed, err := Push(ctx, a, mustRef("hello@stable"), ref(t, reg.Host+"/kiln/hello"), []string{"stable"}, o)
	if err != nil {
		t.Fatal(err)
	}
	if pushed.Image != "hello:1.1.0" || pushed.LayersSent != pushed.Layers || pushed.Layers < 6 {
		t.Fatalf("push: %+v", pushed)
	}
	if got := strings.Join(pushed.Chain, " "); got != "debian:12 hello:1.0.0 hello:1.1.0" {
		t.Fatalf("chain %s", got)
	}
	again, err := Push(ctx, a, mustRef("hello:1.1.0"), ref(t, reg.Host+"/kiln/hello"), nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if again.LayersSent != 0 || again.BytesSent != 0 || again.Digest != pushed.Digest {
		t.Fatalf("a second push sent %d layers (%d bytes), digest %s vs %s", again.LayersSent, again.BytesSent, again.Digest, pushed.Digest)
	}

	b := emptyStore(t)
	c := &counter{base: http.DefaultTransport}
	po := Options{Transport: c}
	pulled, err := Pull(ctx, b, ref(t, reg.Host+"/kiln/hello:stable"), PullOptions{}, po)
	if err != nil {
		t.Fatal(err)
	}
	if pulled.Digest != pushed.Digest || pulled.Image != "hello:1.1.0" || pulled.Channel != "stable" || pulled.BlobsFetched != 3 {
		t.Fatalf("pull: %+v", pulled)
	}
	for _, r := range []string{"debian:12", "hello:1.0.0", "hello:1.1.0"} {
		ma, err := a.Get(mustRef(r))
		if err != nil {
			t.Fatal(err)
		}
		mb, err := b.Get(mustRef(r))
		if err != nil {
			t.Fatalf("%s not pulled: %v", r, err)
		}
		if ma.Digest != mb.Digest || ma.BackingDigest != mb.BackingDigest || ma.VirtualSize != mb.VirtualSize ||
			ma.FileSize != mb.FileSize || ma.TemplateDigest != mb.TemplateDigest || !ma.BuildEnd.Equal(mb.BuildEnd) ||
			(ma.Parent == nil) != (mb.Parent == nil) || (ma.Parent != nil && *ma.Parent != *mb.Parent) {
			t.Errorf("%s differs after the round trip:\n%+v\n%+v", r, ma, mb)
		}
		if d, err := images.FileDigest(b.BlobPath(mb.Digest)); err != nil || d != mb.Digest {
			t.Errorf("%s: pulled blob has digest %s (%v)", r, d, err)
		}
	}
	if got, want := treeString(t, b), treeString(t, a); got != want {
		t.Errorf("lineage differs:\n%s\nwant\n%s", got, want)
	}
	if m, err := b.Resolve(mustRef("hello@stable")); err != nil || m.Version != "1.1.0" {
		t.Errorf("hello@stable here: %v %v", m.Version, err)
	}
	if err := b.Verify(ctx, mustRef("hello:1.1.0")); err != nil {
		t.Errorf("verify after pull: %v", err)
	}

	// Later uses of the reference it was pulled by, or of its digest, find
	// it without the registry; other tags and repositories do not.
	for s, want := range map[string]bool{
		reg.Host + "/kiln/hello:stable": true, reg.Host + "/kiln/hello@" + pushed.Digest: true,
		reg.Host + "/kiln/hello:1.1.0": false, reg.Host + "/kiln/hellox:stable": false, reg.Host + "/kiln/hellox@" + pushed.Digest: false,
	} {
		if m, ok := Local(b, ref(t, s)); ok != want || (ok && m.Ref().String() != "hello:1.1.0") {
			t.Errorf("Local(%s) = %s, %v", s, m.Ref(), ok)
		}
	}
	if m, _ := b.Get(mustRef("hello:1.0.0")); m.Labels[LabelPulledFrom] != "" {
		t.Errorf("an ancestor records a pull: %v", m.Labels)
	}

	fetched := c.blobGets.Load()
	second, err := Pull(ctx, b, ref(t, reg.Host+"/kiln/hello:1.1.0"), PullOptions{}, po)
	if err != nil {
		t.Fatal(err)
	}
	if second.BlobsFetched != 0 || second.BytesFetched != 0 || len(second.Stored) != 0 || c.blobGets.Load() != fetched {
		t.Errorf("a second pull moved blobs: %+v, %d layer GETs", second, c.blobGets.Load()-fetched)
	}
	byDigest, err := Pull(ctx, b, ref(t, reg.Host+"/kiln/hello@"+pushed.Digest), PullOptions{}, po)
	if err != nil || byDigest.BytesFetched != 0 || byDigest.Image != "hello:1.1.0" {
		t.Errorf("pull by digest: %+v %v", byDigest, err)
	}
}

func treeString(t *testing.T, s *images.Store) string {
	t.Helper()
	roots, err := s.Tree()
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	var walk func(n *images.Node, indent string)
	walk = func(n *images.Node, indent string) {
		sb.WriteString(indent + n.Ref().String() + " " + n.Digest + "\n")
		for _, c := range n.Children {
			walk(c, indent+"  ")
		}
	}
	for _, r := range roots {
		walk(r, "")
	}
	return sb.String()
}

func TestPullWithBasePresentMovesOnlyTheTopLayers(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	ctx := context.Background()
	a := chainStore(t)
	o := Options{ChunkSize: testChunk}
	for _, r := range []string{"hello:1.0.0", "hello:1.1.0"} {
		if _, err := Push(ctx, a, mustRef(r), ref(t, reg.Host+"/hello"), nil, o); err != nil {
			t.Fatal(err)
		}
	}
	b := emptyStore(t)
	c := &counter{base: http.DefaultTransport}
	if _, err := Pull(ctx, b, ref(t, reg.Host+"/hello:1.0.0"), PullOptions{}, Options{Transport: c}); err != nil {
		t.Fatal(err)
	}
	before := c.blobBytes.Load()
	res, err := Pull(ctx, b, ref(t, reg.Host+"/hello:1.1.0"), PullOptions{}, Options{Transport: c})
	if err != nil {
		t.Fatal(err)
	}
	top, _ := a.Get(mustRef("hello:1.1.0"))
	if res.BlobsFetched != 1 || res.BytesFetched != top.FileSize || c.blobBytes.Load()-before != top.FileSize {
		t.Errorf("pull with the base present fetched %d blobs, %d bytes (%d on the wire); want 1 blob of %d bytes",
			res.BlobsFetched, res.BytesFetched, c.blobBytes.Load()-before, top.FileSize)
	}
	if res.BytesTotal <= 4*top.FileSize {
		t.Errorf("the chain (%d bytes) should dwarf the top layer (%d)", res.BytesTotal, top.FileSize)
	}
}

func TestPullCatchesATamperedBlobAndStoresNothing(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	ctx := context.Background()
	a := chainStore(t)
	if _, err := Push(ctx, a, mustRef("hello:1.1.0"), ref(t, reg.Host+"/hello"), nil, Options{ChunkSize: testChunk}); err != nil {
		t.Fatal(err)
	}
	// Damage the middle of the top image's only layer in the registry's
	// own storage; the registry serves it as it is.
	top, _ := a.Get(mustRef("hello:1.1.0"))
	layerDigest, err := images.FileDigest(a.BlobPath(top.Digest)) // one chunk: the layer is the blob
	if err != nil {
		t.Fatal(err)
	}
	if top.FileSize > testChunk {
		t.Fatalf("top blob %d bytes is more than one chunk", top.FileSize)
	}
	f, err := os.OpenFile(reg.BlobFile(layerDigest), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tampered"), top.FileSize/2); err != nil {
		t.Fatal(err)
	}
	f.Close()

	b := emptyStore(t)
	_, err = Pull(ctx, b, ref(t, reg.Host+"/hello:1.1.0"), PullOptions{}, Options{})
	if err == nil || !strings.Contains(err.Error(), "tampered") {
		t.Fatalf("pull of a tampered blob: %v", err)
	}
	assertEmpty(t, b)
}

// assertEmpty checks that a store holds no image, blob or leftover.
func assertEmpty(t *testing.T, s *images.Store) {
	t.Helper()
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("the store holds %d images", len(list))
	}
	for _, d := range []string{"blobs/sha256", "tmp"} {
		if entries, _ := os.ReadDir(filepath.Join(s.Root, d)); len(entries) != 0 {
			t.Errorf("%s holds %d entries, e.g. %s", d, len(entries), entries[0].Name())
		}
	}
}

func TestInterruptedPushIsCompletedByARetry(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	ctx := context.Background()
	a := chainStore(t)
	dst := ref(t, reg.Host+"/hello")
	c := &counter{base: http.DefaultTransport, breakAfter: 600 << 10}
	_, err := Push(ctx, a, mustRef("hello:1.1.0"), dst, nil, Options{ChunkSize: testChunk, Transport: c})
	if err == nil || !c.broke.Load() {
		t.Fatalf("the cut push: %v (cut: %v)", err, c.broke.Load())
	}
	if _, err := Pull(ctx, emptyStore(t), ref(t, reg.Host+"/hello:1.1.0"), PullOptions{}, Options{}); err == nil {
		t.Fatal("an interrupted push left a pullable image")
	}
	res, err := Push(ctx, a, mustRef("hello:1.1.0"), dst, nil, Options{ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	if res.LayersSent == 0 || res.LayersSent > res.Layers-2 {
		t.Errorf("the retry sent %d of %d layers; want the two uploaded before the cut skipped", res.LayersSent, res.Layers)
	}
	b := emptyStore(t)
	if _, err := Pull(ctx, b, ref(t, reg.Host+"/hello:1.1.0"), PullOptions{}, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Verify(ctx, mustRef("hello:1.1.0")); err != nil {
		t.Fatal(err)
	}
}

func TestHtpasswdAuth(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{User: "ci", Password: "s3cret-pw"})
	ctx := context.Background()
	a := chainStore(t)
	dst := ref(t, reg.Host+"/hello")
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no docker login of the machine's user
	good := Options{ChunkSize: testChunk, Username: "ci", Password: "s3cret-pw"}
	if _, err := Push(ctx, a, mustRef("hello:1.0.0"), dst, nil, good); err != nil {
		t.Fatal(err)
	}
	_, err := Push(ctx, a, mustRef("hello:1.0.0"), dst, nil, Options{Username: "ci", Password: "wrong"})
	if err == nil || !strings.Contains(err.Error(), "401 unauthorized") || !strings.Contains(err.Error(), "check the username and password") ||
		strings.Contains(err.Error(), "wrong") {
		t.Errorf("wrong password: %v", err)
	}
	b := emptyStore(t)
	if _, err := Pull(ctx, b, ref(t, reg.Host+"/hello:1.0.0"), PullOptions{}, Options{}); err == nil || !strings.Contains(err.Error(), "needs a login") {
		t.Errorf("pull without credentials: %v", err)
	}
	assertEmpty(t, b)
	if _, err := Pull(ctx, b, ref(t, reg.Host+"/hello:1.0.0"), PullOptions{}, good); err != nil {
		t.Fatal(err)
	}

	// Credentials from a docker config file, as `docker login` writes it.
	cfg := t.TempDir()
	authJSON := `{"auths":{"` + reg.Host + `":{"auth":"Y2k6czNjcmV0LXB3"}}}` // ci:s3cret-pw
	if err := os.WriteFile(filepath.Join(cfg, "config.json"), []byte(authJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", cfg)
	if _, err := Pull(ctx, emptyStore(t), ref(t, reg.Host+"/hello:1.0.0"), PullOptions{}, Options{}); err != nil {
		t.Errorf("pull with docker config credentials: %v", err)
	}

	// A credential helper named by credHelpers, speaking the
	// docker-credential-helpers protocol (get: server on stdin, JSON out).
	bin := t.TempDir()
	helper := "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"ci\",\"Secret\":\"s3cret-pw\"}' \"$server\"\n"
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-kilntest"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	helperJSON := `{"credHelpers":{"` + reg.Host + `":"kilntest"}}`
	if err := os.WriteFile(filepath.Join(cfg, "config.json"), []byte(helperJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Pull(ctx, emptyStore(t), ref(t, reg.Host+"/hello:1.0.0"), PullOptions{}, Options{}); err != nil {
		t.Errorf("pull with a credential helper: %v", err)
	}
}

func TestRevocationTravels(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	ctx := context.Background()
	a := chainStore(t)
	if err := a.Revoke(mustRef("hello:1.1.0"), "CVE-2026-0001 in openssl"); err != nil {
		t.Fatal(err)
	}
	res, err := Push(ctx, a, mustRef("hello:1.1.0"), ref(t, reg.Host+"/hello"), nil, Options{ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	if res.Revoked == "" {
		t.Fatal("the revocation was not published")
	}
	b := emptyStore(t)
	pulled, err := Pull(ctx, b, ref(t, reg.Host+"/hello:1.1.0"), PullOptions{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(pulled.Revoked, "CVE-2026-0001") {
		t.Errorf("pull did not see the revocation: %+v", pulled)
	}
	m, _ := b.Get(mustRef("hello:1.1.0"))
	if err := b.CheckUsable(m, false); !errors.Is(err, images.ErrRevoked) || !strings.Contains(err.Error(), "CVE-2026-0001") {
		t.Errorf("a pulled revoked image is usable: %v", err)
	}
	base, _ := b.Get(mustRef("hello:1.0.0"))
	if err := b.CheckUsable(base, false); err != nil {
		t.Errorf("the revocation spread to the parent: %v", err)
	}

	// Unrevoked and pushed again: the registry's revocation is withdrawn.
	if err := a.Unrevoke(mustRef("hello:1.1.0")); err != nil {
		t.Fatal(err)
	}
	res, err = Push(ctx, a, mustRef("hello:1.1.0"), ref(t, reg.Host+"/hello"), nil, Options{ChunkSize: testChunk})
	if err != nil || !res.Unrevoked || res.Warning != "" || res.LayersSent != 0 {
		t.Fatalf("push after unrevoke: %+v %v", res, err)
	}
	c := emptyStore(t)
	if pulled, err := Pull(ctx, c, ref(t, reg.Host+"/hello:1.1.0"), PullOptions{}, Options{}); err != nil || pulled.Revoked != "" {
		t.Errorf("pull after the revocation was withdrawn: %+v %v", pulled, err)
	}
}

// TestInterruptedPullLeavesTheStoreAsItWas: a pull cancelled mid-blob
// stores nothing and leaves nothing in tmp/.
func TestInterruptedPullLeavesTheStoreAsItWas(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	a := chainStore(t)
	if _, err := Push(context.Background(), a, mustRef("hello:1.1.0"), ref(t, reg.Host+"/hello"), nil, Options{ChunkSize: testChunk}); err != nil {
		t.Fatal(err)
	}
	b := emptyStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := Options{Progress: func(done, total int64) {
		if done > total/2 {
			cancel()
		}
	}}
	if _, err := Pull(ctx, b, ref(t, reg.Host+"/hello:1.1.0"), PullOptions{}, o); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull: %v", err)
	}
	assertEmpty(t, b)
}

func TestPullRefusesToReplaceADifferentImage(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	ctx := context.Background()
	a := chainStore(t)
	if _, err := Push(ctx, a, mustRef("hello:1.0.0"), ref(t, reg.Host+"/hello"), nil, Options{}); err != nil {
		t.Fatal(err)
	}
	// b has its own debian:12 and hello:1.0.0, other images under the same refs.
	b := chainStore(t)
	before := treeString(t, b)
	_, err := Pull(ctx, b, ref(t, reg.Host+"/hello:1.0.0"), PullOptions{}, Options{})
	if err == nil || !strings.Contains(err.Error(), "it is stored here as a different image") {
		t.Fatalf("pull over a different hello:1.0.0: %v", err)
	}
	if after := treeString(t, b); after != before {
		t.Errorf("a refused pull changed the store:\n%s\nwas\n%s", after, before)
	}
	// Under another version it goes in, and its base, whose ref is taken
	// here, is kept beside the local debian:12.
	res, err := Pull(ctx, b, ref(t, reg.Host+"/hello:1.0.0"), PullOptions{Version: "1.0.0-ci"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := a.Get(mustRef("debian:12"))
	want := "debian:12+" + strings.TrimPrefix(orig.Digest, "sha256:")[:12]
	if res.Image != "hello:1.0.0-ci" || len(res.Stored) != 2 || res.Stored[0] != want {
		t.Errorf("pull under another version: %+v (want %s stored)", res, want)
	}
	if err := b.Verify(ctx, mustRef("hello:1.0.0-ci")); err != nil {
		t.Error(err)
	}
}

// TestConcurrentPullsOfOneImage: two pulls at once both succeed, and the
// store ends with one copy.
func TestConcurrentPullsOfOneImage(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	ctx := context.Background()
	a := chainStore(t)
	if _, err := Push(ctx, a, mustRef("hello:1.0.0"), ref(t, reg.Host+"/hello"), nil, Options{}); err != nil {
		t.Fatal(err)
	}
	b := emptyStore(t)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Pull(ctx, b, ref(t, reg.Host+"/hello:1.0.0"), PullOptions{}, Options{})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if list, _ := b.List(); len(list) != 2 {
		t.Errorf("after two concurrent pulls: %d images", len(list))
	}
	if err := b.Verify(ctx, mustRef("hello:1.0.0")); err != nil {
		t.Error(err)
	}
}

// TestRawImageStaysSparse: a raw image (as kiln images import stores one)
// arrives byte-identical and with its holes.
func TestRawImageStaysSparse(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	ctx := context.Background()
	a := emptyStore(t)
	raw := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("boot sector"), 0)
	f.WriteAt([]byte("data"), 40<<20)
	f.Truncate(64 << 20)
	f.Close()
	m, err := a.Add(ctx, images.Manifest{Name: "disk", Version: "1", KilnVersion: "test"}, raw, images.AddOptions{KeepSource: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Push(ctx, a, m.Ref(), ref(t, reg.Host+"/disk"), nil, Options{ChunkSize: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	b := emptyStore(t)
	if _, err := Pull(ctx, b, ref(t, reg.Host+"/disk:1"), PullOptions{}, Options{}); err != nil {
		t.Fatal(err)
	}
	got, err := b.Get(m.Ref())
	if err != nil || got.Digest != m.Digest || got.Format != "raw" || got.VirtualSize != 64<<20 {
		t.Fatalf("pulled raw image: %+v %v", got, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(b.BlobPath(got.Digest), &st); err != nil || st.Blocks*512 > 1<<20 {
		t.Errorf("the pulled 64 MiB raw image takes %d bytes on disk (%v)", st.Blocks*512, err)
	}
}

// TestHostFileImagesNeverTravel: a qcow2 whose data lives in an external
// data file (here a host file it names) would have QEMU read that file
// when it boots. The store refuses to take it in, so it can never be
// pushed; a pull runs the same gate (disk.Admit) on every blob it fetches
// before the store sees it.
func TestHostFileImagesNeverTravel(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	secret := filepath.Join(dir, "host-secret")
	os.WriteFile(secret, []byte("not for images"), 0o600)
	img := filepath.Join(dir, "hostile.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+secret+",data_file_raw=on", img, "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	a := emptyStore(t)
	_, err := a.Add(ctx, images.Manifest{Name: "hostile", Version: "1", KilnVersion: "test"}, img, images.AddOptions{KeepSource: true})
	if err == nil || !strings.Contains(err.Error(), "data file") {
		t.Fatalf("the store took an image with an external data file: %v", err)
	}
	assertEmpty(t, a)
	if _, err := disk.Admit(ctx, img, disk.AdmitOptions{BlobDir: images.BlobDir(a.Root), Staged: true}); err == nil || !strings.Contains(err.Error(), "data file") {
		t.Errorf("the gate a pull runs on a fetched blob took it: %v", err)
	}
}
