package instance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kiln-dev/kiln/qemu"
)

// The seed's shape leaves out what is fresh on every boot (instance-id,
// keys) and keeps what the template decides.
func TestSeedShape(t *testing.T) {
	o := Options{Name: "hello-build", UserData: []byte("#cloud-config\nwrite_files: [{path: /etc/motd, content: hi}]\n")}
	a, err := seedShape(o)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := seedShape(o); a != b {
		t.Fatalf("two seeds of one template differ in shape: %s, %s", a, b)
	}
	for name, change := range map[string]func(*Options){
		"cloud-init": func(o *Options) { o.UserData = []byte("#cloud-config\npackages: [jq]\n") },
		"hostname":   func(o *Options) { o.Name = "web-build" },
	} {
		p := o
		change(&p)
		if b, _ := seedShape(p); b == a {
			t.Errorf("changing the %s leaves the seed's shape as it was", name)
		}
	}
}

// Every option that shapes the boot changes the saved state's key.
func TestStateInputs(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	fw := filepath.Join(t.TempDir(), "OVMF.fd")
	os.WriteFile(fw, []byte("firmware"), 0o600)
	o := Options{Name: "hello-build", CPUs: 2, MemoryMiB: 1024, DiskSize: 3 << 30, Accel: qemu.TCG}
	key := func(o Options, base string) string {
		in, err := StateInputs(context.Background(), o, base, "build")
		if err != nil {
			t.Fatal(err)
		}
		return in.Key()
	}
	k := key(o, "sha256:aa")
	if key(o, "sha256:aa") != k {
		t.Fatal("equal options give different keys")
	}
	if key(o, "sha256:bb") == k {
		t.Error("another base gives the same key")
	}
	for name, change := range map[string]func(*Options){
		"cpus":       func(o *Options) { o.CPUs = 1 },
		"memory":     func(o *Options) { o.MemoryMiB = 512 },
		"disk size":  func(o *Options) { o.DiskSize = 4 << 30 },
		"firmware":   func(o *Options) { o.Firmware = fw },
		"accel":      func(o *Options) { o.Accel = qemu.KVM },
		"hostname":   func(o *Options) { o.Name = "web-build" },
		"cloud-init": func(o *Options) { o.UserData = []byte("#cloud-config\npackages: [jq]\n") },
	} {
		p := o
		change(&p)
		if key(p, "sha256:aa") == k {
			t.Errorf("changing the %s leaves the key as it was", name)
		}
	}
	// Ports and run folders do not shape the machine.
	p := o
	p.Dir, p.Forwards = "/elsewhere", []qemu.Forward{{GuestPort: 8080}}
	if key(p, "sha256:aa") != k {
		t.Error("the run folder or a port forward changes the key")
	}
}

// The script every warm start runs in the guest compiles (perl -c): a
// mistake in it would otherwise show only in an e2e run.
func TestAdoptScriptCompiles(t *testing.T) {
	perl, err := exec.LookPath("perl")
	if err != nil {
		t.Skip("no perl on this host")
	}
	out, err := exec.Command(perl, "-c", "-e", fmt.Sprintf(adoptScript, User, User)).CombinedOutput()
	if err != nil {
		t.Fatalf("perl -c: %v\n%s", err, out)
	}
}
