package images

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/proc"
)

// deadPid returns the pid of a process that has exited and been reaped.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if proc.Running(pid) {
		t.Skipf("pid %d was reused already", pid)
	}
	return pid
}

// holdLock locks path through a separate open file, as another process
// would, recording pid as the holder.
func holdLock(t *testing.T, path string, pid int) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(pid)+"\n"), 0)
	return f
}

func lockHolder(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func TestLock(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	tests := []struct {
		name     string
		setup    func(t *testing.T, path string)
		wantLock bool
	}{
		{"free", func(t *testing.T, path string) {}, true},
		{"file of a dead pid, unlocked", func(t *testing.T, path string) {
			os.WriteFile(path, []byte(strconv.Itoa(deadPid(t))), 0o600)
		}, true},
		{"stale: locked, holder pid dead", func(t *testing.T, path string) {
			holdLock(t, path, deadPid(t))
		}, true},
		{"held by a live process", func(t *testing.T, path string) {
			holdLock(t, path, os.Getpid())
		}, false},
		{"stale: locked, holder's pid now another process", func(t *testing.T, path string) {
			other := exec.Command("sleep", "60")
			if err := other.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { other.Process.Kill(); other.Wait() })
			f := holdLock(t, path, other.Process.Pid)
			f.Truncate(0)
			f.WriteAt([]byte(strconv.Itoa(other.Process.Pid)+" 1\n"), 0) // started at tick 1: not this sleep
		}, true},
		{"held by a live process with its start time", func(t *testing.T, path string) {
			f := holdLock(t, path, os.Getpid())
			f.Truncate(0)
			f.WriteAt([]byte(proc.Self().String()+"\n"), 0)
		}, false},
		{"held, no pid written yet", func(t *testing.T, path string) {
			f := holdLock(t, path, 0)
			f.Truncate(0)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			path := filepath.Join(s.Root, "locks", "hello.lock")
			tt.setup(t, path)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			unlock, err := s.LockContext(ctx, "hello")
			if !tt.wantLock {
				if err == nil {
					unlock()
					t.Fatal("took a lock held by a live process")
				}
				if !strings.Contains(err.Error(), "waiting for the lock on image hello") {
					t.Errorf("error %q does not say what it waited for", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LockContext: %v", err)
			}
			if got, _, _ := strings.Cut(lockHolder(t, path), " "); got != me {
				t.Errorf("lock file says %q, want our pid %s", got, me)
			}
			unlock()
			unlock() // idempotent
			if got := lockHolder(t, path); got != "" {
				t.Errorf("lock file after unlock says %q", got)
			}
		})
	}
}

func TestLockExcludes(t *testing.T) {
	s := newStore(t)
	unlock, err := s.Lock("hello")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func())
	go func() {
		u, err := s.Lock("hello")
		if err != nil {
			t.Error(err)
		}
		got <- u
	}()
	select {
	case <-got:
		t.Fatal("second Lock did not wait")
	case <-time.After(100 * time.Millisecond):
	}
	// Other names are independent.
	other, err := s.LockContext(context.Background(), "world")
	if err != nil {
		t.Fatal(err)
	}
	other()
	unlock()
	select {
	case u := <-got:
		u()
	case <-time.After(5 * time.Second):
		t.Fatal("second Lock not granted after unlock")
	}
	if _, err := s.Lock("../x"); err == nil {
		t.Error("Lock accepted a path as a name")
	}
}
