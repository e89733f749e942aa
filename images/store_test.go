package images

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeQcow2 writes a file that looks enough like a qcow2 image for the
// store: a v3 header with the virtual size and, optionally, a backing file.
func writeQcow2(t *testing.T, path string, vsize uint64, payload string, backing string) string {
	t.Helper()
	buf := make([]byte, 1024)
	copy(buf, "QFI\xfb")
	be := binary.BigEndian
	be.PutUint32(buf[4:], 3)
	if backing != "" {
		be.PutUint64(buf[8:], 512)
		be.PutUint32(buf[16:], uint32(len(backing)))
		copy(buf[512:], backing)
	}
	be.PutUint32(buf[20:], 16)
	be.PutUint64(buf[24:], vsize)
	be.PutUint32(buf[100:], 104) // header length: a valid version 3 header
	buf = append(buf, payload...)
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	return digestOf(buf)
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func manifestFor(ref string) Manifest {
	r, err := ParseRef(ref)
	if err != nil {
		panic(err)
	}
	return Manifest{
		Name: r.Name, Version: r.Version, Format: "qcow2", KilnVersion: "test",
		Base:       BaseInfo{Source: "image:debian:12"},
		BuildStart: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		BuildEnd:   time.Date(2025, 1, 1, 0, 5, 0, 0, time.UTC),
	}
}

// snapshot records every file and folder of the store except locks/, which
// may gain lock files without the store changing.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if rel == "locks" {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			out[rel] = "dir " + info.Mode().String()
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out[rel] = fmt.Sprintf("%v %s", info.Mode(), digestOf(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(before, after map[string]string) string {
	var diffs []string
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if after[k] != before[k] {
			diffs = append(diffs, fmt.Sprintf("%s: %q -> %q", k, before[k], after[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if _, ok := before[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: new %q", k, after[k]))
		}
	}
	return strings.Join(diffs, "\n")
}

func TestOpenCreatesFolders(t *testing.T) {
	s := newStore(t)
	for _, d := range []string{"blobs/sha256", "manifests", "logs", "tmp", "locks"} {
		fi, err := os.Stat(filepath.Join(s.Root, d))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v", d, fi, err)
		}
	}
	if _, err := Open(""); err == nil {
		t.Error("Open(\"\") succeeded")
	}
	t.Chdir(t.TempDir())
	s, err := Open("rel")
	if err != nil || !filepath.IsAbs(s.Root) {
		t.Errorf("Open(rel) = %+v, %v; want an absolute root", s, err)
	}
}

func TestAddGetListResolve(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	src := t.TempDir()
	digests := map[string]string{}
	for i, ref := range []string{"hello:1.0.0", "hello:1.10.0", "hello:1.9.0", "world:1", "hello:1.10.0-rc1"} {
		path := filepath.Join(src, fmt.Sprint(i)+".qcow2")
		digests[ref] = writeQcow2(t, path, 10<<30, "payload "+ref, "")
		log := writeFile(t, filepath.Join(src, fmt.Sprint(i)+".log"), "log of "+ref)
		m, err := s.Add(ctx, manifestFor(ref), path, AddOptions{Logs: map[string]string{"build.log": log}})
		if err != nil {
			t.Fatalf("Add %s: %v", ref, err)
		}
		if m.Digest != digests[ref] || m.SchemaVersion != 1 || m.VirtualSize != 10<<30 || m.FileSize != int64(1024+len("payload "+ref)) {
			t.Errorf("Add %s returned %+v", ref, m)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("src %s still there after a moving Add: %v", path, err)
		}
		got, err := s.Get(m.Ref())
		if err != nil {
			t.Fatal(err)
		}
		if !equalManifest(got, m) {
			t.Errorf("Get %s = %+v, want %+v", ref, got, m)
		}
		blob := s.BlobPath(m.Digest)
		fi, err := os.Stat(blob)
		if err != nil || fi.Mode().Perm() != 0o444 {
			t.Errorf("blob %s: %v %v", blob, fi, err)
		}
		data, _ := os.ReadFile(blob)
		if digestOf(data) != m.Digest {
			t.Errorf("blob content does not match its digest")
		}
		logPath := s.LogPath(m.Ref(), "build.log")
		fi, err = os.Stat(logPath)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("log %s: %v %v", logPath, fi, err)
		}
		if data, _ := os.ReadFile(logPath); string(data) != "log of "+ref {
			t.Errorf("log content %q", data)
		}
	}

	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, m := range list {
		refs = append(refs, m.Ref().String())
	}
	want := []string{"hello:1.0.0", "hello:1.9.0", "hello:1.10.0-rc1", "hello:1.10.0", "world:1"}
	if !slices.Equal(refs, want) {
		t.Errorf("List = %v, want %v", refs, want)
	}

	for in, want := range map[string]string{"hello": "hello:1.10.0", "world": "world:1", "hello:1.9.0": "hello:1.9.0"} {
		r, _ := ParseRef(in)
		m, err := s.Resolve(r)
		if err != nil || m.Ref().String() != want {
			t.Errorf("Resolve(%s) = %s, %v; want %s", in, m.Ref(), err, want)
		}
		if m, err := s.Get(r); err != nil || m.Ref().String() != want {
			t.Errorf("Get(%s) = %s, %v; want %s", in, m.Ref(), err, want)
		}
	}

	for _, tt := range []struct {
		ref Ref
		msg string
	}{
		{Ref{Name: "hello", Version: "9.9"}, `image hello:9.9 not found; see "kiln images ls"`},
		{Ref{Name: "nope", Version: ""}, `image nope not found; see "kiln images ls"`},
	} {
		_, err := s.Resolve(tt.ref)
		if !errors.Is(err, ErrNotFound) || err.Error() != tt.msg {
			t.Errorf("Resolve(%s) error = %v, want %q matching ErrNotFound", tt.ref, err, tt.msg)
		}
	}
	if _, err := s.Get(Ref{Name: "../x", Version: "1"}); !errors.Is(err, ErrInvalidRef) {
		t.Errorf("Get of a path-like ref: %v", err)
	}
}

func equalManifest(a, b Manifest) bool {
	ja, _ := encodeManifest(a)
	jb, _ := encodeManifest(b)
	return string(ja) == string(jb)
}

func TestResolveTiesByBuildEnd(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	for i, v := range []string{"1.0", "1-0"} { // equal in version order
		m := manifestFor("hello:" + v)
		m.BuildEnd = time.Date(2025, 1, 2-i, 0, 0, 0, 0, time.UTC) // "1.0" is newer
		path := filepath.Join(dir, v)
		writeQcow2(t, path, 1, v, "")
		if _, err := s.Add(context.Background(), m, path, AddOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := s.Resolve(Ref{Name: "hello"})
	if err != nil || m.Version != "1.0" {
		t.Errorf("Resolve = %s, %v; want hello:1.0 (later BuildEnd)", m.Ref(), err)
	}
}

func TestAddExistingAndForce(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	first := filepath.Join(dir, "first.qcow2")
	d1 := writeQcow2(t, first, 1<<30, "first", "")
	oldLog := writeFile(t, filepath.Join(dir, "serial.log"), "old serial")
	if _, err := s.Add(ctx, manifestFor("hello:1.0.0"), first, AddOptions{Logs: map[string]string{"serial.log": oldLog}}); err != nil {
		t.Fatal(err)
	}

	second := filepath.Join(dir, "second.qcow2")
	d2 := writeQcow2(t, second, 2<<30, "second", "")
	_, err := s.Add(ctx, manifestFor("hello:1.0.0"), second, AddOptions{})
	want := "image hello:1.0.0 already exists; choose another version"
	if !errors.Is(err, ErrExists) || err.Error() != want {
		t.Fatalf("second Add error = %v, want %q", err, want)
	}
	if _, err := os.Stat(second); err != nil {
		t.Errorf("refused Add consumed its src: %v", err)
	}

	newLog := writeFile(t, filepath.Join(dir, "build.log"), "new build")
	m, err := s.Add(ctx, manifestFor("hello:1.0.0"), second, AddOptions{Force: true, Logs: map[string]string{"build.log": newLog}})
	if err != nil {
		t.Fatalf("forced Add: %v", err)
	}
	got, err := s.Get(Ref{Name: "hello", Version: "1.0.0"})
	if err != nil || got.Digest != d2 || m.Digest != d2 || got.VirtualSize != 2<<30 {
		t.Errorf("after Force: %+v, %v", got, err)
	}
	if _, err := os.Stat(s.BlobPath(d1)); err != nil {
		t.Errorf("old blob removed before gc: %v", err)
	}
	if _, err := os.Stat(s.LogPath(got.Ref(), "serial.log")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old log kept after Force: %v", err)
	}
	if data, _ := os.ReadFile(s.LogPath(got.Ref(), "build.log")); string(data) != "new build" {
		t.Errorf("new log = %q", data)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Root, "tmp")); len(entries) != 0 {
		t.Errorf("tmp not empty: %v", entries)
	}
}

func TestAddKeepSourceAndSparse(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.raw")
	f, _ := os.Create(src)
	f.WriteString("boot sector")
	f.WriteAt([]byte("end"), 8<<20) // an 8 MiB hole
	f.Close()
	os.Chmod(src, 0o640)
	data, _ := os.ReadFile(src)

	m := manifestFor("disk:1")
	m.Format = ""
	got, err := s.Add(context.Background(), m, src, AddOptions{KeepSource: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.Format != "raw" || got.VirtualSize != int64(len(data)) || got.Digest != digestOf(data) {
		t.Errorf("manifest %+v", got)
	}
	fi, err := os.Stat(src)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("KeepSource src: %v %v", fi, err)
	}
	bfi, _ := os.Stat(s.BlobPath(got.Digest))
	if os.SameFile(fi, bfi) {
		t.Error("KeepSource blob shares the user's inode")
	}
	blob, _ := os.ReadFile(s.BlobPath(got.Digest))
	if digestOf(blob) != got.Digest {
		t.Error("copied blob differs")
	}
	if st, ok := bfi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 > 4<<20 {
		t.Logf("blob not sparse (%d bytes allocated); filesystem without holes?", st.Blocks*512)
	}
}

func TestAddSharedBlobs(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	d := writeQcow2(t, a, 1, "same", "")
	if _, err := s.Add(ctx, manifestFor("a:1"), a, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(dir, "b")
	writeQcow2(t, b, 1, "same", "")
	if _, err := s.Add(ctx, manifestFor("b:1"), b, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	// Adding a stored blob under a third name must not move it away.
	if _, err := s.Add(ctx, manifestFor("c:1"), s.BlobPath(d), AddOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.BlobPath(d)); err != nil {
		t.Fatalf("blob gone after being added from itself: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Root, "blobs", "sha256")); len(entries) != 1 {
		t.Errorf("want one shared blob, have %v", entries)
	}
}

func TestAddChecksTheFile(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	baseDigest := writeQcow2(t, base, 1<<30, "base", "")
	if _, err := s.Add(ctx, manifestFor("base:1"), base, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	baseHex := strings.TrimPrefix(baseDigest, "sha256:")
	otherDigest := "sha256:" + strings.Repeat("ab", 32)

	tests := []struct {
		name    string
		setup   func(path string) Manifest
		wantErr string
	}{
		{"raw declared, qcow2 given", func(p string) Manifest {
			writeQcow2(t, p, 1, "x", "")
			m := manifestFor("x:1")
			m.Format = "raw"
			return m
		}, "format is raw, but the file is a qcow2 image"},
		{"qcow2 declared, raw given", func(p string) Manifest {
			writeFile(t, p, "just bytes")
			return manifestFor("x:1")
		}, "no qcow2 header"},
		{"unknown format", func(p string) Manifest {
			writeFile(t, p, "just bytes")
			m := manifestFor("x:1")
			m.Format = "vmdk"
			return m
		}, `unsupported format "vmdk"`},
		{"digest mismatch", func(p string) Manifest {
			writeQcow2(t, p, 1, "x", "")
			m := manifestFor("x:1")
			m.Digest = otherDigest
			return m
		}, "but the manifest says"},
		{"overlay without backing_digest", func(p string) Manifest {
			writeQcow2(t, p, 1, "x", "/home/u/.cache/kiln/base.qcow2")
			return manifestFor("x:1")
		}, "has no backing_digest"},
		{"backing_digest without backing file", func(p string) Manifest {
			writeQcow2(t, p, 1, "x", "")
			m := manifestFor("x:1")
			m.BackingDigest = baseDigest
			return m
		}, "has no backing file"},
		{"backing file outside the store", func(p string) Manifest {
			writeQcow2(t, p, 1, "x", "/tmp/base.qcow2")
			m := manifestFor("x:1")
			m.BackingDigest = baseDigest
			return m
		}, "not the store blob"},
		{"backing blob missing", func(p string) Manifest {
			writeQcow2(t, p, 1, "x", strings.TrimPrefix(otherDigest, "sha256:"))
			m := manifestFor("x:1")
			m.BackingDigest = otherDigest
			return m
		}, "is not in the store"},
		{"src missing", func(p string) Manifest { return manifestFor("x:1") }, "no such file"},
		{"src is a folder", func(p string) Manifest {
			os.Mkdir(p, 0o700)
			return manifestFor("x:1")
		}, "not a regular file"},
		{"bad log name", func(p string) Manifest {
			writeQcow2(t, p, 1, "x", "")
			return manifestFor("x:1")
		}, "invalid log name"},
		{"missing log", func(p string) Manifest {
			writeQcow2(t, p, 1, "x", "")
			return manifestFor("x:1")
		}, "copying log serial.log"},
		{"no version", func(p string) Manifest {
			writeQcow2(t, p, 1, "x", "")
			return manifestFor("x")
		}, "version is empty"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot(t, s.Root)
			p := filepath.Join(dir, fmt.Sprint("src", i))
			m := tt.setup(p)
			var o AddOptions
			switch tt.name {
			case "bad log name":
				o.Logs = map[string]string{"../x": p}
			case "missing log":
				o.Logs = map[string]string{"serial.log": filepath.Join(dir, "nope.log")}
			}
			_, err := s.Add(ctx, m, p, o)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Add = %v, want error containing %q", err, tt.wantErr)
			}
			if d := diffSnapshots(before, snapshot(t, s.Root)); d != "" {
				t.Errorf("failed Add changed the store:\n%s", d)
			}
		})
	}

	// The good case: an overlay whose backing file is the base blob's bare
	// hex name, relative to the blobs folder.
	p := filepath.Join(dir, "overlay")
	writeQcow2(t, p, 1<<30, "overlay", baseHex)
	m := manifestFor("overlay:1")
	m.BackingDigest = baseDigest
	m.Parent = &Parent{Ref: "base:1", Digest: baseDigest}
	if _, err := s.Add(ctx, m, p, AddOptions{}); err != nil {
		t.Fatalf("overlay Add: %v", err)
	}
}

// TestAddAtomic makes Add fail at each step and checks that the store, and
// src, are exactly as before: for a new version and for a forced replacement.
func TestAddAtomic(t *testing.T) {
	for _, force := range []bool{false, true} {
		for _, stage := range []string{"staged", "blob", "logs", "manifest", "cancelled"} {
			t.Run(fmt.Sprintf("force=%v/%s", force, stage), func(t *testing.T) {
				s := newStore(t)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				dir := t.TempDir()
				if force {
					old := filepath.Join(dir, "old")
					writeQcow2(t, old, 1, "old", "")
					log := writeFile(t, filepath.Join(dir, "old.log"), "old log")
					if _, err := s.Add(ctx, manifestFor("hello:1"), old, AddOptions{Logs: map[string]string{"build.log": log, "serial.log": log}}); err != nil {
						t.Fatal(err)
					}
				}
				// Another version of the same name, so name folders exist in
				// one case and not the other.
				src := filepath.Join(dir, "new.qcow2")
				writeQcow2(t, src, 1, "new", "")
				os.Chmod(src, 0o640)
				srcBefore, _ := os.ReadFile(src)
				log := writeFile(t, filepath.Join(dir, "new.log"), "new log")

				injected := errors.New("injected failure")
				s.hook = func(st string) error {
					if st == stage {
						return injected
					}
					if stage == "cancelled" && st == "staged" {
						cancel()
					}
					return nil
				}
				before := snapshot(t, s.Root)
				_, err := s.Add(ctx, manifestFor("hello:1"), src, AddOptions{Force: force, Logs: map[string]string{"build.log": log}})
				wantErr := injected
				if stage == "cancelled" {
					wantErr = context.Canceled
				}
				if !errors.Is(err, wantErr) {
					t.Fatalf("Add = %v, want %v", err, wantErr)
				}
				if d := diffSnapshots(before, snapshot(t, s.Root)); d != "" {
					t.Errorf("failed Add changed the store:\n%s", d)
				}
				fi, err := os.Stat(src)
				if err != nil || fi.Mode().Perm() != 0o640 {
					t.Fatalf("src after failed Add: %v, %v", fi, err)
				}
				if data, _ := os.ReadFile(src); string(data) != string(srcBefore) {
					t.Error("src content changed")
				}
				if st := fi.Sys().(*syscall.Stat_t); st.Nlink != 1 {
					t.Errorf("src has %d links after a failed Add", st.Nlink)
				}

				// And the store still works.
				s.hook = nil
				if _, err := s.Add(context.Background(), manifestFor("hello:1"), src, AddOptions{Force: force}); err != nil {
					t.Fatalf("Add after a failed one: %v", err)
				}
			})
		}
	}
}

func TestAddConcurrent(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	const n = 8
	var srcs []string
	for i := range n {
		p := filepath.Join(dir, fmt.Sprint(i))
		writeQcow2(t, p, 1, fmt.Sprint("racer ", i), "")
		srcs = append(srcs, p)
	}
	errs := make([]error, n)
	results := make([]Manifest, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = s.Add(context.Background(), manifestFor("race:1"), srcs[i], AddOptions{})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Errorf("two Adds won: %d and %d", winner, i)
			}
			winner = i
		case !errors.Is(err, ErrExists):
			t.Errorf("Add %d: %v, want ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no Add won")
	}
	m, err := s.Get(Ref{Name: "race", Version: "1"})
	if err != nil || m.Digest != results[winner].Digest {
		t.Errorf("stored %+v, %v; winner wrote %s", m, err, results[winner].Digest)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Root, "blobs", "sha256")); len(entries) != 1 {
		t.Errorf("blobs: %v, want only the winner's", entries)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Root, "tmp")); len(entries) != 0 {
		t.Errorf("tmp not empty: %v", entries)
	}
}

func TestRemove(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "x")
	d := writeQcow2(t, src, 1, "x", "")
	log := writeFile(t, filepath.Join(dir, "log"), "log")
	r := Ref{Name: "hello", Version: "1"}
	if _, err := s.Add(context.Background(), manifestFor("hello:1"), src, AddOptions{Logs: map[string]string{"build.log": log}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(r); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(r); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove: %v", err)
	}
	if _, err := os.Stat(s.LogPath(r, "build.log")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log after Remove: %v", err)
	}
	if _, err := os.Stat(s.BlobPath(d)); err != nil {
		t.Errorf("blob removed before gc: %v", err)
	}
	for _, sub := range []string{"manifests/hello", "logs/hello"} {
		if _, err := os.Stat(filepath.Join(s.Root, sub)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("empty %s left: %v", sub, err)
		}
	}
	if err := s.Remove(r); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v", err)
	}
	if err := s.Remove(Ref{Name: "hello"}); err == nil || !strings.Contains(err.Error(), "without a version") {
		t.Errorf("Remove without version: %v", err)
	}
}

func TestListReportsDamage(t *testing.T) {
	s := newStore(t)
	src := filepath.Join(t.TempDir(), "x")
	writeQcow2(t, src, 1, "x", "")
	if _, err := s.Add(context.Background(), manifestFor("good:1"), src, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(s.Root, "manifests", "bad")
	os.Mkdir(bad, 0o700)
	writeFile(t, filepath.Join(bad, "1.json"), "{not json")
	writeFile(t, filepath.Join(bad, ".1.json.tmp-123"), "staging leftover, ignored")
	list, err := s.List()
	if err == nil || !strings.Contains(err.Error(), filepath.Join(bad, "1.json")) {
		t.Errorf("List error = %v, want one naming the bad manifest", err)
	}
	if len(list) != 1 || list[0].Name != "good" {
		t.Errorf("List = %+v, want the good manifest", list)
	}
	// A manifest filed under the wrong name is damage, not a second image.
	data, _ := os.ReadFile(s.manifestPath(Ref{Name: "good", Version: "1"}))
	os.WriteFile(filepath.Join(bad, "1.json"), data, 0o600)
	if _, err := s.Get(Ref{Name: "bad", Version: "1"}); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("Get of a misfiled manifest: %v", err)
	}
}

func TestPathsOfStore(t *testing.T) {
	s := &Store{Root: "/s"}
	tests := []struct{ got, want string }{
		{s.BlobPath(testDigest), "/s/blobs/sha256/" + strings.TrimPrefix(testDigest, "sha256:")},
		{s.BlobPath("sha256:../../etc/passwd"), ""},
		{s.BlobPath(""), ""},
		{s.LogPath(Ref{Name: "a", Version: "1"}, "build.log"), "/s/logs/a/1/build.log"},
		{s.LogPath(Ref{Name: "a", Version: "1"}, "../x"), ""},
		{s.LogPath(Ref{Name: "a", Version: ""}, "build.log"), ""},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}

func TestAddMovesWhatItMay(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()

	// A build output staged in the store's own tmp/ is moved, not copied.
	out := filepath.Join(s.Root, "tmp", "build-output.qcow2")
	writeQcow2(t, out, 1, "built", "")
	before, _ := os.Stat(out)
	m, err := s.Add(ctx, manifestFor("built:1"), out, AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(s.BlobPath(m.Digest))
	if !os.SameFile(before, after) {
		t.Error("same-filesystem Add copied instead of moving")
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Root, "tmp")); len(entries) != 0 {
		t.Errorf("tmp not empty: %v", entries)
	}

	// A symlink is followed for the content; only the link goes away, and
	// the blob is a copy, never the (shared) target.
	dir := t.TempDir()
	target := filepath.Join(dir, "target.qcow2")
	writeQcow2(t, target, 1, "target", "")
	link := filepath.Join(dir, "link.qcow2")
	os.Symlink(target, link)
	m, err = s.Add(ctx, manifestFor("linked:1"), link, AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(link); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("symlink src kept: %v", err)
	}
	tfi, err := os.Stat(target)
	if err != nil {
		t.Fatalf("symlink target removed: %v", err)
	}
	if bfi, _ := os.Lstat(s.BlobPath(m.Digest)); os.SameFile(tfi, bfi) || !bfi.Mode().IsRegular() {
		t.Errorf("blob is %v, want a regular copy", bfi.Mode())
	}
}
