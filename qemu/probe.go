package qemu

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/layout"
)

// probeBootSector is the probe's guest (probeguest/boot.S): it prints one
// line per stage on COM1 and exits QEMU with probeExitStatus.
//
//go:generate sh -c "cd probeguest && as --32 -o /tmp/kiln-probe-boot.o boot.S && ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o boot.bin /tmp/kiln-probe-boot.o"
//go:embed probeguest/boot.bin
var probeBootSector []byte

const (
	// probeExitStatus is QEMU's status when the guest writes 0x10 to
	// isa-debug-exit: (0x10 << 1) | 1.
	probeExitStatus = 33
	// ProbeTimeout bounds one probe. A working accelerator runs the whole
	// guest in well under a second; one that cannot run guest code spins
	// until killed.
	ProbeTimeout = 3 * time.Second
	// probeDiskSize pads the boot sector: SeaBIOS does not boot from a
	// disk of a few sectors.
	probeDiskSize = 1 << 20
)

// probeStages are the guest's lines, in the order it prints them, with what
// each proves.
var probeStages = []struct{ line, means string }{
	{"kiln-probe: real mode", "the firmware ran and loaded the boot sector"},
	{"kiln-probe: interrupt", "a timer interrupt was delivered"},
	{"kiln-probe: protected mode", "the CPU switched to protected mode"},
}

// Outcome is how one probe ended.
type Outcome string

const (
	ProbeWorks   Outcome = "works"   // the guest ran every stage and exited
	ProbeAborted Outcome = "aborted" // QEMU crashed (e.g. the MSR assertion)
	ProbeHung    Outcome = "hung"    // no exit within ProbeTimeout
	ProbeFailed  Outcome = "error"   // QEMU exited with an error of its own
)

// ProbeAttempt is one accelerator and CPU model tried on the probe guest.
type ProbeAttempt struct {
	Accel   Accel         `json:"accel"`
	CPU     string        `json:"cpu"`
	Outcome Outcome       `json:"outcome"`
	Detail  string        `json:"detail,omitempty"` // what QEMU said, or how far the guest got
	Took    time.Duration `json:"took"`
	Argv    []string      `json:"argv"` // the accelerator, CPU and machine arguments probed
}

// String is the attempt on one line, as doctor and errors show it.
func (a ProbeAttempt) String() string {
	s := fmt.Sprintf("-cpu %s: %s in %s", a.CPU, a.Outcome, a.Took.Round(10*time.Millisecond))
	if a.Detail != "" {
		s += " (" + a.Detail + ")"
	}
	return s
}

// platformArgs are the machine, accelerator and CPU arguments of c: the part
// of a VM's command line that decides whether the accelerator can run it,
// shared by Argv and the probe so the probe tests exactly what a VM gets.
func platformArgs(c Config) []string {
	machine := "q35"
	if strings.Contains(filepath.Base(c.Firmware), "secboot") {
		machine += ",smm=on" // secure-boot OVMF builds need SMM
	}
	a := []string{"-machine", machine}
	switch c.Accel {
	case KVM, HVF:
		a = append(a, "-accel", string(c.Accel))
	default:
		// Multi-threaded TCG uses one host thread per vCPU. tb-size caps
		// the translated-code cache, which QEMU otherwise sizes at 1 GiB
		// whatever the guest: a 512 MiB guest then peaks at 1.4 GiB of host
		// memory, and at 540 MiB with a 128 MiB cache, booting as fast.
		a = append(a, "-accel", fmt.Sprintf("tcg,thread=multi,tb-size=%d", tbSizeMiB(c.MemoryMiB)))
	}
	return append(a, "-cpu", c.cpuModel())
}

// cpuModel is c.CPU, or the default for its accelerator: the host's own CPU
// under KVM and HVF, and under TCG "max", every feature TCG can emulate
// (x86-64-v2 and more, which current distributions need).
func (c Config) cpuModel() string {
	switch {
	case c.CPU != "":
		return c.CPU
	case c.Accel == KVM || c.Accel == HVF:
		return "host"
	}
	return "max"
}

// probeArgv is the probe guest's command line: the VM's platform, a small
// memory, the boot sector as a read-only virtio disk (as VM disks are
// attached), COM1 to serial and the debug-exit device.
func probeArgv(c Config, disk, serial string) []string {
	a := platformArgs(c)
	return append(a, "-m", "64", "-nodefaults", "-no-user-config", "-display", "none",
		"-drive", "file="+optEscape(disk)+",format=raw,if=virtio,readonly=on",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
		"-chardev", "file,id=serial0,path="+optEscape(serial), "-serial", "chardev:serial0")
}

// Probe runs the probe guest under c's accelerator and CPU model (Binary,
// Accel, CPU and Firmware are used) and says whether it ran, within timeout.
func Probe(ctx context.Context, c Config, timeout time.Duration) ProbeAttempt {
	att := ProbeAttempt{Accel: c.Accel, CPU: c.cpuModel(), Argv: platformArgs(c)}
	start := time.Now()
	defer func() { att.Took = time.Since(start) }()
	dir, err := os.MkdirTemp("", "kiln-probe-")
	if err != nil {
		att.Outcome, att.Detail = ProbeFailed, err.Error()
		return att
	}
	defer os.RemoveAll(dir)
	disk, serial := filepath.Join(dir, "boot.img"), layout.VM(dir).Serial()
	img := make([]byte, probeDiskSize)
	copy(img, probeBootSector)
	if err := os.WriteFile(disk, img, 0o600); err != nil {
		att.Outcome, att.Detail = ProbeFailed, err.Error()
		return att
	}
	bin, err := findBinary(c.Binary)
	if err != nil {
		att.Outcome, att.Detail = ProbeFailed, err.Error()
		return att
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(pctx, bin, probeArgv(c, disk, serial)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	console, _ := os.ReadFile(serial)
	run := probeRun{stderr: stderr.String(), serial: string(console), timedOut: pctx.Err() != nil && ctx.Err() == nil}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			run.signal = ws.Signal()
		} else {
			run.status = ee.ExitCode()
		}
	case ctx.Err() != nil:
		att.Outcome, att.Detail = ProbeFailed, ctx.Err().Error()
		return att
	default: // could not start QEMU at all
		att.Outcome, att.Detail = ProbeFailed, err.Error()
		return att
	}
	att.Outcome, att.Detail = run.classify(timeout)
	return att
}

// probeRun is what one probe's QEMU did.
type probeRun struct {
	status   int            // exit status when it exited
	signal   syscall.Signal // the signal that ended it, if one did
	timedOut bool           // killed at the timeout
	stderr   string
	serial   string // the guest's console
}

// classify decides the outcome from what QEMU and the guest printed and how
// QEMU ended.
func (r probeRun) classify(timeout time.Duration) (Outcome, string) {
	msg := qemuMessage(r.stderr)
	switch {
	case r.timedOut:
		return ProbeHung, fmt.Sprintf("no exit after %s; %s", timeout, r.progress())
	case r.signal == syscall.SIGKILL && msg == "":
		// Killed by someone else (the OOM killer): not the accelerator's fault
		// as far as we can tell.
		return ProbeFailed, "QEMU was killed"
	case r.signal != 0 || r.status == 134 || strings.Contains(r.stderr, "Assertion") || strings.Contains(r.stderr, "failed to set MSR"):
		if msg == "" {
			msg = "QEMU crashed"
			if r.signal != 0 {
				msg += " (" + r.signal.String() + ")"
			}
		}
		return ProbeAborted, msg
	case r.status == probeExitStatus && r.reached() == len(probeStages):
		return ProbeWorks, ""
	case r.status == probeExitStatus:
		return ProbeFailed, "QEMU exited as the guest's last step does, but " + r.progress()
	}
	if msg == "" {
		msg = fmt.Sprintf("QEMU exited with status %d", r.status)
	}
	return ProbeFailed, msg
}

// reached is how many stages the guest printed, in order.
func (r probeRun) reached() int {
	n, rest := 0, r.serial
	for _, st := range probeStages {
		i := strings.Index(rest, st.line)
		if i < 0 {
			break
		}
		rest = rest[i+len(st.line):]
		n++
	}
	return n
}

// progress says how far the guest got.
func (r probeRun) progress() string {
	n := r.reached()
	switch {
	case n == 0:
		return "the guest printed nothing: its firmware never ran"
	case n == len(probeStages):
		return "the guest ran every stage"
	}
	return fmt.Sprintf("the guest stopped after stage %d of %d (%s)", n, len(probeStages), probeStages[n-1].means)
}

// qemuMessage picks QEMU's own error from its output: the first line that
// names an error, else the first line, without the binary's name prefix.
func qemuMessage(out string) string {
	var first string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "qemu-system-x86_64: terminating on signal") {
			continue
		}
		if i := strings.Index(line, ": "); i > 0 && strings.HasPrefix(line, "qemu-system") {
			line = line[i+2:]
		}
		if first == "" {
			first = line
		}
		l := strings.ToLower(line)
		if strings.Contains(l, "error") || strings.Contains(l, "fail") || strings.Contains(l, "could not") || strings.Contains(l, "assertion") {
			return truncate(line, 200)
		}
	}
	return truncate(first, 200)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
