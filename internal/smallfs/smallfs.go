// Package smallfs gives tests a tiny filesystem to fill, so that what kiln
// does when a disk runs out of space is tested on a real full disk.
package smallfs

import (
	"os/exec"
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
