package images

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/disk"
)

// patchFile overwrites bytes of a (read-only) store file.
func patchFile(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	os.Chmod(path, 0o644)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// corruptRefcounts zeroes a qcow2 image's first refcount table entry, which
// qemu-img check reports as corruption.
func corruptRefcounts(t *testing.T, path string) {
	t.Helper()
	hdr := make([]byte, 64)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadAt(hdr, 0)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	patchFile(t, path, int64(binary.BigEndian.Uint64(hdr[48:])), make([]byte, 8))
}

func TestVerify(t *testing.T) {
	needQemuImg(t)
	ctx := context.Background()
	type chain struct {
		s                 *Store
		base, mid, top    Manifest
		flat              Manifest
		bases, mids, tops string // blob paths
	}
	// One chain, built once (qemu-img is slow), copied for each case.
	orig := newStore(t)
	var proto chain
	proto.base = addReal(t, orig, "base:1", nil)
	proto.mid = addReal(t, orig, "mid:1", &proto.base)
	proto.top = addReal(t, orig, "top:1", &proto.mid)
	proto.flat = addReal(t, orig, "flat:1", nil)
	setup := func(t *testing.T) chain {
		c := proto
		c.s = &Store{Root: filepath.Join(t.TempDir(), "images")}
		if err := os.CopyFS(c.s.Root, os.DirFS(orig.Root)); err != nil {
			t.Fatal(err)
		}
		c.bases, c.mids, c.tops = c.s.BlobPath(c.base.Digest), c.s.BlobPath(c.mid.Digest), c.s.BlobPath(c.top.Digest)
		return c
	}

	tests := []struct {
		name   string
		damage func(t *testing.T, c chain)
		ref    string
		// want: substrings of the error, each naming the ref; none: nil
		want func(c chain) []string
	}{
		{name: "intact chain", ref: "top:1"},
		{name: "intact flat", ref: "flat:1"},
		{name: "by channel", ref: "top@latest"},
		{name: "base blob damaged", ref: "top:1",
			damage: func(t *testing.T, c chain) { patchFile(t, c.bases, 1<<19, []byte("flipped")) },
			want: func(c chain) []string {
				return []string{"top:1: backing blob " + c.base.Digest + " is damaged: its content hashes to sha256:"}
			}},
		{name: "base blob damaged, seen from base", ref: "base:1",
			damage: func(t *testing.T, c chain) { patchFile(t, c.bases, 1<<19, []byte("flipped")) },
			want: func(c chain) []string {
				return []string{"base:1: blob " + c.base.Digest + " is damaged"}
			}},
		{name: "base blob missing", ref: "top:1",
			damage: func(t *testing.T, c chain) { os.Remove(c.bases) },
			want: func(c chain) []string {
				return []string{"top:1: backing blob " + c.base.Digest + " is missing"}
			}},
		{name: "own blob missing", ref: "mid:1",
			damage: func(t *testing.T, c chain) { os.Remove(c.mids) },
			want:   func(c chain) []string { return []string{"mid:1: blob " + c.mid.Digest + " is missing"} }},
		{name: "blob grew", ref: "flat:1",
			damage: func(t *testing.T, c chain) {
				p := c.s.BlobPath(c.flat.Digest)
				os.Chmod(p, 0o644)
				f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
				f.Write([]byte("tail"))
				f.Close()
			},
			want: func(c chain) []string {
				return []string{"flat:1: blob " + c.flat.Digest + " is ", "bytes, but the manifest says", "is damaged"}
			}},
		{name: "overlay renamed to another backing blob", ref: "top:1",
			damage: func(t *testing.T, c chain) {
				os.Chmod(c.tops, 0o644)
				if err := disk.Rebase(ctx, c.tops, strings.TrimPrefix(c.flat.Digest, "sha256:"), "qcow2"); err != nil {
					t.Fatal(err)
				}
			},
			want: func(c chain) []string {
				return []string{
					"top:1: blob " + c.top.Digest + " is damaged",
					"top:1: the blob's backing file is " + strings.TrimPrefix(c.flat.Digest, "sha256:") + ", not the store blob " + c.mid.Digest,
				}
			}},
		{name: "backing file outside the store", ref: "mid:1",
			damage: func(t *testing.T, c chain) {
				os.Chmod(c.mids, 0o644)
				if err := disk.Rebase(ctx, c.mids, c.bases+".copy", "qcow2"); err != nil {
					t.Fatal(err)
				}
			},
			want: func(c chain) []string {
				return []string{"mid:1: blob " + c.mid.Digest + " is an overlay on " + c.bases + ".copy, which is not a store blob"}
			}},
		{name: "manifest claims a backing blob", ref: "flat:1",
			damage: func(t *testing.T, c chain) {
				m := c.flat
				m.BackingDigest = c.base.Digest
				data, _ := encodeManifest(m)
				os.WriteFile(c.s.manifestPath(m.Ref()), data, 0o644)
			},
			want: func(c chain) []string {
				return []string{"flat:1: the manifest has backing_digest " + c.base.Digest + ", but the blob has no backing file"}
			}},
		{name: "manifest format wrong", ref: "flat:1",
			damage: func(t *testing.T, c chain) {
				m := c.flat
				m.Format = "raw"
				data, _ := encodeManifest(m)
				os.WriteFile(c.s.manifestPath(m.Ref()), data, 0o644)
			},
			want: func(c chain) []string {
				return []string{"flat:1: the manifest says raw, but qemu-img sees a qcow2 image"}
			}},
		{name: "qcow2 corruption", ref: "flat:1",
			damage: func(t *testing.T, c chain) { corruptRefcounts(t, c.s.BlobPath(c.flat.Digest)) },
			want: func(c chain) []string {
				return []string{"flat:1: blob " + c.flat.Digest + ": disk check", "corruptions"}
			}},
		{name: "qcow2 corruption in the base", ref: "top:1",
			damage: func(t *testing.T, c chain) { corruptRefcounts(t, c.bases) },
			want: func(c chain) []string {
				return []string{"top:1: backing blob " + c.base.Digest + ": disk check", "corruptions"}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := setup(t)
			if tt.damage != nil {
				tt.damage(t, c)
			}
			err := c.s.Verify(ctx, mustParse(t, tt.ref))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify(%s) = %v", tt.ref, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify(%s) found nothing wrong", tt.ref)
			}
			for _, w := range tt.want(c) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Verify(%s) =\n%v\nwant it to contain %q", tt.ref, err, w)
				}
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, mustParse(t, tt.ref).Name+":") {
					t.Errorf("error line %q does not start with the ref", line)
				}
			}
		})
	}

	t.Run("not found", func(t *testing.T) {
		s := newStore(t)
		if err := s.Verify(ctx, Ref{Name: "nope", Version: "1"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("Verify(nope:1) = %v, want ErrNotFound", err)
		}
	})
}

func TestVerifyAll(t *testing.T) {
	needQemuImg(t)
	ctx := context.Background()
	s := newStore(t)
	base := addReal(t, s, "base:1", nil)
	addReal(t, s, "a:1", &base)
	addReal(t, s, "b:1", &base)
	addReal(t, s, "ok:1", nil)
	if got := s.VerifyAll(ctx); len(got) != 4 || got["base:1"] != nil || got["a:1"] != nil || got["b:1"] != nil || got["ok:1"] != nil {
		t.Fatalf("VerifyAll on an intact store = %v", got)
	}

	os.Remove(s.BlobPath(base.Digest))
	bad := filepath.Join(s.Root, "manifests", "bad")
	os.Mkdir(bad, 0o700)
	writeFile(t, filepath.Join(bad, "1.json"), "{not json")
	got := s.VerifyAll(ctx)
	want := map[string]string{
		"base:1": "base:1: blob " + base.Digest + " is missing",
		"a:1":    "a:1: backing blob " + base.Digest + " is missing",
		"b:1":    "b:1: backing blob " + base.Digest + " is missing",
		"bad:1":  "bad:1: manifest " + filepath.Join(bad, "1.json"),
		"ok:1":   "",
	}
	if len(got) != len(want) {
		t.Errorf("VerifyAll = %v, want %d results", got, len(want))
	}
	for ref, w := range want {
		err := got[ref]
		if w == "" {
			if err != nil {
				t.Errorf("%s: %v", ref, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("%s: %v, want %q", ref, err, w)
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for ref, err := range s.VerifyAll(cctx) {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled VerifyAll: %s: %v", ref, err)
		}
	}
}
