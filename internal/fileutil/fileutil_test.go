package fileutil

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCopy(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	write(t, src, "data")
	if err := Copy(src, dst, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := read(t, dst); got != "data" {
		t.Errorf("dst = %q", got)
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := Copy(src, dst, 0o600); !errors.Is(err, os.ErrExist) {
		t.Errorf("Copy over an existing file: %v, want ErrExist", err)
	}
	if err := CopyIfMissing(src, dst, 0o600); err != nil {
		t.Errorf("CopyIfMissing with dst present: %v", err)
	}
}

func TestCopyFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	// A folder opens but cannot be read as a file: the copy fails midway.
	dst := filepath.Join(dir, "dst")
	if err := Copy(dir, dst, 0o600); err == nil {
		t.Fatal("copying a folder succeeded")
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dst left behind: %v", err)
	}
	write(t, dst, "old")
	if err := CopyAtomic(dir, dst, 0o600); err == nil {
		t.Fatal("CopyAtomic of a folder succeeded")
	}
	if got := read(t, dst); got != "old" {
		t.Errorf("dst = %q after a failed CopyAtomic, want the old file", got)
	}
	if _, err := os.Stat(dst + ".partial"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("partial file left behind: %v", err)
	}
}

func TestCopyAtomicReplaces(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	write(t, src, "new")
	write(t, dst, "old")
	write(t, dst+".partial", "stale")
	if err := CopyAtomic(src, dst, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := read(t, dst); got != "new" {
		t.Errorf("dst = %q", got)
	}
}

func TestMove(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	write(t, src, "data")
	if err := Move(src, dst, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := read(t, dst); got != "data" {
		t.Errorf("dst = %q", got)
	}
	if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("src still there: %v", err)
	}
}
