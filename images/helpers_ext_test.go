package images

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/disk"
)

// addFake stores a small fake qcow2 image (see writeQcow2) as ref, with
// content unique to ref. A non-nil base makes it an overlay on base's blob,
// recorded as Parent and BackingDigest, as kiln build would.
func addFake(t *testing.T, s *Store, ref string, base *Manifest, mods ...func(*Manifest)) Manifest {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img.qcow2")
	m := manifestFor(ref)
	backing := ""
	if base != nil {
		backing = strings.TrimPrefix(base.Digest, "sha256:")
		m.BackingDigest = base.Digest
		m.Parent = &Parent{Ref: base.Ref().String(), Digest: base.Digest}
	}
	writeQcow2(t, path, 1<<30, "payload of "+ref, backing)
	for _, mod := range mods {
		mod(&m)
	}
	got, err := s.Add(context.Background(), m, path, AddOptions{})
	if err != nil {
		t.Fatalf("Add %s: %v", ref, err)
	}
	return got
}

func needQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
}

// addReal stores a real qcow2 image made by qemu-img as ref. A non-nil base
// makes it an overlay on base's blob, named by the bare hex digest as the
// store wants.
func addReal(t *testing.T, s *Store, ref string, base *Manifest) Manifest {
	t.Helper()
	needQemuImg(t)
	ctx := context.Background()
	dir := t.TempDir()
	raw := filepath.Join(dir, "data.raw")
	data := make([]byte, 1<<20)
	copy(data[4096:], "payload of "+ref)
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "img.qcow2")
	m := manifestFor(ref)
	var o disk.ConvertOptions
	if base != nil {
		o = disk.ConvertOptions{BackingFile: s.BlobPath(base.Digest), BackingFormat: base.Format}
		m.BackingDigest = base.Digest
		m.Parent = &Parent{Ref: base.Ref().String(), Digest: base.Digest}
	}
	if err := disk.Convert(ctx, raw, q, o); err != nil {
		t.Fatal(err)
	}
	if base != nil {
		if err := disk.Rebase(ctx, q, strings.TrimPrefix(base.Digest, "sha256:"), base.Format); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Add(ctx, m, q, AddOptions{})
	if err != nil {
		t.Fatalf("Add %s: %v", ref, err)
	}
	return got
}

// at returns a modifier setting BuildEnd, for ordering tests.
func at(day int) func(*Manifest) {
	return func(m *Manifest) { m.BuildEnd = time.Date(2025, 1, day, 0, 0, 0, 0, time.UTC) }
}

func mustParse(t *testing.T, s string) Ref {
	t.Helper()
	r, err := ParseRef(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
