// Package smallfs gives tests a tiny filesystem to fill, so that what kiln
// does when a disk runs out of space is tested on a real full disk.
package smallfs

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Mount mounts a tmpfs of size (e.g. "4m") on a fresh temporary folder
// for the test and returns the folder. It skips the test, saying why, when
// this machine does not let it mount (not root, no CAP_SYS_ADMIN).
func Mount(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small filesystem to fill (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// IncompressibleImage writes a qcow2 holding n bytes of random data, which
// no compression shrinks, so a copy of it really needs n bytes. It skips
// the test when qemu-img is not installed.
func IncompressibleImage(t testing.TB, n int) string {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "data.raw")
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(raw, b, 0o600); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "data.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, img).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return img
}
