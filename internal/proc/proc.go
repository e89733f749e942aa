// Package proc is kiln's one answer to "does the process recorded earlier
// still run": a process is a pid plus its start time (from /proc/PID/stat),
// so a pid the kernel has since given to another process counts as gone,
// and so does a zombie (exited, not yet reaped: it holds nothing but its
// pid). Pid files record both ("<pid> <start>\n"). It also stops the QEMU
// of a VM folder that a dead kiln left running: the one stale-QEMU killer
// that work folders and fleets share. Linux only (/proc).
package proc

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/fileutil"
	"github.com/kiln-dev/kiln/layout"
)

// Process is one process for the machine's uptime. Start is its start time
// in clock ticks since boot, as /proc/PID/stat gives it; "" when unknown
// (a file written by an older kiln, QEMU's own pid file), and then only the
// pid is checked.
type Process struct {
	Pid   int
	Start string
}

// Self is the calling process.
func Self() Process {
	p, _ := Of(os.Getpid())
	return p
}

// Of is the process now running as pid.
func Of(pid int) (Process, error) {
	start, err := StartTime(pid)
	if err != nil {
		return Process{}, err
	}
	return Process{Pid: pid, Start: start}, nil
}

// Alive reports whether p still runs: its pid is a live process (not a
// zombie) and, when Start is known, the very process recorded, not a later
// one given the same pid.
func (p Process) Alive() bool {
	st, ok := stat(p.Pid)
	if !ok || st[0] == "Z" || st[0] == "X" {
		return false
	}
	return p.Start == "" || (len(st) >= 20 && st[19] == p.Start)
}

// String is the pid file's line: "<pid> <start>", or "<pid>".
func (p Process) String() string {
	if p.Start == "" {
		return strconv.Itoa(p.Pid)
	}
	return strconv.Itoa(p.Pid) + " " + p.Start
}

// Parse reads what String wrote. A pid alone (QEMU's -pidfile, an older
// kiln's file) gives a Process without Start.
func Parse(s string) (Process, error) {
	f := strings.Fields(s)
	if len(f) < 1 || len(f) > 2 {
		return Process{}, fmt.Errorf("not a pid: %q", s)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return Process{}, fmt.Errorf("not a pid: %q", f[0])
	}
	p := Process{Pid: pid}
	if len(f) == 2 {
		if _, err := strconv.ParseUint(f[1], 10, 64); err != nil {
			return Process{}, fmt.Errorf("not a start time: %q", f[1])
		}
		p.Start = f[1]
	}
	return p, nil
}

// WriteFile records p in the pid file path (0600), whole or not at all.
func WriteFile(path string, p Process) error {
	return fileutil.WriteAtomic(path, []byte(p.String()+"\n"), 0o600)
}

// ReadFile reads the pid file path.
func ReadFile(path string) (Process, error) {
	b, err := fileutil.ReadRegular(path, 4096)
	if err != nil {
		return Process{}, err
	}
	return Parse(string(b))
}

// Running reports whether pid is a live process; a zombie counts as gone.
func Running(pid int) bool { return Process{Pid: pid}.Alive() }

// StartTime is pid's start time (clock ticks since boot, as a string).
func StartTime(pid int) (string, error) {
	st, ok := stat(pid)
	// Fields after the command: state(3) ... starttime(22).
	if !ok || len(st) < 20 {
		return "", fmt.Errorf("no process %d", pid)
	}
	return st[19], nil
}

// Stat is /proc/PID/stat's fields after the command name (so the first
// is field 3, the state), for callers that need more of them.
func Stat(pid int) ([]string, error) {
	f, ok := stat(pid)
	if !ok {
		return nil, fmt.Errorf("no process %d", pid)
	}
	return f, nil
}

// stat is /proc/PID/stat's fields after the command name, which is in
// parentheses and may itself hold spaces or parentheses.
func stat(pid int) ([]string, bool) {
	if pid <= 0 {
		return nil, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, false
	}
	f := strings.Fields(s[i+1:])
	return f, len(f) > 0
}

// QEMU is the live QEMU process of the VM folder vm, by the pid file QEMU
// wrote there. Its command line must name a file in the folder (QEMU's
// names its pid file and sockets there), so a pid since given to another
// process, even the QEMU of a folder whose name starts the same, is never
// taken for it.
func QEMU(vm layout.VM) (pid int, ok bool) {
	p, err := ReadFile(vm.Pid())
	if err != nil || !p.Alive() {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid))
	if err != nil || !strings.Contains(string(cmdline), string(vm)+string(filepath.Separator)) {
		return 0, false
	}
	return p.Pid, true
}

// StopQEMUs kills the live QEMU of each VM folder (SIGKILL: its owner is
// gone, nothing on the disk is kept) and waits up to timeout for them to
// exit, since a large guest takes a moment to unmap and its disk is not
// free until then. It returns the pids it killed.
func StopQEMUs(vms []layout.VM, timeout time.Duration) []int {
	var killed []int
	for _, vm := range vms {
		if pid, ok := QEMU(vm); ok {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed = append(killed, pid)
			}
		}
	}
	WaitGone(killed, timeout)
	return killed
}

// WaitGone waits until none of pids runs, or timeout has passed.
func WaitGone(pids []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for Running(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}
