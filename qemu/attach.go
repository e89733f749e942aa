package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kiln-dev/kiln/layout"
)

// Attach takes over a QEMU process that another process started, such as
// a fleet supervisor that was killed and restarted: the VM keeps running
// and this Machine drives it from now on (QMP, Shutdown, Kill, Done).
//
// pid must be a live QEMU whose command line names dir's QMP socket. The
// process is pinned by a pidfd as soon as Attach opens it, so once Attach
// returns, a later reuse of pid can never be mistaken for it; callers that
// know the process's start time check it after Attach to rule out a reuse
// before. Attach returns once the QMP socket has answered its handshake.
// ports maps guest ports to the host ports QEMU forwards.
//
// An attached QEMU is not kiln's child: its exit status is unknown, so
// Killed is always false and Err only says that it exited.
func Attach(ctx context.Context, dir string, pid int, ports map[int]int, serialLog string) (*Machine, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("attach vm: no pid recorded for %s", dir)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("attach vm: process %d: %w", pid, err)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	sock := layout.VM(dir).QMP()
	if err != nil || !strings.Contains(string(cmdline), sock) {
		unix.Close(fd)
		return nil, fmt.Errorf("attach vm: process %d is not the QEMU of %s", pid, dir)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attach vm: %w", err)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	m := &Machine{
		cfg:    Config{Dir: dir, SerialLog: serialLog},
		args:   args,
		ports:  map[int]int{},
		cmd:    &exec.Cmd{Path: args[0], Args: args, Process: proc},
		output: &tailBuffer{max: stderrKeep},
		done:   make(chan struct{}),
	}
	for g, h := range ports {
		m.ports[g] = h
	}
	go m.watchPidfd(fd)
	mon, err := m.dialQMP(ctx)
	if err != nil {
		return nil, fmt.Errorf("attach vm: QMP of %s: %w", dir, err)
	}
	m.monMu.Lock()
	m.mon = mon
	m.monMu.Unlock()
	return m, nil
}

// watchPidfd closes done when the attached process exits: a pidfd becomes
// readable then, whoever reaps the process.
func (m *Machine) watchPidfd(fd int) {
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if err == nil || !errors.Is(err, unix.EINTR) {
			break
		}
	}
	m.err = errors.New("qemu: the attached process exited")
	close(m.done)
	m.monMu.Lock()
	if m.mon != nil {
		m.mon.close()
		m.mon = nil
	}
	m.monMu.Unlock()
}
