package workdir

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/proc"
	"github.com/kiln-dev/kiln/layout"
)

// fakeQEMU starts a process whose command line names vmDir, as QEMU's does,
// and writes its pid file there.
func fakeQEMU(t *testing.T, vmDir string) *exec.Cmd {
	t.Helper()
	if err := os.MkdirAll(vmDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", `exec -a "$0" sleep 60`, filepath.Join(vmDir, "qemu-system-x86_64"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait() // reap it, as QEMU's parent would
	t.Cleanup(func() { cmd.Process.Kill() })
	// Wait for the exec so the command line is the final one.
	for i := 0; i < 100; i++ {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid)); len(b) > 0 && filepath.IsAbs(string(b[:1])) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := os.WriteFile(layout.VM(vmDir).Pid(), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// deadPid returns the pid of a process that has exited and been reaped.
func deadPid(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func orphan(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(layout.Work(dir).Owner(), []byte(fmt.Sprintf("%d 12345\n", deadPid(t))), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReclaim(t *testing.T) {
	parent := t.TempDir()

	live, err := Create(parent, "build-live")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(live); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("work folder mode %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	liveQEMU := fakeQEMU(t, filepath.Join(live, "vm"))

	stale, _ := Create(parent, "build-stale")
	orphan(t, stale)
	staleQEMU := fakeQEMU(t, filepath.Join(stale, "vm"))

	// A pid reused by an unrelated process is not the owner.
	reused, _ := Create(parent, "run-reused")
	os.WriteFile(layout.Work(reused).Owner(), []byte(fmt.Sprintf("%d 1\n", os.Getpid())), 0o600)

	kept, _ := Create(parent, "build-kept")
	orphan(t, kept)
	Keep(kept)
	keptQEMU := fakeQEMU(t, filepath.Join(kept, "vm"))

	keptDone, _ := Create(parent, "build-kept-done")
	orphan(t, keptDone)
	Keep(keptDone)

	foreign := filepath.Join(parent, "claims")
	os.Mkdir(foreign, 0o700)

	got, err := Reclaim(parent)
	if err != nil {
		t.Fatal(err)
	}
	removed := map[string]Stale{}
	for _, s := range got {
		removed[s.Dir] = s
	}
	if len(removed) != 3 || removed[stale].Dir == "" || removed[reused].Dir == "" || removed[keptDone].Dir == "" {
		t.Fatalf("reclaimed %v; want %s, %s and %s", got, stale, reused, keptDone)
	}
	if s := removed[stale]; len(s.Killed) != 1 || s.Killed[0] != staleQEMU.Process.Pid {
		t.Errorf("stale folder's QEMU not reported stopped: %v", s)
	}
	if proc.Running(staleQEMU.Process.Pid) {
		t.Error("the stale folder's QEMU still runs")
	}
	for _, d := range []string{live, kept, foreign} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
	if !proc.Running(liveQEMU.Process.Pid) || !proc.Running(keptQEMU.Process.Pid) {
		t.Error("a live owner's or a kept folder's QEMU was stopped")
	}
	for _, d := range []string{stale, reused, keptDone} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s remains", d)
		}
	}
}

func TestClaim(t *testing.T) {
	parent := t.TempDir()
	release, err := Claim(parent, "build hello:1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Claim(parent, "build hello:1.0.0")
	var ce *ClaimedError
	if !errors.As(err, &ce) || ce.Pid != os.Getpid() {
		t.Fatalf("second claim: %v; want a ClaimedError naming pid %d", err, os.Getpid())
	}
	other, err := Claim(parent, "build hello:1.1.0")
	if err != nil {
		t.Fatalf("a claim on another key: %v", err)
	}
	other()
	release()
	again, err := Claim(parent, "build hello:1.0.0")
	if err != nil {
		t.Fatalf("claim after release: %v", err)
	}
	again()
}
