package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/proc"
	"github.com/kiln-dev/kiln/supervisor"
)

// TestFleetDownSparesReusedPids: the fleet's state and runner files name
// pids that now belong to another process (same pid, another start time:
// after a reboot, say). fleet down removes the fleet without signalling
// that process.
func TestFleetDownSparesReusedPids(t *testing.T) {
	home := t.TempDir()
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- other.Wait() }()
	t.Cleanup(func() { other.Process.Kill() })
	now, err := proc.Of(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	stale := now.Start + "0" // a start time the process does not have

	dirs := supervisor.FleetDirs(filepath.Join(home, "data"), "web")
	if err := supervisor.WriteSpec(dirs, supervisor.Spec{Name: "web", Image: "app:1", Count: 1}); err != nil {
		t.Fatal(err)
	}
	state, _ := json.Marshal(supervisor.State{Stable: "app:1", Supervisor: now.Pid, SupervisorStart: stale})
	if err := os.WriteFile(dirs.State(), state, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := supervisor.WriteRunner(dirs, supervisor.Runner{Kind: supervisor.RunnerMonitor, Pid: now.Pid, Start: stale}); err != nil {
		t.Fatal(err)
	}

	if r := runKiln(t, home, "", "fleet", "down", "web"); r.code != 0 {
		t.Fatalf("fleet down: exit %d, stderr %q", r.code, r.stderr)
	}
	select {
	case err := <-exited:
		t.Fatalf("fleet down signalled the process that reused the supervisor's pid: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := os.Stat(dirs.Root); !os.IsNotExist(err) {
		t.Errorf("the fleet's folder is still there: %v", err)
	}
}
