package workdir

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kiln-dev/kiln/internal/proc"
	"github.com/kiln-dev/kiln/layout"
)

// ClaimedError says another live process holds a claim.
type ClaimedError struct {
	Key string
	Pid int // 0 when the holder did not record itself yet
}

func (e *ClaimedError) Error() string {
	if e.Pid > 0 {
		return fmt.Sprintf("%s is held by kiln pid %d", e.Key, e.Pid)
	}
	return fmt.Sprintf("%s is held by another kiln", e.Key)
}

// Claim takes the exclusive claim named key (e.g. "build hello:1.0.0")
// without waiting: a second claimant gets a *ClaimedError naming the
// holder's pid. The claim is an flock(2), so the kernel drops it when its
// holder dies, even by kill -9; nothing stale can block the next claimant.
func Claim(parent, key string) (release func(), err error) {
	dir := layout.Home{Runtime: parent}.Claims()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, claimFileName(key))
	var f *os.File
	for {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("claim %s: %w", key, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			holder, _ := proc.ReadFile(path)
			f.Close()
			return nil, &ClaimedError{Key: key, Pid: holder.Pid}
		}
		// The holder before us may have unlinked the file between our open
		// and our lock; a lock on an unlinked file excludes nobody.
		fi, err1 := f.Stat()
		pi, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(fi, pi) {
			break
		}
		f.Close()
	}
	f.Truncate(0)
	f.WriteAt([]byte(proc.Self().String()+"\n"), 0)
	return func() {
		// Unlink while still holding the lock, so a waiter that opened the
		// old file retries on a fresh one rather than sharing a dead lock.
		os.Remove(path)
		f.Close()
	}, nil
}

// claimFileName turns a key into a safe file name.
func claimFileName(key string) string {
	var b strings.Builder
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String() + ".lock"
}
