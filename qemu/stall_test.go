package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeMachine is a Machine whose process is cmd (a shell loop standing in
// for QEMU) with an empty serial log.
func fakeMachine(t *testing.T, script string) *Machine {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "serial.log")
	if err := os.WriteFile(log, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &Machine{cfg: Config{Dir: dir, SerialLog: log, Accel: KVM}, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(m.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-m.done })
	return m
}

func TestWatchFirmwareSpinningSilentGuest(t *testing.T) {
	m := fakeMachine(t, "while :; do :; done")
	select {
	case err, ok := <-m.watchFirmware(context.Background(), 300*time.Millisecond, 50*time.Millisecond, 0.02):
		if !ok || !strings.Contains(err.Error(), "firmware never ran under kvm (-cpu host)") {
			t.Errorf("got %v, %v", err, ok)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a silent spinning guest was not reported")
	}
}

func TestWatchFirmwareIdleOrTalkingGuest(t *testing.T) {
	idle := fakeMachine(t, "exec sleep 30")
	ch := idle.watchFirmware(context.Background(), 300*time.Millisecond, 20*time.Millisecond, 0.02)
	select {
	case err := <-ch:
		t.Fatalf("an idle guest was reported: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	idle.cmd.Process.Kill()
	if err, ok := <-ch; ok {
		t.Errorf("after exit: %v", err)
	}

	talking := fakeMachine(t, "while :; do :; done")
	os.WriteFile(talking.SerialLog(), []byte("SeaBIOS\n"), 0o600)
	if err, ok := <-talking.watchFirmware(context.Background(), 100*time.Millisecond, 20*time.Millisecond, 0.02); ok {
		t.Errorf("a guest with console output was reported: %v", err)
	}
}

func TestProcessCPU(t *testing.T) {
	d, err := processCPU(os.Getpid())
	if err != nil || d < 0 {
		t.Errorf("processCPU(self) = %v, %v", d, err)
	}
	if _, err := processCPU(1 << 30); err == nil {
		t.Error("processCPU of a missing pid succeeded")
	}
}
