package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/kiln-dev/kiln/internal/fileutil"
	"github.com/kiln-dev/kiln/layout"
)

// ErrNotRunning is returned by QMP calls once the QEMU process has exited.
var ErrNotRunning = errors.New("qemu: VM is not running")

const (
	// startAttempts bounds retries after a host port turned out to be taken.
	startAttempts = 8
	// startTimeout bounds QEMU's own initialisation (not the guest's boot):
	// it is generous because a loaded host with many VMs starting is slow.
	startTimeout = 60 * time.Second
	// stderrKeep is how much of QEMU's most recent output is kept.
	stderrKeep = 64 << 10
)

// Machine is one running QEMU process. All methods are safe for concurrent use.
type Machine struct {
	cfg    Config
	args   []string // binary and argv
	ports  map[int]int
	cmd    *exec.Cmd
	output *tailBuffer
	done   chan struct{}
	err    error // set before done is closed

	monMu sync.Mutex
	mon   *monitor // persistent QMP connection, nil until (re)dialled
}

// monitor wraps the go-qemu monitor so it is disconnected exactly once.
type monitor struct {
	*qmp.SocketMonitor
	once sync.Once
}

func (mo *monitor) close() { mo.once.Do(func() { _ = mo.Disconnect() }) }

// Start launches QEMU for c and returns once QEMU has initialised and its
// QMP socket answers — not when the guest has booted. The VM lives under
// ctx: cancelling ctx kills it. Host ports for Forwards with HostPort 0 are
// chosen at random and QEMU itself binds them; if one is taken, QEMU is
// started again with fresh ports (up to 8 attempts), so concurrent Starts
// never share a port. A taken port the caller fixed is an error.
//
// QEMU runs in its own process group, so Ctrl-C in the terminal reaches
// kiln only; callers must Shutdown or Kill every Machine they start.
func Start(ctx context.Context, c Config) (*Machine, error) {
	c = c.withDefaults()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validate(c); err != nil {
		return nil, err
	}
	bin, err := findBinary(c.Binary)
	if err != nil {
		return nil, fmt.Errorf("start vm: %w", err)
	}
	sock := layout.VM(c.Dir).QMP()
	if conn, err := net.DialTimeout("unix", sock, 200*time.Millisecond); err == nil {
		conn.Close()
		return nil, fmt.Errorf("start vm: a VM is already running in %s (its QMP socket answers)", c.Dir)
	}
	if vars, split := splitFirmware(c.Firmware); split {
		if err := fileutil.CopyIfMissing(vars, layout.VM(c.Dir).EFIVars(), 0o600); err != nil {
			return nil, fmt.Errorf("start vm: UEFI variables for %s: %w", c.Firmware, err)
		}
	}

	pick := c.pickPorts
	if pick == nil {
		pick = randomPorts
	}
	var avoid []int // host ports that QEMU failed to bind
	for attempt := 1; ; attempt++ {
		hostPorts, picked := resolvePorts(c.Forwards, pick, avoid)
		m, err := launch(ctx, c, bin, hostPorts)
		if err == nil {
			return m, nil
		}
		var fe *forwardError
		if !errors.As(err, &fe) {
			return nil, err
		}
		if fe.port != 0 && !slices.Contains(picked, fe.port) {
			return nil, fmt.Errorf("start vm: host port %d is already in use: %w", fe.port, err)
		}
		if len(picked) == 0 || attempt == startAttempts {
			return nil, fmt.Errorf("start vm: no free host port after %d attempts: %w", attempt, err)
		}
		if fe.port != 0 {
			avoid = append(avoid, fe.port)
		}
	}
}

// findBinary resolves Config.Binary ("" = qemu-system-x86_64 from PATH).
func findBinary(name string) (string, error) {
	if name == "" {
		name = "qemu-system-x86_64"
	}
	bin, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found (install qemu-system-x86 on Debian/Ubuntu, qemu on macOS): %w", name, err)
	}
	return bin, nil
}

func validate(c Config) error {
	if c.Dir == "" {
		return errors.New("start vm: no run folder (Config.Dir)")
	}
	if st, err := os.Stat(c.Dir); err != nil {
		return fmt.Errorf("start vm: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("start vm: %s is not a folder", c.Dir)
	}
	// sun_path holds 108 bytes including the terminating NUL.
	if sock := layout.VM(c.Dir).QMP(); len(sock) > 107 {
		return fmt.Errorf("start vm: run folder path too long for a unix socket (%d bytes): %s", len(sock), sock)
	}
	for what, p := range map[string]string{"disk": c.Disk, "seed": c.Seed, "firmware": c.Firmware} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("start vm: %s: %w", what, err)
		}
	}
	if c.DiskFormat != "qcow2" && c.DiskFormat != "raw" {
		return fmt.Errorf("start vm: disk format %q: use qcow2 or raw", c.DiskFormat)
	}
	switch c.Accel {
	case KVM, HVF, TCG:
	case "":
		return errors.New("start vm: no accelerator chosen (Config.Accel; see Selector.Choose)")
	default:
		return fmt.Errorf("start vm: unknown accelerator %q (use kvm, hvf or tcg)", c.Accel)
	}
	guests := map[int]bool{}
	hosts := map[int]bool{}
	for _, f := range c.Forwards {
		if f.GuestPort < 1 || f.GuestPort > 65535 || f.HostPort < 0 || f.HostPort > 65535 {
			return fmt.Errorf("start vm: invalid port forward %d->%d", f.HostPort, f.GuestPort)
		}
		if guests[f.GuestPort] {
			return fmt.Errorf("start vm: guest port %d forwarded twice", f.GuestPort)
		}
		if f.HostPort != 0 && hosts[f.HostPort] {
			return fmt.Errorf("start vm: host port %d forwarded twice", f.HostPort)
		}
		guests[f.GuestPort], hosts[f.HostPort] = true, true
	}
	return nil
}

// resolvePorts fills in host ports the caller left at 0 and reports which
// ones were picked (only those may be retried).
func resolvePorts(fw []Forward, pick func(int, []int) []int, avoid []int) (all, picked []int) {
	all = make([]int, len(fw))
	n := 0
	taken := slices.Clone(avoid)
	for i, f := range fw {
		all[i] = f.HostPort
		if f.HostPort == 0 {
			n++
		} else {
			taken = append(taken, f.HostPort)
		}
	}
	if n == 0 {
		return all, nil
	}
	picked = pick(n, taken)
	j := 0
	for i := range all {
		if all[i] == 0 {
			all[i] = picked[j]
			j++
		}
	}
	return all, picked
}

// forwardError is a QEMU start that failed because a host port was taken.
type forwardError struct {
	port int // 0 if QEMU did not say which
	err  error
}

func (e *forwardError) Error() string { return e.err.Error() }
func (e *forwardError) Unwrap() error { return e.err }

// launch runs one QEMU attempt and waits for its QMP greeting. QEMU sets up
// netdevs (binding host forwards) before it starts the QMP monitor, so a
// greeting means every forward is bound; a bind failure makes QEMU exit.
func launch(ctx context.Context, c Config, bin string, hostPorts []int) (*Machine, error) {
	argv := Argv(c, hostPorts)
	_ = os.Remove(layout.VM(c.Dir).QMP())
	_ = os.Remove(layout.VM(c.Dir).Pid())
	// QEMU creates the console log with the umask's mode; the console can
	// show what provisioning printed, so make it private first (QEMU keeps
	// an existing file's mode when it truncates it).
	if f, err := os.OpenFile(c.serialLog(), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600); err == nil {
		f.Chmod(0o600)
		f.Close()
	}

	m := &Machine{
		cfg:    c,
		args:   append([]string{bin}, argv...),
		ports:  map[int]int{},
		output: &tailBuffer{max: stderrKeep},
		done:   make(chan struct{}),
	}
	for i, f := range c.Forwards {
		m.ports[f.GuestPort] = hostPorts[i]
	}
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Stdout = m.output
	cmd.Stderr = m.output
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	m.cmd = cmd
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start vm: %w", err)
	}
	go m.wait()

	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		mon, err := m.dialQMP(sctx)
		if err == nil {
			m.monMu.Lock()
			select {
			case <-m.done: // exited right after the handshake; wait() has run
				mon.close()
			default:
				m.mon = mon
			}
			m.monMu.Unlock()
			return m, nil
		}
		var exited bool
		select {
		case <-m.done:
			exited = true
		case <-sctx.Done():
		case <-time.After(10 * time.Millisecond):
			continue
		}
		_ = m.Kill()
		switch {
		case exited:
			if port, failed := failedForwardPort(m.output.String()); failed {
				return nil, &forwardError{port: port, err: m.Err()}
			}
			return nil, fmt.Errorf("start vm: %w", m.Err())
		case ctx.Err() != nil:
			return nil, fmt.Errorf("start vm: %w", ctx.Err())
		default:
			return nil, fmt.Errorf("start vm: QEMU did not answer on %s within %v: %s",
				layout.QMPFile, startTimeout, trimOutput(m.output.String()))
		}
	}
}

func (m *Machine) wait() {
	err := m.cmd.Wait()
	if err != nil {
		if out := trimOutput(m.output.String()); out != "" {
			err = fmt.Errorf("qemu: %w: %s", err, out)
		} else {
			err = fmt.Errorf("qemu: %w", err)
		}
	}
	m.err = err
	close(m.done)
	m.monMu.Lock()
	if m.mon != nil {
		m.mon.close()
		m.mon = nil
	}
	m.monMu.Unlock()
}

// dialQMP connects and completes the QMP handshake. go-qemu's Connect has
// no timeout and cannot be interrupted without racing it, so on ctx expiry
// the handshake is left to finish (or fail when QEMU exits) in the
// background and its connection is closed then.
func (m *Machine) dialQMP(ctx context.Context) (*monitor, error) {
	sock := layout.VM(m.cfg.Dir).QMP()
	sm, err := qmp.NewSocketMonitor("unix", sock, time.Second)
	if err != nil {
		return nil, err
	}
	res := make(chan error, 1)
	go func() { res <- sm.Connect() }()
	select {
	case err := <-res:
		if err != nil {
			_ = sm.Disconnect()
			return nil, fmt.Errorf("qmp handshake: %w", err)
		}
		return &monitor{SocketMonitor: sm}, nil
	case <-ctx.Done():
		go func() { <-res; _ = sm.Disconnect() }()
		return nil, ctx.Err()
	case <-m.done:
		go func() { <-res; _ = sm.Disconnect() }()
		return nil, ErrNotRunning
	}
}

// monitor returns the QMP connection, re-dialling if an earlier command
// dropped it. QEMU serves one QMP client at a time, so one is kept open.
func (m *Machine) monitor(ctx context.Context) (*monitor, error) {
	m.monMu.Lock()
	defer m.monMu.Unlock()
	select {
	case <-m.done:
		return nil, ErrNotRunning
	default:
	}
	if m.mon == nil {
		mon, err := m.dialQMP(ctx)
		if err != nil {
			return nil, err
		}
		m.mon = mon
	}
	return m.mon, nil
}

func (m *Machine) dropMonitor(mon *monitor) {
	m.monMu.Lock()
	if m.mon == mon {
		m.mon = nil
	}
	m.monMu.Unlock()
	mon.close()
}

// QMP runs one QMP command (args may be nil) and returns its "return"
// value. A QMP error from QEMU comes back as an error with QEMU's text.
func (m *Machine) QMP(ctx context.Context, execute string, args any) (json.RawMessage, error) {
	cmd, err := json.Marshal(qmp.Command{Execute: execute, Args: args})
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", execute, err)
	}
	mon, err := m.monitor(ctx)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", execute, err)
	}
	type result struct {
		out []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		out, err := mon.Run(cmd)
		ch <- result{out, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		m.dropMonitor(mon) // closing the connection makes Run return
		<-ch
		return nil, fmt.Errorf("qmp %s: %w", execute, ctx.Err())
	}
	if r.err != nil {
		// Cheap to re-dial, and a broken connection must not be reused.
		m.dropMonitor(mon)
		select {
		case <-m.done:
			return nil, fmt.Errorf("qmp %s: %w", execute, ErrNotRunning)
		default:
		}
		return nil, fmt.Errorf("qmp %s: %w", execute, r.err)
	}
	var resp struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(r.out, &resp); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", execute, err)
	}
	return resp.Return, nil
}

// Status is QEMU's run state from query-status, e.g. "running", "paused",
// "prelaunch" (started with -S) or "shutdown".
func (m *Machine) Status(ctx context.Context) (string, error) {
	out, err := m.QMP(ctx, "query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", fmt.Errorf("qmp query-status: %w", err)
	}
	return st.Status, nil
}

// Shutdown presses the ACPI power button (QMP system_powerdown) so the guest
// can flush and power off, waits up to timeout for QEMU to exit, then kills
// it. It returns nil either way once no process remains: use Killed to
// learn whether the guest powered off cleanly (false) or had to be killed
// (true), e.g. because it was still booting and ignored the button. If ctx
// ends first the VM is killed too and ctx's error is returned.
func (m *Machine) Shutdown(ctx context.Context, timeout time.Duration) error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if _, err := m.QMP(ctx, "system_powerdown", nil); err != nil {
		select {
		case <-m.done:
			return nil
		default:
		}
		kerr := m.Kill()
		if ctx.Err() != nil {
			return errors.Join(fmt.Errorf("shutdown vm: %w", ctx.Err()), kerr)
		}
		return kerr // the button could not be pressed; stopping is what was asked
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-m.done:
		return nil
	case <-t.C:
		return m.Kill()
	case <-ctx.Done():
		return errors.Join(fmt.Errorf("shutdown vm: %w", ctx.Err()), m.Kill())
	}
}

// Kill stops QEMU with SIGKILL and waits until the process is gone. It is
// idempotent and returns nil if QEMU had already exited. The disk image is
// left as the guest last flushed it.
func (m *Machine) Kill() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if err := m.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill qemu (pid %d): %w", m.cmd.Process.Pid, err)
	}
	<-m.done
	return nil
}

// Killed reports whether QEMU ended by a signal (Kill, Shutdown's timeout,
// ctx cancellation, the OOM killer) instead of exiting because the guest
// powered off. It is false while QEMU runs.
func (m *Machine) Killed() bool {
	select {
	case <-m.done:
	default:
		return false
	}
	if m.cmd.ProcessState == nil { // attached: not our child, status unknown
		return false
	}
	ws, ok := m.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}

// Done is closed when the QEMU process has exited and been reaped.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Err is QEMU's exit error (with the tail of its output) once Done is
// closed; nil if QEMU exited with status 0 or is still running.
func (m *Machine) Err() error {
	select {
	case <-m.done:
		return m.err
	default:
		return nil
	}
}

// HostPort is the 127.0.0.1 port forwarded to guest port guest, 0 if none.
func (m *Machine) HostPort(guest int) int { return m.ports[guest] }

// SerialLog is the file receiving the guest's serial console (kernel and
// cloud-init messages); QEMU truncates it at start.
func (m *Machine) SerialLog() string { return m.cfg.serialLog() }

// Pid is the QEMU process id (also written to Dir/qemu.pid).
func (m *Machine) Pid() int { return m.cmd.Process.Pid }

// Accel is the accelerator the VM actually runs under.
func (m *Machine) Accel() Accel { return m.cfg.Accel }

// CPU is the -cpu model the VM runs with.
func (m *Machine) CPU() string { return m.cfg.cpuModel() }

// Args is the full command line QEMU was started with, for debugging.
func (m *Machine) Args() []string { return slices.Clone(m.args) }

// Output is the last 64 KiB QEMU wrote to stdout/stderr (warnings, errors).
func (m *Machine) Output() string { return m.output.String() }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// trimOutput makes QEMU's output fit in an error message: the last few
// lines, which is where a fatal error is.
func trimOutput(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	out := strings.Join(lines, "; ")
	if len(out) > 1500 {
		out = "..." + out[len(out)-1500:]
	}
	return out
}
