// Package workdir owns the per-command work folders under kiln's runtime
// folder (a build's or a run's overlay, seed, keys and QEMU sockets), so that
// work a killed kiln left behind is found and removed by the next command,
// and so that two commands that must not overlap (two builds of one
// name:version) exclude each other.
//
// Each folder records its owner (pid and process start time, so a reused
// pid is not mistaken for the owner). A folder whose owner is gone is
// stale: its QEMU processes are stopped and the folder removed. A folder
// kept on purpose (--on-error=abort) stays while its QEMU runs.
package workdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/fileutil"
	"github.com/kiln-dev/kiln/layout"
)

// Create makes a new work folder parent/prefix-XXXX (0700) owned by this
// process.
func Create(parent, prefix string) (string, error) {
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(parent, prefix+"-")
	if err != nil {
		return "", err
	}
	start, err := startTime(os.Getpid())
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	owner := fmt.Sprintf("%d %s\n", os.Getpid(), start)
	if err := os.WriteFile(layout.Work(dir).Owner(), []byte(owner), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// Keep marks dir as kept on purpose: Reclaim leaves it while a QEMU in it
// still runs, and removes it once that has stopped.
func Keep(dir string) error {
	return os.WriteFile(layout.Work(dir).Kept(), nil, 0o600)
}

// Stale is a work folder Reclaim removed.
type Stale struct {
	Dir    string
	Owner  int   // pid of the kiln that made it (gone)
	Killed []int // QEMU processes stopped
}

func (s Stale) String() string {
	msg := fmt.Sprintf("%s (left by kiln pid %d", filepath.Base(s.Dir), s.Owner)
	if len(s.Killed) > 0 {
		msg += fmt.Sprintf("; stopped QEMU pid %s", joinInts(s.Killed))
	}
	return msg + ")"
}

// Reclaim removes the work folders under parent whose owner has died: it
// stops the QEMU processes started in them, waits for those to exit, and
// deletes the folders. Folders of live owners, folders without an owner file
// (not kiln's work) and kept folders whose QEMU still runs are left alone.
func Reclaim(parent string) ([]Stale, error) {
	entries, err := os.ReadDir(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Stale
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		pid, alive, ok := owner(dir)
		if !ok || alive {
			continue
		}
		qemus := qemuProcesses(dir)
		if len(qemus) > 0 && exists(layout.Work(dir).Kept()) {
			continue // kept for debugging and still running
		}
		s := Stale{Dir: dir, Owner: pid}
		for _, q := range qemus {
			if syscall.Kill(q, syscall.SIGKILL) == nil {
				s.Killed = append(s.Killed, q)
			}
		}
		waitGone(s.Killed, 10*time.Second)
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}

// owner reads dir's owner: its pid and whether that process (the same one,
// not a reuse of its pid) still runs. ok is false when dir has no owner file.
func owner(dir string) (pid int, alive, ok bool) {
	b, err := fileutil.ReadRegular(layout.Work(dir).Owner(), 4096)
	if err != nil {
		return 0, false, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, false, false
	}
	pid, err = strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return 0, false, false
	}
	start, err := startTime(pid)
	return pid, err == nil && start == f[1], true
}

// qemuProcesses returns the live QEMU processes whose pid files are in dir
// or one level below, checking each pid's command line names the folder so
// a reused pid is never killed.
func qemuProcesses(dir string) []int {
	files, _ := filepath.Glob(filepath.Join(dir, layout.PidFile))
	more, _ := filepath.Glob(filepath.Join(dir, "*", layout.PidFile))
	var pids []int
	for _, f := range append(files, more...) {
		b, err := fileutil.ReadRegular(f, 4096)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || !Running(pid) {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(cmdline), filepath.Dir(f)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Running reports whether pid is a live process. A zombie (exited, not yet
// reaped by its parent) counts as gone: it holds nothing but its pid.
func Running(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	st, ok := statFields(string(b))
	return ok && st[0] != "Z" && st[0] != "X"
}

// startTime is the process's start time in clock ticks since boot, which
// with the pid identifies one process for the machine's uptime.
func startTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	st, ok := statFields(string(b))
	// Fields after the command: state(3) ... starttime(22).
	if !ok || len(st) < 20 {
		return "", fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return st[19], nil
}

// statFields splits /proc/PID/stat after the command name, which is in
// parentheses and may itself hold spaces or parentheses.
func statFields(s string) ([]string, bool) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, false
	}
	f := strings.Fields(s[i+1:])
	return f, len(f) > 0
}

func waitGone(pids []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for Running(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ", ")
}

// ProcessStart is pid's start time (clock ticks since boot, as a string):
// recorded with a pid, it tells the same process from a later one that was
// given the same pid.
func ProcessStart(pid int) (string, error) { return startTime(pid) }
