package qemu

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// A QEMU started by one Machine is taken over by another, as a restarted
// fleet supervisor does with the VMs its predecessor started.
func TestAttach(t *testing.T) {
	needQEMU(t)
	ctx := context.Background()
	c := testConfig(t)
	first := startTest(t, ctx, c)
	// The first owner goes away (QEMU serves one QMP client at a time).
	first.monMu.Lock()
	first.mon.close()
	first.mon = nil
	first.monMu.Unlock()

	if _, err := Attach(ctx, t.TempDir(), first.Pid(), nil, ""); err == nil || !strings.Contains(err.Error(), "is not the QEMU of") {
		t.Errorf("Attach with another folder: %v", err)
	}
	if _, err := Attach(ctx, c.Dir, os.Getpid(), nil, ""); err == nil {
		t.Error("Attach to a process that is not QEMU succeeded")
	}

	m, err := Attach(ctx, c.Dir, first.Pid(), map[int]int{22: first.HostPort(22)}, "")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := m.Status(ctx); err != nil || st != "prelaunch" {
		t.Fatalf("Status through the attached Machine = %q, %v", st, err)
	}
	if m.Pid() != first.Pid() || m.HostPort(22) != first.HostPort(22) || m.Killed() {
		t.Errorf("attached: pid %d (want %d), ssh port %d (want %d), killed %v", m.Pid(), first.Pid(), m.HostPort(22), first.HostPort(22), m.Killed())
	}
	if err := m.Shutdown(ctx, 200*time.Millisecond); err != nil { // -S: the guest ignores the button
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("Done not closed after Shutdown")
	}
	<-first.Done()
	assertGone(t, first.Pid())
	if _, err := Attach(ctx, c.Dir, first.Pid(), nil, ""); err == nil {
		t.Error("Attach to an exited QEMU succeeded")
	}
}
