//go:build e2e

package libvirthost

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
)

// baseImage makes (or takes from kiln's cache) the Debian base image with
// the kiln binary, as e2e's TestMain does.
func baseImage(t *testing.T) Layer {
	t.Helper()
	kiln, err := filepath.Abs("../bin/kiln")
	if err == nil {
		_, err = os.Stat(kiln)
	}
	if err != nil {
		t.Fatalf("build kiln first (make build): %v", err)
	}
	p := filepath.Join(t.TempDir(), "base.qcow2")
	if out, err := exec.Command(kiln, "base", "debian", "-o", p).CombinedOutput(); err != nil {
		t.Fatalf("kiln base debian: %v\n%s", err, out)
	}
	d, err := images.FileDigest(p)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	info, err := disk.ReadInfo(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return Layer{Digest: d, Path: p, Format: "qcow2", Size: st.Size(), VirtualSize: info.VirtualSize}
}

// TestDebianInstanceOnLibvirt boots the real base image as a domain on a
// test host and reaches it over SSH through the forwarded port, with the
// host key kiln generated and pinned (a VM under TCG: built with -tags e2e,
// as make e2e does).
func TestDebianInstanceOnLibvirt(t *testing.T) {
	one, _ := realHosts(t)
	c := dial(t, one)
	pool, err := c.EnsurePool()
	if err != nil {
		t.Fatal(err)
	}
	base := baseImage(t)
	removeLayers(t, pool, []Layer{base})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	tr, err := pool.EnsureChain(ctx, []Layer{base})
	if err != nil {
		t.Fatal(err)
	}
	if tr.BytesSent != base.Size {
		t.Errorf("sent %d bytes, the image has %d", tr.BytesSent, base.Size)
	}
	inst, err := c.Launch(ctx, pool, LaunchOptions{
		DomainOptions: DomainOptions{
			Fleet: "deb", ID: "deb-1", Version: "debian:12", Chain: []Layer{base},
			CPUs: 1, MemoryMiB: 512, GuestPorts: []int{8080},
		},
		// Other VMs share this machine: a loaded two-core runner has taken
		// over five minutes to boot a TCG guest.
		Dir: t.TempDir(), Log: t.Logf, BootTimeout: 12 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Remove(context.Background())
	out, err := inst.SSH.Output(ctx, "hostname; cat /proc/cmdline >/dev/null && echo ok")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Fields(out); len(lines) != 2 || lines[0] != "deb-1" || lines[1] != "ok" {
		t.Errorf("guest said %q, want its own hostname deb-1", out)
	}
	if code, err := inst.Exec(ctx, "test -f /var/lib/cloud/instance/boot-finished || sleep 30; test -d /home/kiln"); err != nil || code != 0 {
		t.Errorf("exec check: %d, %v", code, err)
	}
	t.Logf("SSH ready %.1fs after the domain was defined", inst.BootTime.Seconds())
	// A restarted supervisor adopts it from the host and its folder.
	again, err := c.Adopt(ctx, pool, "deb-1", inst.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := again.SSH.Output(ctx, "hostname"); err != nil || strings.TrimSpace(out) != "deb-1" {
		t.Errorf("adopted instance: %q, %v", out, err)
	}
	again.SSH.Close()
	if err := inst.Remove(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.lv.DomainLookupByName(inst.Name); !notFound(err) {
		t.Errorf("domain still defined after Remove: %v", err)
	}
}
