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
	"time"

	"github.com/kiln-dev/kiln/internal/proc"
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
	self, err := proc.Of(os.Getpid())
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	if err := proc.WriteFile(layout.Work(dir).Owner(), self); err != nil {
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
		vms := layout.Work(dir).VMs()
		if exists(layout.Work(dir).Kept()) && anyQEMU(vms) {
			continue // kept for debugging and still running
		}
		s := Stale{Dir: dir, Owner: pid, Killed: proc.StopQEMUs(vms, 10*time.Second)}
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
	p, err := proc.ReadFile(layout.Work(dir).Owner())
	if err != nil || p.Start == "" {
		return 0, false, false
	}
	return p.Pid, p.Alive(), true
}

// anyQEMU reports whether a QEMU of one of vms still runs.
func anyQEMU(vms []layout.VM) bool {
	for _, vm := range vms {
		if _, ok := proc.QEMU(vm); ok {
			return true
		}
	}
	return false
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
