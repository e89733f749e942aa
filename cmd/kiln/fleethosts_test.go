package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/supervisor"
)

// TestFleetUpUnknownHost: --host names a host kiln does not know; the
// fleet is refused before anything starts, naming the host and the fix.
func TestFleetUpUnknownHost(t *testing.T) {
	home, _, _ := homeWithChain(t)
	r := runKiln(t, home, "", "fleet", "up", "web", "--image", "app:1", "--host", "lab9")
	if r.code != 2 || !strings.Contains(r.stderr, "no host called lab9") || !strings.Contains(r.stderr, "kiln hosts add lab9") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(home, "data", "fleets", "web")); !os.IsNotExist(err) {
		t.Errorf("the refused fleet left its folder: %v", err)
	}
}

// TestHostsRmRefusesFleetHost: a host that a fleet's instances run on is
// not removed, and the refusal names the fleet.
func TestHostsRmRefusesFleetHost(t *testing.T) {
	home := t.TempDir()
	if r := runKiln(t, home, "", "hosts", "add", "lab1", "qemu+tcp://127.0.0.1:1/system", "--no-check"); r.code != 0 {
		t.Fatalf("hosts add: %d %s", r.code, r.stderr)
	}
	dirs := supervisor.FleetDirs(filepath.Join(home, "data"), "web")
	if err := supervisor.WriteSpec(dirs, supervisor.Spec{Name: "web", Image: "app:1", Count: 2, Hosts: []string{"lab1"}}); err != nil {
		t.Fatal(err)
	}
	r := runKiln(t, home, "", "hosts", "rm", "lab1")
	if r.code != 1 || !strings.Contains(r.stderr, "host lab1 still runs instances of fleet web") {
		t.Fatalf("hosts rm: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := runKiln(t, home, "", "hosts", "ls", "--json"); !strings.Contains(r.stdout, `"lab1"`) {
		t.Errorf("the host is gone after a refused rm: %s", r.stdout)
	}
	os.RemoveAll(dirs.Root)
	if r := runKiln(t, home, "", "hosts", "rm", "lab1"); r.code != 0 {
		t.Errorf("hosts rm once the fleet is down: %d %s", r.code, r.stderr)
	}
}

// TestFleetDownUnreachableHost: fleet down cannot reach one of the fleet's
// hosts; it says which and keeps the fleet's folder, so running it again
// once the host answers finishes the job.
func TestFleetDownUnreachableHost(t *testing.T) {
	home := t.TempDir()
	closed := closedAddr(t)
	if r := runKiln(t, home, "", "hosts", "add", "lab1", "qemu+tcp://"+closed+"/system", "--no-check"); r.code != 0 {
		t.Fatalf("hosts add: %d %s", r.code, r.stderr)
	}
	dirs := supervisor.FleetDirs(filepath.Join(home, "data"), "web")
	if err := supervisor.WriteSpec(dirs, supervisor.Spec{Name: "web", Image: "app:1", Count: 2, Hosts: []string{"lab1"}}); err != nil {
		t.Fatal(err)
	}
	r := runKiln(t, home, "", "fleet", "down", "web")
	if r.code != 1 || !strings.Contains(r.stderr, "host lab1 (") || !strings.Contains(r.stderr, "unreachable") ||
		!strings.Contains(r.stderr, "run kiln fleet down web again when the host answers") {
		t.Fatalf("fleet down: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(dirs.Spec()); err != nil {
		t.Errorf("the fleet's folder went although its host was not cleaned: %v", err)
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
