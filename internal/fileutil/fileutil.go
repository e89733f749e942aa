// Package fileutil copies and moves files so that a failure never leaves a
// partial file under the name asked for.
package fileutil

import (
	"errors"
	"io"
	"os"
	"path/filepath"
)

// Copy writes src's bytes to dst, a new file made with perm; an existing
// dst is an error (os.ErrExist). dst is synced before Copy returns, and
// removed when any step fails.
func Copy(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}

// CopyAtomic copies src to dst through dst+".partial" and a rename, so dst
// is either the old file or the whole new one, whatever happens.
func CopyAtomic(src, dst string, perm os.FileMode) error {
	tmp := dst + ".partial"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := Copy(src, tmp, perm); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// CopyIfMissing copies src to dst unless dst exists already.
func CopyIfMissing(src, dst string, perm os.FileMode) error {
	err := Copy(src, dst, perm)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	return err
}

// Move renames src to dst, or copies it (atomically, with perm) when they
// are on different filesystems and then removes src.
func Move(src, dst string, perm os.FileMode) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	if err := CopyAtomic(src, dst, perm); err != nil {
		return err
	}
	return os.Remove(src)
}

// WriteAtomic writes data to path through a temporary file in the same
// folder, synced and renamed over path, so readers see the old file or the
// whole new one.
func WriteAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
