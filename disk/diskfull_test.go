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

	"github.com/kiln-dev/kiln/internal/smallfs"
)

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
	full := smallfs.Mount(t, "4m")
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
			full := smallfs.Mount(t, "4m")
			_, err := Export(context.Background(), src, filepath.Join(full, "out."+f), ExportOptions{Format: f})
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Export onto a full disk: %v; want ENOSPC", err)
			}
			t.Log(err)
			assertEmpty(t, full)
		})
	}
}
