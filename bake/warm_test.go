package bake

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/cloudinit"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/instance"
	"github.com/kiln-dev/kiln/provision"
	"github.com/kiln-dev/kiln/qemu"
	"github.com/kiln-dev/kiln/savedstate"
)

// warmBuilder is a builder far enough along to boot: a small base disk and
// a cache folder.
func warmBuilder(t *testing.T) (*builder, instance.Options, *bytes.Buffer) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	var out bytes.Buffer
	b := &builder{
		spec:   Spec{Name: "hello", Warm: true, CPUs: 1, MemoryMiB: 128},
		opts:   Options{CacheDir: filepath.Join(dir, "cache")},
		out:    &out,
		source: sourceInfo{path: base, format: "qcow2", base: images.BaseInfo{Source: base, Checksum: "sha256:aa"}},
	}
	run := filepath.Join(dir, "run")
	o := instance.Options{Name: "hello-build", Image: base, ImageFormat: "qcow2", Dir: run, CPUs: 1, MemoryMiB: 128, Accel: qemu.TCG}
	return b, o, &out
}

// plantState puts a state for o in b's cache whose disk is made by disk.
func plantState(t *testing.T, b *builder, o instance.Options, disk func(path string)) string {
	t.Helper()
	in, err := instance.StateInputs(context.Background(), o, b.source.base.Checksum, "build")
	if err != nil {
		t.Fatal(err)
	}
	p, err := savedstate.Open(b.opts.CacheDir).Begin()
	if err != nil {
		t.Fatal(err)
	}
	key, err := provision.NewKeyPair("")
	if err != nil {
		t.Fatal(err)
	}
	host, err := cloudinit.NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p.File(savedstate.SeedFile), make([]byte, 4096), 0o600)
	os.WriteFile(p.File(savedstate.KnownHostsFile), []byte("kiln-guest "+host.Public+"\n"), 0o600)
	os.WriteFile(p.File(savedstate.KeyFile), key.PrivatePEM, 0o600)
	disk(p.File(savedstate.DiskFile))
	if err := p.Commit(savedstate.Meta{Inputs: in, Saved: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return in.Key()
}

// A saved state that does not resume is dropped with one warning, and the
// build boots cold and saves a fresh one.
func TestCorruptStateBootsCold(t *testing.T) {
	cases := map[string]func(t *testing.T, base string) func(string){
		"garbage disk": func(t *testing.T, base string) func(string) {
			return func(p string) { os.WriteFile(p, bytes.Repeat([]byte("not a qcow2 "), 1000), 0o600) }
		},
		// A good qcow2 without the snapshot: QEMU itself refuses -loadvm.
		"no snapshot in the disk": func(t *testing.T, base string) func(string) {
			return func(p string) {
				if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", p).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img: %v\n%s", err, out)
				}
			}
		},
	}
	for name, disk := range cases {
		t.Run(name, func(t *testing.T) {
			b, o, out := warmBuilder(t)
			key := plantState(t, b, o, disk(t, b.source.path))
			resumed, err := b.bootWarm(context.Background(), o)
			if err != nil || resumed {
				t.Fatalf("bootWarm: resumed %v, err %v; want a cold boot", resumed, err)
			}
			if n := strings.Count(out.String(), "warning:"); n != 1 || !strings.Contains(out.String(), "saved state "+key+" does not resume") || !strings.Contains(out.String(), "booting cold") {
				t.Errorf("want one warning naming the state and the cold boot, got:\n%s", out)
			}
			if _, found, _ := savedstate.Open(b.opts.CacheDir).Lookup(key); found {
				t.Error("the state that failed is still in the cache")
			}
			if b.saveAs == nil || b.saveAs.Key() != key {
				t.Error("the cold boot is not saved under the same key")
			}
			if _, err := os.Stat(o.Dir); err == nil {
				t.Error("the failed resume left its run folder")
			}
		})
	}
}

// --cold, warm = false and a sensitive variable in the template's
// cloud-init keep a build away from saved states altogether.
func TestColdReasons(t *testing.T) {
	b := &builder{spec: Spec{Warm: true, UserData: []byte("token: s3cret\n")}}
	if r := b.coldReason(); r != "" {
		t.Errorf("a plain build is cold: %q", r)
	}
	b.secrets = []string{"s3cret"}
	if r := b.coldReason(); !strings.Contains(r, "sensitive") {
		t.Errorf("a secret in the cloud-init: %q", r)
	}
	b.secrets = nil
	b.opts.Cold = true
	if r := b.coldReason(); r != "--cold" {
		t.Errorf("--cold: %q", r)
	}
	b.opts.Cold, b.spec.Warm = false, false
	if r := b.coldReason(); r != "warm = false" {
		t.Errorf("warm = false: %q", r)
	}
}
