package libvirthost

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/cloudinit"
	"github.com/kiln-dev/kiln/internal/libvirttest"
	"github.com/kiln-dev/kiln/provision"
)

// testSeed writes a real kiln seed ISO, so its upload is what a fleet's is.
func testSeed(t *testing.T, hostname string) string {
	t.Helper()
	key, err := provision.NewKeyPair("kiln@test")
	if err != nil {
		t.Fatal(err)
	}
	hk, err := cloudinit.NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "seed.iso")
	if err := cloudinit.WriteISO(p, cloudinit.Config{
		InstanceID: cloudinit.NewInstanceID(), Hostname: hostname, User: "kiln",
		AuthorizedKeys: []string{key.AuthorizedKey}, HostKeys: []cloudinit.HostKey{hk},
	}); err != nil {
		t.Fatal(err)
	}
	return p
}

// forwardAddr is where a test host's forwards listen and kiln reaches them:
// loopback on the host in this namespace, the veth address of the other.
func forwardAddr(d *libvirttest.Daemon) string {
	if d.Netns != "" {
		return d.Addr
	}
	return DefaultForwardAddr
}

// TestDomainLifecycle starts the boot-sector guest as a kiln domain on each
// host, checks what virsh would show (name, metadata, TCG, the serial
// console's output, the port forwards answering where kiln dials them),
// stops it and checks that nothing of the instance is left but the shared
// image layers.
func TestDomainLifecycle(t *testing.T) {
	one, two := realHosts(t)
	for i, d := range []*libvirttest.Daemon{one, two} {
		t.Run(d.Name, func(t *testing.T) {
			c, pool, chain := uploaded(t, d)
			id := fmt.Sprintf("lc%d-1", i)
			dom, err := c.StartDomain(context.Background(), pool, DomainOptions{
				Fleet: fmt.Sprintf("lc%d", i), ID: id, Version: "tiny:1.0.0", Chain: chain,
				CPUs: 1, MemoryMiB: 32, GuestPorts: []int{22, 8080}, Seed: testSeed(t, id),
				ForwardAddr: forwardAddr(d),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { dom.Stop(context.Background(), time.Second) })
			if dom.Name != "kiln-"+id {
				t.Errorf("domain name %s", dom.Name)
			}

			doms, _, err := c.lv.ConnectListAllDomains(1, 0)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, x := range doms {
				names = append(names, x.Name)
			}
			if !slices.Contains(names, dom.Name) {
				t.Errorf("libvirt lists %v, not %s", names, dom.Name)
			}
			live, err := c.lv.DomainGetXMLDesc(dom.dom, 0)
			if err != nil {
				t.Fatal(err)
			}
			meta, ok, err := ParseMetadata(live)
			if err != nil || !ok {
				t.Fatalf("kiln metadata not read back from libvirt (ok=%v, err=%v):\n%s", ok, err, live)
			}
			if meta.Fleet != fmt.Sprintf("lc%d", i) || meta.Instance != id || meta.Digest != chain[1].Digest || !slices.Equal(meta.Forwards, dom.Meta.Forwards) {
				t.Errorf("metadata %+v, want the fleet, instance, top digest and forwards %v", meta, dom.Meta.Forwards)
			}
			if !strings.Contains(live, "<domain type='qemu'") {
				t.Errorf("domain is not TCG:\n%.300s", live)
			}

			// The guest ran: the boot sector printed on the serial console.
			serial := filepath.Join(d.Root, "lib", strings.TrimPrefix(pool.Path, "/var/lib/libvirt/"), dom.Name+"-serial.log")
			waitFor(t, 60*time.Second, func() bool {
				b, _ := os.ReadFile(serial)
				return strings.Contains(string(b), "kiln-probe: protected mode")
			}, "the boot sector's output in "+serial)
			// QEMU listens on the forwarded ports where kiln dials them.
			for _, g := range []int{22, 8080} {
				conn, err := net.DialTimeout("tcp", dom.Addr(g), 5*time.Second)
				if err != nil {
					t.Errorf("forward of guest port %d: %v", g, err)
					continue
				}
				conn.Close()
			}

			// What a restarted supervisor finds on the host.
			found, err := c.KilnDomains(meta.Fleet)
			if err != nil {
				t.Fatal(err)
			}
			if len(found) != 1 || found[0].Instance != id {
				t.Errorf("KilnDomains(%s) = %+v, want %s alone", meta.Fleet, found, id)
			}
			adopted, err := c.AdoptDomain(pool, id)
			if err != nil {
				t.Fatal(err)
			}
			if adopted.Addr(22) != dom.Addr(22) || adopted.Addr(8080) != dom.Addr(8080) {
				t.Errorf("adopted forwards %v, started with %v", adopted.Meta.Forwards, dom.Meta.Forwards)
			}

			// Stopped through the adopted handle, as after a restart. The boot
			// sector ignores ACPI: Stop must fall back to destroy.
			if err := adopted.Stop(context.Background(), 2*time.Second); err != nil {
				t.Fatal(err)
			}
			select {
			case <-dom.Done():
			case <-time.After(10 * time.Second):
				t.Error("the first handle's Done did not close after the domain was stopped")
			}
			if _, err := c.lv.DomainLookupByName(dom.Name); !notFound(err) {
				t.Errorf("domain %s still defined after Stop (err %v)", dom.Name, err)
			}
			vols, err := pool.Volumes()
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vols {
				if strings.HasPrefix(v, dom.Name) {
					t.Errorf("volume %s outlived its domain", v)
				}
			}
			top, _ := LayerVolume(chain[1].Digest)
			if !slices.Contains(vols, top) {
				t.Errorf("the image layer %s went with the domain: %v", top, vols)
			}
			if err := dom.Stop(context.Background(), time.Second); err != nil {
				t.Errorf("a second Stop: %v", err)
			}
		})
	}
}

// TestDomainStoppedElsewhere destroys a kiln domain behind kiln's back (an
// operator's virsh destroy, a crash): the instance's Done closes and says so.
func TestDomainStoppedElsewhere(t *testing.T) {
	one, _ := realHosts(t)
	c, pool, chain := uploaded(t, one)
	dom, err := c.StartDomain(context.Background(), pool, DomainOptions{Fleet: "gone", ID: "gone-1", Chain: chain, CPUs: 1, MemoryMiB: 32})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dom.Stop(context.Background(), time.Second) })
	if err := c.lv.DomainDestroy(dom.dom); err != nil {
		t.Fatal(err)
	}
	select {
	case <-dom.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done did not close when the domain was destroyed elsewhere")
	}
	if err := dom.Err(); err == nil || !strings.Contains(err.Error(), "host one (") || !strings.Contains(err.Error(), "no longer running") {
		t.Errorf("Err() = %v", err)
	}
}

// TestMachineTypeMissing asks for a machine type the host's QEMU lacks: the
// error names the host and the machine, and nothing is left behind.
func TestMachineTypeMissing(t *testing.T) {
	one, _ := realHosts(t)
	c, pool, chain := uploaded(t, one)
	_, err := c.StartDomain(context.Background(), pool, DomainOptions{Fleet: "mt", ID: "mt-1", Chain: chain, CPUs: 1, MemoryMiB: 32, Machine: "pc-i440fx-99.9"})
	if err == nil || !strings.Contains(err.Error(), "host one (") || !strings.Contains(err.Error(), "cannot run machine type pc-i440fx-99.9") {
		t.Fatalf("StartDomain error = %v", err)
	}
	vols, _ := pool.Volumes()
	for _, v := range vols {
		if strings.HasPrefix(v, "kiln-mt-1") {
			t.Errorf("volume %s left after a failed start", v)
		}
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// uploaded connects to a test host and uploads a boot-sector chain into
// kiln's pool there, removed after the test.
func uploaded(t *testing.T, d *libvirttest.Daemon) (*Conn, *Pool, []Layer) {
	t.Helper()
	c := dial(t, d)
	pool, err := c.EnsurePool()
	if err != nil {
		t.Fatal(err)
	}
	chain := testChain(t, 1)[0]
	removeLayers(t, pool, chain)
	if _, err := pool.EnsureChain(context.Background(), chain); err != nil {
		t.Fatal(err)
	}
	return c, pool, chain
}
