package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/proc"
)

// Lock takes the per-name lock, waiting as long as it takes. See LockContext.
func (s *Store) Lock(name string) (unlock func(), err error) {
	return s.LockContext(context.Background(), name)
}

// LockContext takes the lock that serialises changes to one image name
// (Add and Remove take it themselves), giving up when ctx ends.
//
// The lock is an flock(2) on locks/<name>.lock, so the kernel drops it when
// its holder dies, and the file records the holder (pid and start time) so
// that waiters can say who they wait for. If the lock is still held but the
// recorded process is gone (a zombie, or its pid reused, counts as gone:
// package proc decides) (the descriptor leaked into a surviving child, or a filesystem kept a
// stale lock), the file is replaced and the lock taken over.
//
// It is not reentrant: flock locks belong to open files, not processes, so
// a caller holding the lock for a name must not call Add or Remove for that
// name, or it waits for itself.
func (s *Store) LockContext(ctx context.Context, name string) (unlock func(), err error) {
	if reason := checkName(name); reason != "" {
		return nil, &kindError{fmt.Sprintf("invalid image name %q: %s", name, reason), ErrInvalidRef}
	}
	dir := s.layout().Locks()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := s.layout().Lock(name)
	delay := 5 * time.Millisecond
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("waiting for the lock on image %s: %w", name, err)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening lock: %w", err)
		}
		err = flock(f, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			// A waiter may have replaced a stale file between our open and
			// flock; a lock on the unlinked file would exclude nobody.
			if !sameFile(f, path) {
				f.Close()
				continue
			}
			f.Truncate(0)
			if _, err := f.WriteAt([]byte(proc.Self().String()+"\n"), 0); err != nil {
				flock(f, syscall.LOCK_UN)
				f.Close()
				return nil, fmt.Errorf("writing lock %s: %w", path, err)
			}
			var once sync.Once
			return func() {
				once.Do(func() {
					f.Truncate(0)
					flock(f, syscall.LOCK_UN)
					f.Close()
				})
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		holder := readHolder(f)
		pid := holder.Pid
		if pid > 0 && pid != os.Getpid() && !holder.Alive() {
			err := takeOver(dir, path, f)
			f.Close()
			if err != nil {
				return nil, err
			}
			continue
		}
		f.Close()
		select {
		case <-ctx.Done():
			holder := ""
			if pid > 0 {
				holder = fmt.Sprintf(" (held by pid %d)", pid)
			}
			return nil, fmt.Errorf("waiting for the lock on image %s%s: %w", name, holder, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// takeOver removes the stale lock file f (still open, still held by someone
// dead) so the next attempt creates a fresh one. It runs under an flock of
// the locks folder and rechecks, so two waiters cannot both remove, and one
// cannot remove the file the other has just created and locked.
func takeOver(dir, path string, f *os.File) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := flock(d, syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", dir, err)
	}
	defer flock(d, syscall.LOCK_UN)
	if !sameFile(f, path) {
		return nil // someone else already replaced it
	}
	if h := readHolder(f); h.Pid <= 0 || h.Alive() {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale lock %s: %w", path, err)
	}
	return nil
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			return err
		}
	}
}

// sameFile reports whether path still names the open file f.
func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	if err != nil {
		return false
	}
	return os.SameFile(a, b)
}

// readHolder returns the process recorded in a lock file, or a zero
// Process when there is none (the holder may be between locking and
// writing it).
func readHolder(f *os.File) proc.Process {
	buf := make([]byte, 64)
	n, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return proc.Process{}
	}
	p, _ := proc.Parse(string(buf[:n]))
	return p
}
