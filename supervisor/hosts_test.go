package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/libvirthost"
)

// fakeSite is a libvirt host for the host launcher's decisions: it keeps
// the layers uploaded to it and the instances started on it, and can be
// made unreachable.
type fakeSite struct {
	name string
	t    *testing.T

	mu        sync.Mutex
	down      error // unreachable when set
	layers    map[string]bool
	uploads   []string // digests, in upload order
	inUpload  atomic.Int32
	overlap   bool // two EnsureChain calls ran at once
	running   map[string]*fakeRemote
	removed   []string
	keepSeen  []map[string]bool
	uploadLag time.Duration
}

func newFakeSite(t *testing.T, name string) *fakeSite {
	return &fakeSite{name: name, t: t, layers: map[string]bool{}, running: map[string]*fakeRemote{}}
}

func (f *fakeSite) Name() string { return f.name }

func (f *fakeSite) Candidate(ctx context.Context, fleet string) libvirthost.Candidate {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := libvirthost.Candidate{Name: f.name, FreeMemory: 8 << 30, Err: f.down}
	for _, r := range f.running {
		c.Total++
		if strings.HasPrefix(r.id, fleet+"-") {
			c.Fleet++
		}
	}
	return c
}

func (f *fakeSite) EnsureChain(ctx context.Context, chain []libvirthost.Layer) (libvirthost.Transfer, error) {
	if f.inUpload.Add(1) > 1 {
		f.mu.Lock()
		f.overlap = true
		f.mu.Unlock()
	}
	defer f.inUpload.Add(-1)
	time.Sleep(f.uploadLag)
	f.mu.Lock()
	defer f.mu.Unlock()
	var t libvirthost.Transfer
	if f.down != nil {
		return t, f.down
	}
	for _, l := range chain {
		if f.layers[l.Digest] {
			t.Reused = append(t.Reused, l.Digest)
			continue
		}
		f.layers[l.Digest] = true
		f.uploads = append(f.uploads, l.Digest)
		t.Uploaded = append(t.Uploaded, l.Digest)
		t.BytesSent += l.Size
	}
	return t, nil
}

func (f *fakeSite) Launch(ctx context.Context, o libvirthost.LaunchOptions) (member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return nil, f.down
	}
	top := o.Chain[len(o.Chain)-1].Digest
	if !f.layers[top] {
		f.t.Errorf("instance %s launched on %s before its layer %s was there", o.ID, f.name, top)
	}
	r := &fakeRemote{id: o.ID, version: o.Version, site: f, done: make(chan struct{})}
	f.running[o.ID] = r
	return r, nil
}

func (f *fakeSite) Adopt(ctx context.Context, rec InstanceRecord) (member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return nil, f.down
	}
	r, ok := f.running[rec.ID]
	if !ok {
		return nil, fmt.Errorf("host %s: domain %s: no such domain", f.name, libvirthost.DomainName(rec.ID))
	}
	return r, nil
}

func (f *fakeSite) RemoveFleet(ctx context.Context, fleet string, keep map[string]bool) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keepSeen = append(f.keepSeen, keep)
	if f.down != nil {
		return nil, f.down
	}
	var out []string
	for id := range f.running {
		if strings.HasPrefix(id, fleet+"-") && !keep[id] {
			delete(f.running, id)
			out = append(out, id)
		}
	}
	slices.Sort(out)
	f.removed = append(f.removed, out...)
	return out, nil
}

// loseHost makes the host unreachable: its instances fail, as a real
// Domain's Done closes when its connection is lost.
func (f *fakeSite) loseHost() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = fmt.Errorf("host %s (qemu+tcp://%s/system): unreachable: connection refused", f.name, f.name)
	for _, r := range f.running {
		r.once.Do(func() { close(r.done) })
	}
}

func (f *fakeSite) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.running {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

type fakeRemote struct {
	id, version string
	site        *fakeSite
	once        sync.Once
	done        chan struct{}
}

func (r *fakeRemote) ID() string                                { return r.id }
func (r *fakeRemote) Version() string                           { return r.version }
func (r *fakeRemote) Addr(g int) string                         { return fmt.Sprintf("%s:%d", r.site.name, g) }
func (r *fakeRemote) Done() <-chan struct{}                     { return r.done }
func (r *fakeRemote) Exec(context.Context, string) (int, error) { return 0, nil }
func (r *fakeRemote) record(guests []int) InstanceRecord {
	return InstanceRecord{ID: r.id, Version: r.version, Host: r.site.name}
}
func (r *fakeRemote) remove() error {
	r.once.Do(func() { close(r.done) })
	r.site.mu.Lock()
	defer r.site.mu.Unlock()
	if r.site.down != nil {
		return r.site.down
	}
	delete(r.site.running, r.id)
	return nil
}

// layeredStore is a real store with web:1 on a base and web:2 on web:1.
func layeredStore(t *testing.T) *images.Store {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed")
	}
	store, err := images.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var prev *images.Manifest
	for _, v := range []string{"0", "1", "2"} {
		p := filepath.Join(t.TempDir(), "img.qcow2")
		args := []string{"create", "-q", "-f", "qcow2"}
		m := images.Manifest{Name: "web", Version: v, Base: images.BaseInfo{Source: "test"}, KilnVersion: "test", BuildStart: time.Now()}
		if prev != nil {
			args = append(args, "-u", "-b", strings.TrimPrefix(prev.Digest, "sha256:"), "-F", prev.Format)
			m.BackingDigest = prev.Digest
			m.Parent = &images.Parent{Ref: prev.Ref().String(), Digest: prev.Digest}
		}
		if out, err := exec.Command("qemu-img", append(args, p, "1M")...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v: %s", err, out)
		}
		got, err := store.Add(context.Background(), m, p, images.AddOptions{})
		if err != nil {
			t.Fatal(err)
		}
		prev = &got
	}
	return store
}

func newTestHostLauncher(t *testing.T, store *images.Store, sites ...*fakeSite) *hostLauncher {
	var ss []site
	for _, s := range sites {
		ss = append(ss, s)
	}
	var n atomic.Int32
	spec := Spec{Name: "web", Count: 2, MemoryMiB: 512, Ports: []Port{{Host: 8080, Guest: 8080}}}
	return newHostLauncher(spec, Dirs{Root: t.TempDir()}, store, ss, context.Background(), t.Logf,
		func() int { return int(n.Add(1)) })
}

// TestHostLauncherSpreadsAndUploadsOnce: a fleet of two lands one instance
// on each host; every host gets each layer once, across concurrent
// launches and across versions that share the base, and no two uploads to
// one host overlap.
func TestHostLauncherSpreadsAndUploadsOnce(t *testing.T) {
	store := layeredStore(t)
	a, b := newFakeSite(t, "a"), newFakeSite(t, "b")
	a.uploadLag, b.uploadLag = 20*time.Millisecond, 20*time.Millisecond
	l := newTestHostLauncher(t, store, a, b)
	ms, err := l.Launch(context.Background(), "web:1", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || len(a.ids()) != 1 || len(b.ids()) != 1 {
		t.Fatalf("placed %v on a and %v on b, want one each", a.ids(), b.ids())
	}
	// Green of a rollout, four at once: two more per host, all racing for
	// the new top layer.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := l.Launch(context.Background(), "web:2", 2); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, s := range []*fakeSite{a, b} {
		if len(s.uploads) != 3 {
			t.Errorf("host %s got %d uploads %v, want each of the 3 layers once", s.name, len(s.uploads), s.uploads)
		}
		if s.overlap {
			t.Errorf("host %s: two EnsureChain calls ran at once", s.name)
		}
		if got := len(s.ids()); got != 3 {
			t.Errorf("host %s runs %d instances, want 3 (spread)", s.name, got)
		}
	}
	moved := l.Moved()
	if moved["a"] == 0 || moved["a"] != moved["b"] {
		t.Errorf("bytes moved per host: %v, want the same non-zero count on both", moved)
	}
}

// TestHostLauncherSkipsUnreachableHost: an unreachable host takes no new
// instances (the replacement lands on the other), and when no host is left
// the error names each host and why.
func TestHostLauncherSkipsUnreachableHost(t *testing.T) {
	store := layeredStore(t)
	a, b := newFakeSite(t, "a"), newFakeSite(t, "b")
	l := newTestHostLauncher(t, store, a, b)
	ms, err := l.Launch(context.Background(), "web:1", 2)
	if err != nil {
		t.Fatal(err)
	}
	var onB member
	for _, m := range ms {
		if m.(*fakeRemote).site == b {
			onB = m
		}
	}
	b.loseHost()
	select {
	case <-onB.Done():
	default:
		t.Fatal("an instance on the lost host is not done (failing)")
	}
	again, err := l.Launch(context.Background(), "web:1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if again[0].(*fakeRemote).site != a {
		t.Errorf("the replacement went to %s, want a (b is unreachable)", again[0].(*fakeRemote).site.name)
	}
	a.loseHost()
	_, err = l.Launch(context.Background(), "web:1", 1)
	if err == nil || !strings.Contains(err.Error(), "a: host a") || !strings.Contains(err.Error(), "b: host b") || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("launch with every host down: %v, want each host named as unreachable", err)
	}
}

// TestHostLauncherFailedBatchLeavesNothing: when one instance of a batch
// fails, the others are removed from their hosts.
func TestHostLauncherFailedBatchLeavesNothing(t *testing.T) {
	store := layeredStore(t)
	a, b := newFakeSite(t, "a"), &failingSite{newFakeSite(t, "b")}
	var n atomic.Int32
	l := newHostLauncher(Spec{Name: "web", Count: 2, MemoryMiB: 512}, Dirs{Root: t.TempDir()}, store,
		[]site{a, b}, context.Background(), t.Logf, func() int { return int(n.Add(1)) })
	_, err := l.Launch(context.Background(), "web:1", 2)
	if err == nil || !strings.Contains(err.Error(), "cannot run machine type") {
		t.Fatalf("Launch: %v, want the failing host's error", err)
	}
	if ids := a.ids(); len(ids) != 0 {
		t.Errorf("host a still runs %v after the batch failed", ids)
	}
}

type failingSite struct{ *fakeSite }

func (f *failingSite) Launch(ctx context.Context, o libvirthost.LaunchOptions) (member, error) {
	return nil, errors.New("host b (qemu+tcp://b/system): its QEMU (7.2.0) cannot run machine type q35 that the image needs (it offers pc)")
}

// TestHostLauncherAdoptAndReap: a restarted supervisor adopts a domain
// through the host its record names, and Reap removes the rest of the
// fleet from every host, keeping the adopted.
func TestHostLauncherAdoptAndReap(t *testing.T) {
	store := layeredStore(t)
	a, b := newFakeSite(t, "a"), newFakeSite(t, "b")
	l := newTestHostLauncher(t, store, a, b)
	ms, err := l.Launch(context.Background(), "web:1", 2)
	if err != nil {
		t.Fatal(err)
	}
	rec := ms[0].record(nil)
	if rec.Host == "" {
		t.Fatal("the record does not say which host the instance runs on")
	}
	// A new supervisor: a new launcher over the same hosts.
	l2 := newTestHostLauncher(t, store, a, b)
	m, err := l2.Adopt(context.Background(), rec)
	if err != nil || m.ID() != rec.ID {
		t.Fatalf("Adopt(%+v) = %v, %v", rec, m, err)
	}
	if _, err := l2.Adopt(context.Background(), InstanceRecord{ID: "web-9", Host: "c"}); err == nil || !strings.Contains(err.Error(), "host c is not one of the fleet's") {
		t.Errorf("Adopt on an unknown host: %v", err)
	}
	if _, err := l2.Adopt(context.Background(), InstanceRecord{ID: "web-9"}); err == nil {
		t.Error("Adopt of a record without a host succeeded")
	}
	l2.Reap(map[string]bool{rec.ID: true})
	all := append(a.ids(), b.ids()...)
	if len(all) != 1 || all[0] != rec.ID {
		t.Errorf("after Reap the hosts run %v, want only the adopted %s", all, rec.ID)
	}
	if len(a.keepSeen) != 1 || len(b.keepSeen) != 1 {
		t.Errorf("Reap asked a %d and b %d times, want each once", len(a.keepSeen), len(b.keepSeen))
	}
}
