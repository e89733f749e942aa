package qemu

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/layout"
)

// A QEMU whose parent died (a killed fleet supervisor) is adopted by
// another process and stopped by it.
func TestAttachOrphan(t *testing.T) {
	needQEMU(t)
	c := testConfig(t).withDefaults()
	c.Accel = TCG
	bin, _ := exec.LookPath("qemu-system-x86_64")
	argv := append([]string{bin}, Argv(c, []int{0})...)
	for i, a := range argv {
		argv[i] = "'" + a + "'"
	}
	// The shell starts QEMU in the background and exits: QEMU is orphaned.
	if out, err := exec.Command("sh", "-c", strings.Join(argv, " ")+" >/dev/null 2>&1 &").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var pid int
	for i := 0; i < 100 && pid == 0; i++ {
		time.Sleep(50 * time.Millisecond)
		b, _ := os.ReadFile(layout.VM(c.Dir).Pid())
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if pid == 0 {
		t.Fatal("QEMU wrote no pid file")
	}
	for i := 0; i < 200; i++ { // the pid file comes before the QMP socket
		if _, err := os.Stat(layout.VM(c.Dir).QMP()); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() { exec.Command("kill", "-9", strconv.Itoa(pid)).Run() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := Attach(ctx, c.Dir, pid, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := m.Status(ctx); err != nil || st != "prelaunch" {
		t.Fatalf("Status = %q, %v", st, err)
	}
	start := time.Now()
	if err := m.Shutdown(ctx, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %s", time.Since(start))
	select {
	case <-m.Done():
	default:
		t.Fatal("Done not closed")
	}
}
