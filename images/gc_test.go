package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func blobNames(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Root, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, "sha256:"+e.Name())
	}
	return out
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	type fixture struct {
		s                                   *Store
		base, mid, top, flat, gone, goneTop Manifest
	}
	// base <- mid <- top; flat; gone (removed), goneTop (an overlay on
	// gone's blob, removed too).
	setup := func(t *testing.T) fixture {
		s := newStore(t)
		f := fixture{s: s}
		f.base = addFake(t, s, "base:1", nil)
		f.mid = addFake(t, s, "mid:1", &f.base)
		f.top = addFake(t, s, "top:1", &f.mid)
		f.flat = addFake(t, s, "flat:1", nil)
		f.gone = addFake(t, s, "gone:1", nil)
		f.goneTop = addFake(t, s, "gonetop:1", &f.gone)
		for _, r := range []Ref{f.gone.Ref(), f.goneTop.Ref()} {
			if err := s.Remove(r); err != nil {
				t.Fatal(err)
			}
		}
		return f
	}
	tests := []struct {
		name   string
		before func(t *testing.T, f fixture) // more changes before GC
		roots  func(f fixture) map[string]string
		dryRun bool
		// removed lists manifests whose blobs must go ("gone", "gonetop",
		// "base"...), by name.
		removed []string
	}{
		{name: "unreferenced blobs go", removed: []string{"gone", "gonetop"}},
		{name: "dry run removes nothing", dryRun: true, removed: []string{"gone", "gonetop"}},
		{name: "chain kept through removed manifests",
			before: func(t *testing.T, f fixture) {
				// Only top's manifest is left of the chain: its blob's
				// backing chain keeps mid's and base's blobs.
				for _, r := range []Ref{f.base.Ref(), f.mid.Ref()} {
					if err := f.s.Remove(r); err != nil {
						t.Fatal(err)
					}
				}
			},
			removed: []string{"gone", "gonetop"}},
		{name: "chain goes with its last user",
			before: func(t *testing.T, f fixture) {
				for _, r := range []Ref{f.top.Ref(), f.mid.Ref(), f.base.Ref()} {
					if err := f.s.Remove(r); err != nil {
						t.Fatal(err)
					}
				}
			},
			removed: []string{"gone", "gonetop", "base", "mid", "top"}},
		{name: "root keeps a blob",
			roots:   func(f fixture) map[string]string { return map[string]string{f.gone.Digest: "fleet web (web-3)"} },
			removed: []string{"gonetop"}},
		{name: "root keeps its chain",
			before: func(t *testing.T, f fixture) {
				for _, r := range []Ref{f.top.Ref(), f.mid.Ref(), f.base.Ref()} {
					if err := f.s.Remove(r); err != nil {
						t.Fatal(err)
					}
				}
			},
			roots:   func(f fixture) map[string]string { return map[string]string{f.top.Digest: "fleet web (web-1)"} },
			removed: []string{"gone", "gonetop"}},
		{name: "root not in the store is fine",
			roots:   func(f fixture) map[string]string { return map[string]string{testDigest: "fleet x"} },
			removed: []string{"gone", "gonetop"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			digests := map[string]string{}
			for _, m := range []Manifest{f.base, f.mid, f.top, f.flat, f.gone, f.goneTop} {
				digests[m.Name] = m.Digest
			}
			if tt.before != nil {
				tt.before(t, f)
			}
			var roots map[string]string
			if tt.roots != nil {
				roots = tt.roots(f)
			}
			all := blobNames(t, f.s)
			rep, err := f.s.GC(ctx, roots, tt.dryRun)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, n := range tt.removed {
				want = append(want, digests[n])
			}
			slices.Sort(want)
			var got []string
			var freed int64
			for _, it := range rep.Removed {
				got = append(got, it.Digest)
				freed += it.Size
				if it.Size <= 0 {
					t.Errorf("removed %s with size %d", it.Digest, it.Size)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("Removed = %v\nwant %v", got, want)
			}
			if rep.Freed != freed || rep.Kept != len(all)-len(want) {
				t.Errorf("Freed = %d (items: %d), Kept = %d (want %d)", rep.Freed, freed, rep.Kept, len(all)-len(want))
			}
			left := blobNames(t, f.s)
			for _, d := range all {
				shouldGo := slices.Contains(want, d) && !tt.dryRun
				if slices.Contains(left, d) == shouldGo {
					t.Errorf("blob %s: present=%v after GC (dry run %v)", d, !shouldGo, tt.dryRun)
				}
			}
			// Whatever is left still verifies as a chain: nothing needed went.
			for _, m := range []Manifest{f.top, f.mid, f.base, f.flat} {
				if _, err := f.s.Get(m.Ref()); err != nil {
					continue
				}
				for d := m.Digest; d != ""; {
					if !slices.Contains(left, d) {
						t.Errorf("%s: blob %s of its chain is gone", m.Ref(), d)
					}
					info, err := probeImage(f.s.BlobPath(d))
					if err != nil || info.backingFile == "" {
						break
					}
					d = "sha256:" + info.backingFile
				}
			}
		})
	}
}

func TestGCRefuses(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		setup   func(t *testing.T, s *Store) map[string]string
		wantErr string
	}{
		{"bad root", func(t *testing.T, s *Store) map[string]string {
			return map[string]string{"sha256:nope": "fleet web (web-1)"}
		}, "gc: the root used by fleet web (web-1) is not a blob digest"},
		{"damaged manifest", func(t *testing.T, s *Store) map[string]string {
			bad := filepath.Join(s.Root, "manifests", "bad")
			os.Mkdir(bad, 0o700)
			writeFile(t, filepath.Join(bad, "1.json"), "{not json")
			return nil
		}, "nothing was removed, as a manifest that cannot be read may still need its blobs"},
		{"unreadable blob header", func(t *testing.T, s *Store) map[string]string {
			m := addFake(t, s, "x:1", nil)
			patchFile(t, s.BlobPath(m.Digest), 4, []byte{0, 0, 0, 9}) // qcow2 version 9
			return nil
		}, "gc: cannot read the backing file of blob"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			addFake(t, s, "keep:1", nil)
			gone := addFake(t, s, "gone:1", nil)
			if err := s.Remove(gone.Ref()); err != nil {
				t.Fatal(err)
			}
			roots := tt.setup(t, s)
			before := blobNames(t, s)
			_, err := s.GC(ctx, roots, false)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("GC = %v, want error containing %q", err, tt.wantErr)
			}
			if after := blobNames(t, s); !slices.Equal(before, after) {
				t.Errorf("refused GC removed blobs: %v -> %v", before, after)
			}
		})
	}
}

func TestGCStaleTmp(t *testing.T) {
	s := newStore(t)
	dead := deadPid(t)
	me := os.Getpid()
	old := time.Now().Add(-2 * time.Hour)
	tmp := filepath.Join(s.Root, "tmp")
	tests := []struct {
		name  string
		dir   bool
		old   bool
		stale bool
	}{
		{fmt.Sprintf("blob-%d-ABCDEF234567", dead), false, true, true},
		{fmt.Sprintf("blob-%d-ABCDEF234567", me), false, true, false},     // alive
		{fmt.Sprintf("oldlogs-%d-QWERTY", dead), true, false, false},      // fresh
		{fmt.Sprintf("logs-%d-123456", dead), true, true, true},           // staged logs
		{fmt.Sprintf(".1.0-rc1.json.tmp-%d-42", dead), false, true, true}, // atomic write
		{fmt.Sprintf("import-%d-XYZ.qcow2.partial", dead), false, true, true},
		{fmt.Sprintf("build-web-2-%d.qcow2", dead), false, true, true},
		{"build-web-2-notapid.qcow2", false, true, false},
		{"somebodys-file", false, true, false}, // no pid: never touched
		{"notes.txt", false, true, false},
	}
	var wantStale []string
	for _, tt := range tests {
		p := filepath.Join(tmp, tt.name)
		if tt.dir {
			os.Mkdir(p, 0o700)
			writeFile(t, filepath.Join(p, "build.log"), "12345")
		} else {
			writeFile(t, p, "12345")
		}
		if tt.old {
			os.Chtimes(p, old, old)
		}
		if tt.stale {
			wantStale = append(wantStale, p)
		}
	}
	slices.Sort(wantStale)

	for _, dry := range []bool{true, false} {
		rep, err := s.GC(context.Background(), nil, dry)
		if err != nil {
			t.Fatal(err)
		}
		got := slices.Sorted(slices.Values(rep.Stale))
		if !slices.Equal(got, wantStale) {
			t.Errorf("dry=%v: Stale = %v\nwant %v", dry, got, wantStale)
		}
		if rep.Freed != int64(5*len(wantStale)) {
			t.Errorf("dry=%v: Freed = %d, want %d", dry, rep.Freed, 5*len(wantStale))
		}
	}
	for _, tt := range tests {
		_, err := os.Lstat(filepath.Join(tmp, tt.name))
		if exists := err == nil; exists == tt.stale {
			t.Errorf("%s: exists=%v after GC", tt.name, exists)
		}
	}
}

func TestTmpOwner(t *testing.T) {
	tests := []struct {
		name string
		want int
	}{
		{"blob-123-ABCDEFGHIJKLMNOPQRSTUVWXYZ", 123},
		{"oldlogs-7-AB", 7},
		{"logs-99-123456", 99},
		{".1.0-rc1.json.tmp-55-777", 55},
		{".a.json.tmp-55-777", 55},
		{"import-31-ABC.qcow2", 31},
		{"import-31-ABC.qcow2.partial", 31},
		{"build-hello-4242.qcow2", 4242},
		{"build-web-2-4242.qcow2", 4242},
		{"build-web-2-4242.qcow2.partial", 4242},
		{"build-web.qcow2", 0},
		{"blob-0-AB", 0},
		{"blob--AB", 0},
		{"blob-12345678901-AB", 0}, // not a pid
		{"a-b", 0},
		{"plain", 0},
		{"x-1x-y", 0},
	}
	for _, tt := range tests {
		if got := tmpOwner(tt.name); got != tt.want {
			t.Errorf("tmpOwner(%q) = %d, want %d", tt.name, got, tt.want)
		}
	}
	// Every name the store itself makes carries its pid.
	s := &Store{Root: "/s"}
	if got := tmpOwner(filepath.Base(s.tmpName("blob"))); got != os.Getpid() {
		t.Errorf("tmpName is not owned by this process: %d", got)
	}
}

// TestGCExcludesAdd checks both directions of the GC lock: an Add cannot
// commit while GC runs, and GC cannot run while an Add commits.
func TestGCExcludesAdd(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	addFake(t, s, "a:1", nil)
	src := filepath.Join(t.TempDir(), "b")
	writeQcow2(t, src, 1, "b", "")

	var addErr error
	s.hook = func(stage string) error {
		if stage == "gc-marked" {
			// Long enough for the work before the lock on a loaded machine;
			// the Add must then be waiting for the GC lock, not still staging.
			c, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, addErr = s.Add(c, manifestFor("b:1"), src, AddOptions{KeepSource: true})
		}
		return nil
	}
	if _, err := s.GC(ctx, nil, false); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(addErr, context.DeadlineExceeded) || !strings.Contains(addErr.Error(), "waiting for garbage collection to finish") {
		t.Errorf("Add during GC = %v, want it to wait for GC", addErr)
	}

	var gcErr error
	s.hook = func(stage string) error {
		if stage == "blob" {
			c, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, gcErr = s.GC(c, nil, false)
		}
		return nil
	}
	m, err := s.Add(ctx, manifestFor("b:1"), src, AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(gcErr, context.DeadlineExceeded) || !strings.Contains(gcErr.Error(), "waiting for another garbage collection, or an image being stored") {
		t.Errorf("GC during Add's commit = %v, want it to wait", gcErr)
	}
	s.hook = nil
	if rep, err := s.GC(ctx, nil, false); err != nil || len(rep.Removed) != 0 || rep.Kept != 2 {
		t.Errorf("GC after Add = %+v, %v; want both blobs kept", rep, err)
	}
	if _, err := os.Stat(s.BlobPath(m.Digest)); err != nil {
		t.Error(err)
	}

	// Two GCs: the second waits for the first.
	s.hook = func(stage string) error {
		if stage == "gc-marked" {
			c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			_, gcErr = s.GC(c, nil, false)
		}
		return nil
	}
	gcErr = nil
	if _, err := s.GC(ctx, nil, true); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(gcErr, context.DeadlineExceeded) {
		t.Errorf("second GC = %v, want it to wait", gcErr)
	}
}

func TestBlobDigest(t *testing.T) {
	s := newStore(t)
	hex := strings.TrimPrefix(testDigest, "sha256:")
	link := filepath.Join(t.TempDir(), "store")
	if err := os.Symlink(s.Root, link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want string
	}{
		{s.BlobPath(testDigest), testDigest},
		{hex, testDigest},
		{filepath.Join(link, "blobs", "sha256", hex), testDigest},
		{filepath.Join(s.Root, "blobs", "sha256", "..", "sha256", hex), testDigest},
		{filepath.Join(t.TempDir(), hex), ""},
		{filepath.Join(s.Root, "blobs", "sha256", "base.qcow2"), ""},
		{filepath.Join(s.Root, "blobs", "sha256", strings.ToUpper(hex)), ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, ok := s.BlobDigest(tt.path)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("BlobDigest(%q) = %q, %v; want %q", tt.path, got, ok, tt.want)
		}
	}
}
