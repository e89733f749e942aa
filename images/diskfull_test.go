package images

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kiln-dev/kiln/internal/smallfs"
)

// A store whose disk fills while an image is added keeps every version it
// had, intact, and keeps nothing of the failed one.
func TestAddOnFullDisk(t *testing.T) {
	ctx := context.Background()
	root := smallfs.Mount(t, "12m")
	s, err := Open(filepath.Join(root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, smallfs.IncompressibleImage(t, 2<<20), "app", "1", false); err != nil {
		t.Fatal(err)
	}
	_, err = s.Import(ctx, smallfs.IncompressibleImage(t, 16<<20), "app", "2", false)
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
