package libvirthost

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/libvirttest"
	"github.com/kiln-dev/kiln/internal/smallfs"
)

// TestHostFailures runs on a host of its own, as it fills the host's pool
// and then kills its daemon: a pool without room for the image fails before
// a byte moves, naming the host; a host whose daemon dies ends its
// instances (Done closes, saying the connection was lost) and is then
// reported unreachable.
func TestHostFailures(t *testing.T) {
	realHosts(t) // the same prerequisites
	// The small filesystem must be mounted before the daemon starts: its
	// mount namespace is a copy of this one at that moment.
	small := smallfs.Mount(t, "2m")
	d, err := libvirttest.Start(t.TempDir(), "three", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	c := dial(t, d)

	full, err := c.EnsurePoolAt("kiln-small", small)
	if err != nil {
		t.Fatal(err)
	}
	img := smallfs.IncompressibleImage(t, 4<<20)
	digest, err := images.FileDigest(img)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(img)
	tr, err := full.EnsureChain(context.Background(), []Layer{{Digest: digest, Path: img, Format: "qcow2", Size: st.Size()}})
	if err == nil || !strings.Contains(err.Error(), "host three (") || !strings.Contains(err.Error(), "storage pool kiln-small has") {
		t.Fatalf("EnsureChain into a full pool: %v", err)
	}
	if tr.BytesSent != 0 {
		t.Errorf("%d bytes sent before the space check failed", tr.BytesSent)
	}

	_, pool, chain := uploaded(t, d)
	dom, err := c.StartDomain(context.Background(), pool, DomainOptions{Fleet: "lost", ID: "lost-1", Chain: chain, CPUs: 1, MemoryMiB: 32})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-dom.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Done did not close when the host's daemon died")
	}
	if err := dom.Err(); err == nil || !strings.Contains(err.Error(), "host three (") {
		t.Errorf("Err() = %v, want the host named", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Dial(ctx, Host{Name: "three", URI: d.URI}); err == nil || !strings.Contains(err.Error(), "host three (") || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("Dial to the dead host: %v", err)
	}
}
