package libvirthost

import (
	"context"
	"os"
	"slices"
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
	// A lost host's domain cannot be stopped from here: Stop says so
	// instead of waiting on the host.
	if err := dom.Stop(context.Background(), time.Second); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("Stop on a lost host: %v", err)
	}

	// The daemon comes back and takes back the domain whose QEMU kept
	// running; RemoveFleet (fleet down, a supervisor's reap) then removes
	// it and its volumes, and leaves the image's layers.
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, d)
	pool2, err := c2.EnsurePool()
	if err != nil {
		t.Fatal(err)
	}
	if doms, err := c2.KilnDomains("lost"); err != nil || len(doms) != 1 {
		t.Fatalf("after the restart KilnDomains(lost) = %v, %v; want lost-1", doms, err)
	}
	removed, err := c2.RemoveFleet(context.Background(), pool2, "lost", nil)
	if err != nil || len(removed) != 1 || removed[0] != "lost-1" {
		t.Errorf("RemoveFleet = %v, %v; want [lost-1]", removed, err)
	}
	if doms, err := c2.KilnDomains(""); err != nil || len(doms) != 0 {
		t.Errorf("kiln domains left after RemoveFleet: %v, %v", doms, err)
	}
	vols, err := pool2.Volumes()
	if err != nil {
		t.Fatal(err)
	}
	layer, _ := LayerVolume(chain[0].Digest)
	for _, v := range vols {
		if _, ok := FleetVolume("lost", v); ok {
			t.Errorf("volume %s left after RemoveFleet", v)
		}
	}
	if !slices.Contains(vols, layer) {
		t.Errorf("RemoveFleet removed the image layer %s too: %v", layer, vols)
	}
}

// TestHostThatStopsAnswering: a host whose daemon still holds the
// connection open but answers nothing (frozen, or the network to it black-
// holed) ends its instances within seconds of the poll that went
// unanswered, marks its connection lost, and a Stop then says the host is
// unreachable instead of waiting on it.
func TestHostThatStopsAnswering(t *testing.T) {
	realHosts(t)
	d, err := libvirttest.Start(t.TempDir(), "four", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	c, pool, chain := uploaded(t, d)
	dom, err := c.StartDomain(context.Background(), pool, DomainOptions{Fleet: "frozen", ID: "frozen-1", Chain: chain, CPUs: 1, MemoryMiB: 32})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Freeze(); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			d.Thaw()
			thawed = true
		}
	}
	defer thaw()
	select {
	case <-dom.Done():
	case <-time.After(callTimeout + 2*watchEvery + 20*time.Second):
		t.Fatal("Done did not close while the host answered nothing")
	}
	if err := dom.Err(); err == nil || !strings.Contains(err.Error(), "host four (") || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("Err() = %v, want the host named and no answer", err)
	}
	if !c.Lost() {
		t.Error("the connection is not marked lost")
	}
	done := make(chan error, 1)
	go func() { done <- dom.Stop(context.Background(), time.Second) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Errorf("Stop on the frozen host: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Stop waited on the frozen host")
	}
	thaw()
	c2 := dial(t, d)
	pool2, err := c2.EnsurePool()
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.RemoveInstance(context.Background(), pool2, "frozen-1"); err != nil {
		t.Fatal(err)
	}
	if doms, _ := c2.KilnDomains("frozen"); len(doms) != 0 {
		t.Errorf("RemoveInstance left %v", doms)
	}
}
