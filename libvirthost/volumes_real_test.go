package libvirthost

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/images"
)

// bootSector is the accelerator probe's guest: 512 bytes that print to the
// serial port and halt, the cheapest guest a domain can really run.
func bootSector(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "qemu", "probeguest", "boot.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testChain writes a raw base blob (the boot sector) and n qcow2 overlays
// on it, each a version of its own, named by digest as in the store (the
// overlays' backing file is the base's bare hex), and returns the chains,
// base first: [base, top1], [base, top2], …
func testChain(t *testing.T, n int) [][]Layer {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed")
	}
	dir := t.TempDir()
	base := layerFile(t, dir, bootSector(t), "raw", "")
	var chains [][]Layer
	for i := 1; i <= n; i++ {
		tmp := filepath.Join(dir, "top.qcow2")
		hexName, _ := LayerVolume(base.Digest)
		// Versions differ by size, so each has its own digest.
		cmd := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", hexName, "-F", "raw", tmp, "")
		cmd.Args[len(cmd.Args)-1] = []string{"1M", "2M", "3M", "4M"}[i-1]
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
		b, err := os.ReadFile(tmp)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(tmp)
		top := layerFile(t, dir, b, "qcow2", base.Digest)
		top.VirtualSize = int64(i) << 20
		chains = append(chains, []Layer{base, top})
	}
	return chains
}

func layerFile(t *testing.T, dir string, b []byte, format, backing string) Layer {
	t.Helper()
	p := filepath.Join(dir, "blob")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := images.FileDigest(p)
	if err != nil {
		t.Fatal(err)
	}
	name, _ := LayerVolume(d)
	final := filepath.Join(dir, name)
	if err := os.Rename(p, final); err != nil {
		t.Fatal(err)
	}
	return Layer{Digest: d, Path: final, Format: format, Size: int64(len(b)), VirtualSize: int64(len(b)), BackingDigest: backing}
}

func removeLayers(t *testing.T, p *Pool, chains ...[]Layer) {
	t.Cleanup(func() {
		for _, c := range chains {
			for _, l := range c {
				p.RemoveLayer(l.Digest)
			}
		}
	})
}

// TestLayersTravelOnce uploads two versions that share a base to the
// isolated host: the base goes once, each version's own layer once, every
// upload is read back and hashed, and a layer whose upload was cut short
// (no verified marker) goes again.
func TestLayersTravelOnce(t *testing.T) {
	_, two := realHosts(t)
	c := dial(t, two)
	pool, err := c.EnsurePool()
	if err != nil {
		t.Fatal(err)
	}
	if pool.Path != PoolDir {
		t.Errorf("pool path %s, want %s", pool.Path, PoolDir)
	}
	chains := testChain(t, 2)
	v1, v2 := chains[0], chains[1]
	removeLayers(t, pool, v1, v2)
	ctx := context.Background()

	tr, err := pool.EnsureChain(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	if want := v1[0].Size + v1[1].Size; tr.BytesSent != want || tr.BytesRead != want || len(tr.Uploaded) != 2 || len(tr.Reused) != 0 {
		t.Errorf("first version: %+v, want 2 uploads of %d bytes, read back", tr, want)
	}
	tr, err = pool.EnsureChain(ctx, v2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tr.Reused, []string{v1[0].Digest}) || !slices.Equal(tr.Uploaded, []string{v2[1].Digest}) || tr.BytesSent != v2[1].Size {
		t.Errorf("second version: %+v, want the base reused and only its own %d bytes sent", tr, v2[1].Size)
	}
	tr, err = pool.EnsureChain(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	if tr.BytesSent != 0 || len(tr.Reused) != 2 {
		t.Errorf("first version again: %+v, want everything reused", tr)
	}
	vols, err := pool.Volumes()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []Layer{v1[0], v1[1], v2[1]} {
		name, _ := LayerVolume(l.Digest)
		if !slices.Contains(vols, name) || !slices.Contains(vols, name+verifiedSuffix) {
			t.Errorf("pool lacks %s or its marker: %v", name, vols)
		}
	}

	// An upload cut short leaves the layer without its marker.
	top, _ := LayerVolume(v1[1].Digest)
	if err := pool.DeleteVolume(top + verifiedSuffix); err != nil {
		t.Fatal(err)
	}
	tr, err = pool.EnsureChain(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tr.Uploaded, []string{v1[1].Digest}) || tr.BytesSent != v1[1].Size {
		t.Errorf("after losing a marker: %+v, want the layer uploaded again", tr)
	}
}

// TestDamagedUploadIsRefused uploads a layer whose bytes do not match its
// digest, as a corrupted transfer would: the read-back check refuses it and
// leaves no volume behind.
func TestDamagedUploadIsRefused(t *testing.T) {
	one, _ := realHosts(t)
	c := dial(t, one)
	pool, err := c.EnsurePool()
	if err != nil {
		t.Fatal(err)
	}
	l := testChain(t, 1)[0][0]
	l.Digest = "sha256:" + strings.Repeat("ab", 32)
	removeLayers(t, pool, []Layer{l})
	_, err = pool.EnsureChain(context.Background(), []Layer{l})
	if err == nil || !strings.Contains(err.Error(), "host one (") || !strings.Contains(err.Error(), "the upload was damaged") {
		t.Fatalf("EnsureChain error = %v, want the host named and the damage found", err)
	}
	vols, err := pool.Volumes()
	if err != nil {
		t.Fatal(err)
	}
	name, _ := LayerVolume(l.Digest)
	if slices.Contains(vols, name) || slices.Contains(vols, name+verifiedSuffix) {
		t.Errorf("a refused upload left volumes: %v", vols)
	}
}
