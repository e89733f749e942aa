package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/layout"
)

func startChild(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	if len(args) == 0 {
		args = []string{"sleep", "60"}
	}
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func TestAlive(t *testing.T) {
	if !Self().Alive() || Self().Start == "" {
		t.Fatalf("Self() = %+v: not alive or no start time", Self())
	}
	cmd := startChild(t)
	p, err := Of(cmd.Process.Pid)
	if err != nil || !p.Alive() || !Running(p.Pid) {
		t.Fatalf("running child %+v (%v): not alive", p, err)
	}
	// The same pid with another start time is a later process.
	if (Process{Pid: p.Pid, Start: "1"}).Alive() {
		t.Error("a pid whose start time differs (a reused pid) counts as alive")
	}
	// Killed but not reaped: a zombie holds nothing but its pid.
	cmd.Process.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, ok := stat(p.Pid)
		if ok && st[0] == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child never became a zombie: %v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.Alive() || Running(p.Pid) {
		t.Error("a zombie counts as alive")
	}
	cmd.Wait()
	if p.Alive() || Running(p.Pid) {
		t.Error("a reaped process counts as alive")
	}
	if (Process{}).Alive() || Running(-1) {
		t.Error("pid 0 or -1 counts as alive")
	}
}

func TestPidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pid")
	if err := WriteFile(path, Self()); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil || got != Self() {
		t.Fatalf("ReadFile = %+v, %v; want %+v", got, err, Self())
	}
	for s, want := range map[string]Process{"42\n": {Pid: 42}, "42 1234\n": {Pid: 42, Start: "1234"}} {
		if got, err := Parse(s); err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "x", "0", "-3", "42 x", "1 2 3"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q): no error", bad)
		}
	}
}

func TestStopQEMUs(t *testing.T) {
	dir := t.TempDir()
	mine, other := layout.VM(filepath.Join(dir, "a")), layout.VM(filepath.Join(dir, "b"))
	for _, d := range []layout.VM{mine, other} {
		os.MkdirAll(string(d), 0o700)
	}
	// A stand-in QEMU whose command line names its pid file, as QEMU's does.
	q := startChild(t, "sh", "-c", "sleep 60; true", "-pidfile", mine.Pid())
	// A process that does not: a reused pid, never killed, even when it
	// is the QEMU of a folder whose name starts like this one's.
	stranger := startChild(t, "sh", "-c", "sleep 60; true", "-pidfile", string(other)+"2/"+layout.PidFile)
	os.WriteFile(mine.Pid(), []byte(strconv.Itoa(q.Process.Pid)+"\n"), 0o600)
	os.WriteFile(other.Pid(), []byte(strconv.Itoa(stranger.Process.Pid)+"\n"), 0o600)

	if pid, ok := QEMU(mine); !ok || pid != q.Process.Pid {
		t.Fatalf("QEMU(mine) = %d, %v", pid, ok)
	}
	if _, ok := QEMU(other); ok {
		t.Fatal("a process whose command line does not name the folder's pid file was taken for its QEMU")
	}
	go q.Wait() // reap, as QEMU's parent would
	killed := StopQEMUs([]layout.VM{mine, other}, 10*time.Second)
	if len(killed) != 1 || killed[0] != q.Process.Pid {
		t.Fatalf("killed %v, want [%d]", killed, q.Process.Pid)
	}
	if Running(q.Process.Pid) {
		t.Error("QEMU still runs after StopQEMUs")
	}
	if !Running(stranger.Process.Pid) {
		t.Error("the stranger was killed")
	}
}
