package libvirthost

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/images"
)

// TestChainFromStore reads a layered version's blob chain from a real
// store: base first, each blob the store's own file.
func TestChainFromStore(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed")
	}
	store, err := images.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	add := func(version string, base *images.Manifest, size string) images.Manifest {
		t.Helper()
		dir := t.TempDir()
		p := filepath.Join(dir, "img.qcow2")
		args := []string{"create", "-q", "-f", "qcow2"}
		m := images.Manifest{Name: "web", Version: version, Base: images.BaseInfo{Source: "test"}, KilnVersion: "test", BuildStart: time.Now()}
		if base != nil {
			// As the store keeps overlays: the backing file is the bare hex.
			args = append(args, "-u", "-b", strings.TrimPrefix(base.Digest, "sha256:"), "-F", base.Format)
			m.BackingDigest = base.Digest
			m.Parent = &images.Parent{Ref: base.Ref().String(), Digest: base.Digest}
		}
		if out, err := exec.Command("qemu-img", append(args, p, size)...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v: %s", err, out)
		}
		got, err := store.Add(context.Background(), m, p, images.AddOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	base := add("1", nil, "1M")
	v2 := add("2", &base, "2M")
	v3 := add("3", &v2, "3M")

	chain, err := Chain(store, v3)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range chain {
		got = append(got, l.Digest)
		if l.Path != store.BlobPath(l.Digest) || l.Format != "qcow2" || l.Size <= 0 {
			t.Errorf("layer %+v", l)
		}
	}
	if want := []string{base.Digest, v2.Digest, v3.Digest}; !slices.Equal(got, want) {
		t.Errorf("Chain = %v, want %v", got, want)
	}
	if chain[0].BackingDigest != "" || chain[2].BackingDigest != v2.Digest || chain[2].VirtualSize != 3<<20 {
		t.Errorf("chain %+v", chain)
	}
	if c, err := Chain(store, base); err != nil || len(c) != 1 {
		t.Errorf("a base alone: %v, %v", c, err)
	}
}
