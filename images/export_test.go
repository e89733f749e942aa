package images

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kiln-dev/kiln/disk"
)

// damage changes a blob in place: flip a bit (same size) or truncate it.
func damage(t *testing.T, path string, truncate bool) {
	t.Helper()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(path, 0o444)
	if truncate {
		st, _ := os.Stat(path)
		if err := os.Truncate(path, st.Size()-4096); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	if err := os.WriteFile(path, b, 0o444); err != nil {
		t.Fatal(err)
	}
}

// exportLeftovers lists what is in dir besides the names given.
func exportLeftovers(t *testing.T, dir string, keep ...string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !strings.Contains(strings.Join(keep, "\x00"), e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestStoreExportDamagedBlob(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name     string
		base     bool // damage the base rather than the top
		truncate bool
		want     string
	}{
		{"top bit-flipped", false, false, "is damaged (its bytes no longer match its digest): nothing was exported"},
		{"base bit-flipped", true, false, "is damaged (its bytes no longer match its digest)"},
		{"top truncated", false, true, "bytes, but its manifest says"},
		{"base truncated", true, true, "bytes, but its manifest says"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			base := addReal(t, s, "base:1", nil)
			top := addReal(t, s, "top:1", &base)
			victim := top
			if c.base {
				victim = base
			}
			damage(t, s.BlobPath(victim.Digest), c.truncate)
			dir := t.TempDir()
			dst := filepath.Join(dir, "out.qcow2")
			_, err := s.Export(ctx, top, dst, disk.ExportOptions{Format: "qcow2"})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), victim.Digest) {
				t.Fatalf("Export = %v, want an error naming %s and containing %q", err, victim.Digest, c.want)
			}
			if left := exportLeftovers(t, dir); len(left) > 0 {
				t.Errorf("a failed export left %v", left)
			}
			// A changed size is refused by run, build and fleet up too.
			err = s.CheckUsable(top, true)
			if c.truncate && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("CheckUsable(forced) of a truncated chain = %v", err)
			}
			if !c.truncate && err != nil {
				t.Errorf("CheckUsable only compares sizes, got %v", err)
			}
		})
	}
}

func TestStoreExportDestinations(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	m := addReal(t, s, "img:1", nil)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }

	// A regular file is replaced, the sum written beside it.
	os.WriteFile(p("old.raw"), []byte("old"), 0o600)
	if _, err := s.Export(ctx, m, p("old.raw"), disk.ExportOptions{Format: "raw"}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p("old.raw")); err != nil || st.Size() < 1<<20 {
		t.Fatalf("old.raw not replaced: %v", err)
	}
	if _, err := os.Stat(p("old.raw.sha256")); err != nil {
		t.Fatal(err)
	}

	// Anything else is left exactly as it was.
	haveNode := syscall.Mknod(p("null"), syscall.S_IFCHR|0o666, (1<<8)|3) == nil
	if err := syscall.Mkfifo(p("pipe.sha256"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p("pipe"), []byte("mine"), 0o600)
	os.Mkdir(p("folder"), 0o700)
	os.WriteFile(p("target"), []byte("mine"), 0o600)
	os.Symlink(p("target"), p("link"))
	cases := []struct{ dst, want string }{
		{p("folder"), "is a folder, not a regular file"},
		{p("link"), "is a symbolic link, not a regular file"},
		{p("pipe"), "pipe.sha256 is a named pipe, not a regular file"},
		{s.BlobPath(m.Digest) + "x", "inside kiln's own folder"},
		{filepath.Join(s.Root, "manifests", "img", "1.json"), "inside kiln's own folder"},
	}
	if haveNode {
		cases = append(cases, struct{ dst, want string }{p("null"), "is a character device, not a regular file"})
	} else {
		t.Log("mknod needs root; the device node case is skipped")
	}
	before := map[string]os.FileMode{}
	for _, n := range []string{"null", "pipe.sha256", "pipe", "folder", "target", "link"} {
		if st, err := os.Lstat(p(n)); err == nil {
			before[n] = st.Mode()
		}
	}
	manifest, _ := os.ReadFile(filepath.Join(s.Root, "manifests", "img", "1.json"))
	for _, c := range cases {
		_, err := s.Export(ctx, m, c.dst, disk.ExportOptions{Format: "raw"})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("export to %s: %v, want an error containing %q", c.dst, err, c.want)
		}
	}
	for n, mode := range before {
		if st, err := os.Lstat(p(n)); err != nil || st.Mode() != mode {
			t.Errorf("%s changed: %v, %v (was %v)", n, st.Mode(), err, mode)
		}
	}
	if b, _ := os.ReadFile(p("target")); string(b) != "mine" {
		t.Error("the link's target changed")
	}
	if b, _ := os.ReadFile(filepath.Join(s.Root, "manifests", "img", "1.json")); string(b) != string(manifest) {
		t.Error("the manifest changed")
	}
	if left := exportLeftovers(t, dir, "old.raw", "old.raw.sha256", "null", "pipe", "pipe.sha256", "folder", "target", "link"); len(left) > 0 {
		t.Errorf("exports left %v", left)
	}
	if err := s.Verify(ctx, m.Ref()); err != nil {
		t.Errorf("the store was damaged: %v", err)
	}
}

// TestAddRefusesOutsideData: whoever hands the store a file (a build, an
// import, a pull from a registry), a qcow2 whose data lives in another
// file never becomes a blob.
func TestAddRefusesOutsideData(t *testing.T) {
	needQemuImg(t)
	s := newStore(t)
	dir := t.TempDir()
	host := filepath.Join(dir, "host-secret")
	os.WriteFile(host, make([]byte, 1<<20), 0o600)
	img := filepath.Join(dir, "df.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+host+",data_file_raw=on", img, "1M")
	_, err := s.Add(context.Background(), manifestFor("df:1"), img, AddOptions{KeepSource: true})
	if err == nil || !strings.Contains(err.Error(), "qcow2 external data file points at "+host) {
		t.Fatalf("Add = %v", err)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("stored %v", list)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Root, "tmp")); len(entries) != 0 {
		t.Errorf("tmp not empty: %v", entries)
	}
}
