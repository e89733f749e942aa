package disk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kiln-dev/kiln/internal/smallfs"
)

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		t.Errorf("left behind on the full disk: %s", e.Name())
	}
}

func TestConvertOnFullDisk(t *testing.T) {
	src := smallfs.IncompressibleImage(t, 16<<20)
	full := smallfs.Mount(t, "4m")
	err := Convert(context.Background(), src, filepath.Join(full, "out.qcow2"), ConvertOptions{Format: "qcow2", Compression: "zstd"})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Convert onto a full disk: %v; want ENOSPC", err)
	}
	t.Log(err)
	assertEmpty(t, full)
}

func TestExportOnFullDisk(t *testing.T) {
	src := smallfs.IncompressibleImage(t, 16<<20)
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
