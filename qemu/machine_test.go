package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/layout"
)

// These tests start real QEMU processes, paused (-S) and with no disk, so no
// OS boots: they exercise startup, QMP, port retries and stopping in
// well under a second each.

func needQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
}

func testConfig(t *testing.T) Config {
	return Config{
		Name:      "kiln-test",
		Dir:       t.TempDir(),
		MemoryMiB: 64,
		CPUs:      1,
		Accel:     TCG,
		Forwards:  []Forward{{GuestPort: 22}},
		ExtraArgs: []string{"-S"},
	}
}

func startTest(t *testing.T, ctx context.Context, c Config) *Machine {
	t.Helper()
	m, err := Start(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Kill() })
	return m
}

func assertGone(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pid %d still exists (kill 0: %v)", pid, err)
	}
}

func TestStartStatusKill(t *testing.T) {
	needQEMU(t)
	ctx := context.Background()
	c := testConfig(t)
	m := startTest(t, ctx, c)

	st, err := m.Status(ctx)
	if err != nil || st != "prelaunch" {
		t.Fatalf("Status = %q, %v", st, err)
	}
	hp := m.HostPort(22)
	if hp < portMin || hp > portMax || m.HostPort(80) != 0 {
		t.Fatalf("HostPort(22) = %d", hp)
	}
	// slirp listens on the forwarded port, on loopback.
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(hp)), time.Second)
	if err != nil {
		t.Errorf("forwarded port not listening: %v", err)
	} else {
		conn.Close()
	}
	pidFile, err := os.ReadFile(filepath.Join(c.Dir, "qemu.pid"))
	if err != nil || strings.TrimSpace(string(pidFile)) != strconv.Itoa(m.Pid()) {
		t.Errorf("pidfile %q, %v; pid %d", pidFile, err, m.Pid())
	}
	if fi, err := os.Stat(m.SerialLog()); err != nil {
		t.Errorf("serial log: %v", err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("serial log mode %o, want 0600", fi.Mode().Perm())
	}
	if m.Accel() != TCG || m.Killed() || m.Err() != nil {
		t.Errorf("Accel %q Killed %v Err %v", m.Accel(), m.Killed(), m.Err())
	}
	// Several commands over the one connection.
	if _, err := m.QMP(ctx, "query-version", nil); err != nil {
		t.Error(err)
	}
	if _, err := m.QMP(ctx, "no-such-command", nil); err == nil || !strings.Contains(err.Error(), "no-such-command") {
		t.Errorf("bad command: %v", err)
	}
	if st, err := m.Status(ctx); err != nil || st != "prelaunch" {
		t.Errorf("Status after error = %q, %v", st, err)
	}

	// A second VM may not take over the same run folder.
	if _, err := Start(ctx, c); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Start in same Dir: %v", err)
	}

	if err := m.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("Done not closed after Kill")
	}
	assertGone(t, m.Pid())
	if !m.Killed() || m.Err() == nil {
		t.Errorf("after Kill: Killed %v Err %v", m.Killed(), m.Err())
	}
	if err := m.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}
	if _, err := m.Status(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Status after Kill = %v", err)
	}
}

func TestShutdownTimeoutKills(t *testing.T) {
	needQEMU(t)
	m := startTest(t, context.Background(), testConfig(t))
	// A paused VM has no OS to answer the power button.
	start := time.Now()
	if err := m.Shutdown(context.Background(), 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Error("Shutdown returned before its timeout")
	}
	if !m.Killed() {
		t.Error("Killed = false after a timed-out Shutdown")
	}
	assertGone(t, m.Pid())
	if err := m.Shutdown(context.Background(), time.Second); err != nil {
		t.Errorf("Shutdown after exit: %v", err)
	}
}

func TestShutdownWithoutQMPKills(t *testing.T) {
	needQEMU(t)
	c := testConfig(t)
	m := startTest(t, context.Background(), c)
	// The QMP connection breaks and its socket vanishes (a cleaner removed
	// the run folder's socket, or QEMU's monitor hung up).
	m.monMu.Lock()
	mon := m.mon
	m.monMu.Unlock()
	if mon != nil {
		m.dropMonitor(mon)
	}
	if err := os.Remove(layout.VM(c.Dir).QMP()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Status(context.Background()); err == nil {
		t.Error("Status without a QMP socket succeeded")
	}
	done := make(chan error, 1)
	go func() { done <- m.Shutdown(context.Background(), 10*time.Second) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown without QMP: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown without QMP still waiting after 5s")
	}
	if !m.Killed() {
		t.Error("Killed = false: the VM should have been stopped hard")
	}
	assertGone(t, m.Pid())
}

func TestShutdownClean(t *testing.T) {
	needQEMU(t)
	m := startTest(t, context.Background(), testConfig(t))
	// Stand in for a guest that powers off: quit QEMU while Shutdown waits.
	go func() {
		time.Sleep(100 * time.Millisecond)
		m.QMP(context.Background(), "quit", nil)
	}()
	if err := m.Shutdown(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if m.Killed() || m.Err() != nil {
		t.Errorf("clean exit: Killed %v Err %v", m.Killed(), m.Err())
	}
	assertGone(t, m.Pid())
}

func TestContextCancelKills(t *testing.T) {
	needQEMU(t)
	ctx, cancel := context.WithCancel(context.Background())
	m := startTest(t, ctx, testConfig(t))
	cancel()
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("VM still running 10s after ctx cancel")
	}
	assertGone(t, m.Pid())
	if !m.Killed() {
		t.Error("Killed = false after ctx cancel")
	}
}

func TestStartConcurrentDistinctPorts(t *testing.T) {
	needQEMU(t)
	const n = 8
	ms := make([]*Machine, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		c := testConfig(t)
		c.Name = fmt.Sprintf("vm%d", i)
		c.Forwards = []Forward{{GuestPort: 22}, {GuestPort: 80}}
		wg.Go(func() { ms[i], errs[i] = Start(context.Background(), c) })
	}
	wg.Wait()
	seen := map[int]string{}
	for i, m := range ms {
		if errs[i] != nil {
			t.Errorf("vm%d: %v", i, errs[i])
			continue
		}
		defer func() {
			m.Kill()
			assertGone(t, m.Pid())
		}()
		if st, err := m.Status(context.Background()); err != nil || st != "prelaunch" {
			t.Errorf("vm%d status %q, %v", i, st, err)
		}
		for _, g := range []int{22, 80} {
			p := m.HostPort(g)
			if other, dup := seen[p]; dup || p == 0 {
				t.Errorf("vm%d guest %d: host port %d also used by %s", i, g, p, other)
			}
			seen[p] = fmt.Sprintf("vm%d/%d", i, g)
		}
	}
}

// listenLoopback takes a port the way another program would.
func listenLoopback(t *testing.T) (net.Listener, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, l.Addr().(*net.TCPAddr).Port
}

func TestStartRetriesTakenPort(t *testing.T) {
	needQEMU(t)
	_, busy := listenLoopback(t)
	c := testConfig(t)
	var calls [][]int
	c.pickPorts = func(n int, avoid []int) []int {
		calls = append(calls, avoid)
		if len(calls) == 1 {
			return []int{busy} // force a collision on the first try
		}
		return randomPorts(n, avoid)
	}
	m := startTest(t, context.Background(), c)
	if len(calls) != 2 {
		t.Fatalf("port chooser called %d times, want 2", len(calls))
	}
	if len(calls[1]) != 1 || calls[1][0] != busy {
		t.Errorf("retry did not avoid the taken port: %v", calls[1])
	}
	if hp := m.HostPort(22); hp == busy || hp == 0 {
		t.Errorf("HostPort(22) = %d, busy %d", hp, busy)
	}
}

func TestStartGivesUpOnTakenPorts(t *testing.T) {
	needQEMU(t)
	_, busy := listenLoopback(t)
	c := testConfig(t)
	calls := 0
	c.pickPorts = func(int, []int) []int { calls++; return []int{busy} }
	_, err := Start(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "Could not set up host forwarding rule") || calls != startAttempts {
		t.Errorf("err = %v after %d attempts", err, calls)
	}
}

func TestStartFixedPortTaken(t *testing.T) {
	needQEMU(t)
	_, busy := listenLoopback(t)
	c := testConfig(t)
	c.Forwards = []Forward{{HostPort: busy, GuestPort: 22}}
	c.pickPorts = func(int, []int) []int { t.Error("chooser called for a fixed port"); return nil }
	_, err := Start(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("host port %d is already in use", busy)) {
		t.Errorf("err = %v", err)
	}
}

func TestStartReportsQEMUError(t *testing.T) {
	needQEMU(t)
	c := testConfig(t)
	c.ExtraArgs = []string{"-no-such-option"}
	_, err := Start(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "no-such-option") {
		t.Errorf("err = %v", err)
	}

	c = testConfig(t)
	c.Disk = filepath.Join(c.Dir, "missing.qcow2")
	if _, err := Start(context.Background(), c); err == nil || !strings.Contains(err.Error(), "missing.qcow2") {
		t.Errorf("missing disk: %v", err)
	}
	c = testConfig(t)
	c.Forwards = []Forward{{GuestPort: 22}, {GuestPort: 22}}
	if _, err := Start(context.Background(), c); err == nil {
		t.Error("duplicate guest port: want error")
	}
}

// TestStartWithDiskAndSeed checks QEMU accepts the drive options (virtio
// cdrom seed, discard) for real, still without booting.
func TestStartWithDiskAndSeed(t *testing.T) {
	needQEMU(t)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	c := testConfig(t)
	c.Disk = filepath.Join(c.Dir, "disk,1.qcow2") // a comma must be escaped
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", c.Disk, "64M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	c.Seed = filepath.Join(c.Dir, "seed.iso")
	if err := os.WriteFile(c.Seed, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	m := startTest(t, context.Background(), c)
	out, err := m.QMP(context.Background(), "query-block", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{`"file": "` + c.Disk, `"detect_zeroes": "unmap"`, `"ro": true`} {
		if !strings.Contains(s, want) && !strings.Contains(s, strings.ReplaceAll(want, " ", "")) {
			t.Errorf("query-block lacks %s:\n%s", want, s)
		}
	}
}

func TestStartUEFIVars(t *testing.T) {
	needQEMU(t)
	code := "/usr/share/OVMF/OVMF_CODE_4M.fd"
	if _, err := os.Stat(code); err != nil {
		t.Skip("OVMF not installed")
	}
	c := testConfig(t)
	c.Firmware = code
	m := startTest(t, context.Background(), c)
	if _, err := os.Stat(filepath.Join(c.Dir, "efivars.fd")); err != nil {
		t.Error(err)
	}
	m.Kill()
}
