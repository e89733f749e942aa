package disk

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// smallFS mounts a tmpfs of size bytes for the test, or skips when this
// machine does not let the test mount (not root, no CAP_SYS_ADMIN).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small filesystem to fill (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// randomImage writes a qcow2 holding n bytes of incompressible data.
func randomImage(t *testing.T, n int) string {
	t.Helper()
	needQemuImg(t)
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

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		t.Errorf("left behind on the full disk: %s", e.Name())
	}
}

func TestConvertOnFullDisk(t *testing.T) {
	src := randomImage(t, 16<<20)
	full := smallFS(t, "4m")
	err := Convert(context.Background(), src, filepath.Join(full, "out.qcow2"), ConvertOptions{Format: "qcow2", Compression: "zstd"})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Convert onto a full disk: %v; want ENOSPC", err)
	}
	t.Log(err)
	assertEmpty(t, full)
}

func TestExportOnFullDisk(t *testing.T) {
	src := randomImage(t, 16<<20)
	for _, f := range []string{"raw", "qcow2", "vmdk", "vhd"} {
		t.Run(f, func(t *testing.T) {
			full := smallFS(t, "4m")
			_, err := Export(context.Background(), src, filepath.Join(full, "out."+f), ExportOptions{Format: f})
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Export onto a full disk: %v; want ENOSPC", err)
			}
			t.Log(err)
			assertEmpty(t, full)
		})
	}
}
