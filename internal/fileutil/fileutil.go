// Package fileutil copies and moves files so that a failure never leaves a
// partial file under the name asked for.
package fileutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
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
func WriteAtomic(path string, data []byte, perm os.FileMode) error {
	return WriteAtomicVia(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*", path, data, perm)
}

// WriteAtomicVia is WriteAtomic staging in tmpDir (on path's filesystem)
// under a name made from pattern (os.CreateTemp's), for callers whose
// leftovers must be recognisable, such as the image store's. The folder's
// rename is synced too, best effort.
func WriteAtomicVia(tmpDir, pattern, path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(tmpDir, pattern)
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
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(filepath.Dir(path)); derr == nil {
		d.Sync() // makes the rename durable where the filesystem allows it
		d.Close()
	}
	return nil
}

// ErrNotRegular is OpenRegular's error for a path that is not a regular
// file.
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens path for reading only if it is a regular file (after
// symbolic links). The open itself cannot block: a FIFO someone left in
// kiln's folders would otherwise hang the reader until a writer came, and
// a device would be read forever.
func OpenRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: path, Err: ErrNotRegular}
	}
	return f, nil
}

// ReadRegular is os.ReadFile for a regular file of at most limit bytes
// (see OpenRegular); a larger file is an error rather than read whole.
func ReadRegular(path string, limit int64) ([]byte, error) {
	f, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("larger than %d bytes", limit)}
	}
	return b, nil
}
