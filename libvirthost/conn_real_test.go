package libvirthost

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/libvirttest"
)

func TestInfoOfRealHosts(t *testing.T) {
	one, two := realHosts(t)
	seen := map[string]bool{}
	for _, d := range []*libvirttest.Daemon{one, two} {
		in, err := dial(t, d).Info()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s, libvirt %s, QEMU %s, %s, %d of %d bytes free", d.Name, in.Hostname, in.LibvirtVersion, in.QEMUVersion, in.Accel, in.FreeMemory, in.MemoryTotal)
		if in.LibvirtVersion == "" || in.LibvirtVersion == "0.0.0" || in.QEMUVersion == "0.0.0" {
			t.Errorf("%s: versions libvirt %q QEMU %q", d.Name, in.LibvirtVersion, in.QEMUVersion)
		}
		// The test daemons cannot use /dev/kvm (it is hidden or absent).
		if in.Accel != "tcg" || in.DomainType != "qemu" {
			t.Errorf("%s: accelerator %s (%s), want tcg (qemu)", d.Name, in.Accel, in.DomainType)
		}
		if !in.HasMachine(DefaultMachine) {
			t.Errorf("%s: machine types %v lack %s", d.Name, in.Machines, DefaultMachine)
		}
		if in.FreeMemory == 0 || in.FreeMemory > in.MemoryTotal || in.CPUs < 1 {
			t.Errorf("%s: free memory %d of %d, %d CPUs", d.Name, in.FreeMemory, in.MemoryTotal, in.CPUs)
		}
		seen[in.Hostname] = true
	}
	// Each runs in a UTS namespace of its own, with its own host name.
	if len(seen) != 2 {
		t.Errorf("both hosts report the same host name: %v", seen)
	}
}

func TestUnreachableHostIsNamed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Dial(ctx, Host{Name: "lab3", URI: "qemu+tcp://" + addr + "/system"})
	if err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
	if want := "host lab3 (qemu+tcp://" + addr + "/system): unreachable"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
}
