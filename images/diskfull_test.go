package images

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

// randomQcow2 writes a qcow2 holding n bytes of incompressible data.
func randomQcow2(t *testing.T, n int) string {
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

// A store whose disk fills while an image is added keeps every version it
// had, intact, and keeps nothing of the failed one.
func TestAddOnFullDisk(t *testing.T) {
	ctx := context.Background()
	root := smallfs.Mount(t, "12m")
	s, err := Open(filepath.Join(root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, randomQcow2(t, 2<<20), "app", "1", false); err != nil {
		t.Fatal(err)
	}
	_, err = s.Import(ctx, randomQcow2(t, 16<<20), "app", "2", false)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("import onto a full store: %v; want ENOSPC", err)
	}
	t.Log(err)
	if _, err := s.Get(Ref{Name: "app", Version: "2"}); err == nil {
		t.Error("the failed version is in the store")
	}
	if err := s.Verify(ctx, Ref{Name: "app", Version: "1"}); err != nil {
		t.Errorf("the old version is damaged: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(s.Root, "tmp"))
	for _, e := range entries {
		t.Errorf("left in the store's tmp: %s", e.Name())
	}
	list, err := s.List()
	if err != nil || len(list) != 1 {
		t.Errorf("List after the failure: %v, %v", list, err)
	}
}
