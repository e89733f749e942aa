//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/internal/libvirttest"
)

// hostsState is what the host test reads of `kiln fleet status --json`.
type hostsState struct {
	Stable    string              `json:"stable"`
	Rollout   *fleet.RolloutState `json:"rollout"`
	Instances []struct {
		ID, Version, Health, Host, Domain string
		Serving                           bool
	} `json:"instances"`
}

func hostsStatus(t *testing.T, name string) hostsState {
	t.Helper()
	r := kilnCmd(t, time.Minute, "fleet", "status", name, "--json")
	var st hostsState
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("fleet status --json: %v\n%s", err, r.stdout)
	}
	return st
}

// hostsOf lists, sorted, the host of each instance.
func (st hostsState) hostsOf() []string {
	var out []string
	for _, in := range st.Instances {
		out = append(out, in.Host)
	}
	sort.Strings(out)
	return out
}

// kilnDomainsOn lists what kiln left on a test host for fleet: its
// domains (any state) and its instances' volumes, as virsh sees them.
func kilnDomainsOn(t *testing.T, d *libvirttest.Daemon, fleetName string) []string {
	t.Helper()
	var left []string
	out, err := exec.Command("virsh", "-c", d.URI, "list", "--all", "--name").CombinedOutput()
	if err != nil {
		t.Errorf("virsh list on %s: %v\n%s", d.Name, err, out)
	}
	vols, err := exec.Command("virsh", "-c", d.URI, "vol-list", "kiln").CombinedOutput()
	if err != nil {
		t.Errorf("virsh vol-list on %s: %v\n%s", d.Name, err, vols)
	}
	for _, f := range strings.Fields(string(out) + " " + string(vols)) {
		if strings.HasPrefix(f, "kiln-"+fleetName+"-") {
			left = append(left, f)
		}
	}
	return left
}

// TestFleetOnLibvirtHosts runs a fleet of two spread over two libvirt hosts
// (private daemons, the second in a network namespace of its own, as
// another machine), behind one front port on 127.0.0.1, under a client loop
// that must see no failed request: a rollout to hello:1.1.0; a rollback to
// 1.0.0 during whose bake host two's daemon dies, which rolls back and
// replaces host two's instance on host one; the base and 1.0.0 uploaded to
// each host once across both versions (counted in the supervisor's log);
// and fleet down, once host two's daemon is back, leaving no domain or
// volume of the fleet on either host. Six guests boot, two at a time.
func TestFleetOnLibvirtHosts(t *testing.T) {
	if err := libvirttest.Available(); err != nil {
		t.Skipf("no test libvirt hosts: %v", err)
	}
	needHello(t)
	root, err := os.MkdirTemp("", "kiln-e2e-hosts-")
	if err != nil {
		t.Fatal(err)
	}
	var hosts []*libvirttest.Daemon
	t.Cleanup(func() {
		for _, d := range hosts {
			d.Stop()
		}
		os.RemoveAll(root)
	})
	for _, h := range []struct {
		name     string
		isolated bool
	}{{"one", false}, {"two", true}} {
		d, err := libvirttest.Start(root, h.name, h.isolated)
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, d)
		kilnOK(t, "hosts", "add", h.name, d.URI)
	}
	two := hosts[1]

	port := freePort(t)
	front := fmt.Sprintf("http://127.0.0.1:%d/", port)
	t.Cleanup(func() { kilnCmd(t, 5*time.Minute, "fleet", "down", "lv") })
	r := kilnCmd(t, 25*time.Minute, "fleet", "up", "lv", "--image", "hello:1.0.0", "--count", "2",
		"--port", fmt.Sprintf("%d:8080", port), "--health-http", "/healthz", "--health-interval", "1s",
		"--host", "one", "--host", "two")
	if r.code != 0 {
		t.Fatalf("fleet up: exit %d", r.code)
	}
	st := hostsStatus(t, "lv")
	if got := st.hostsOf(); strings.Join(got, ",") != "one,two" {
		t.Fatalf("instances run on hosts %v, want one on each", got)
	}
	if got := get(t, front); !strings.Contains(got, "hello 1.0.0") {
		t.Fatalf("front port answers %q, want hello 1.0.0", got)
	}
	if out := kilnCmd(t, time.Minute, "fleet", "status", "lv"); !strings.Contains(out.stdout, "on host two") {
		t.Errorf("fleet status does not name the hosts:\n%s", out.stdout)
	}
	// fleet exec reaches each guest where its host forwards SSH, with the
	// host key pinned at its first boot.
	if out := kilnCmd(t, 2*time.Minute, "fleet", "exec", "lv", "--", "hostname"); out.code != 0 ||
		strings.Count(out.stdout, "] lv-") != 2 {
		t.Errorf("fleet exec on both hosts: exit %d\n%s%s", out.code, out.stdout, out.stderr)
	}
	if out := kilnCmd(t, time.Minute, "hosts", "rm", "two"); out.code == 0 || !strings.Contains(out.stderr, "fleet lv") {
		t.Errorf("hosts rm of a host the fleet runs on: exit %d, %s", out.code, out.stderr)
	}

	h := startHammer(front)
	r = kilnCmd(t, 25*time.Minute, "rollout", "lv", "--to", "hello:1.1.0", "--bake", "10s", "--drain", "5s")
	if r.code != 0 {
		t.Fatalf("rollout to hello:1.1.0: exit %d", r.code)
	}
	st = hostsStatus(t, "lv")
	if got := st.hostsOf(); strings.Join(got, ",") != "one,two" {
		t.Errorf("after the rollout instances run on %v, want one on each", got)
	}
	for _, in := range st.Instances {
		if in.Version != "hello:1.1.0" {
			t.Errorf("instance %s runs %s after the rollout", in.ID, in.Version)
		}
	}
	if got := get(t, front); !strings.Contains(got, "hello 1.1.0") {
		t.Errorf("after the rollout the front answers %q, want hello 1.1.0", got)
	}

	// Back to 1.0.0, and host two's daemon dies while green bakes: green
	// there fails, the rollout rolls back to blue, and blue's instance on
	// host two (its host unreachable) is replaced on host one.
	kilnOK(t, "rollout", "lv", "--to", "hello:1.0.0", "--bake", "10m", "--progress-deadline", "30m", "--drain", "5s", "--detach")
	baking := waitPhase(t, "lv", fleet.PhaseBaking, 25*time.Minute)
	if err := two.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	settled := waitRollout(t, "lv", baking.Rollout.ID, 5*time.Minute)
	t.Logf("the rollout ended %s %.0fs after host two's daemon died: %s", settled.Rollout.Phase, time.Since(killed).Seconds(), settled.Rollout.Reason)
	if settled.Rollout.Phase != fleet.PhaseRolledBack || settled.Stable != "hello:1.1.0" {
		t.Errorf("the rollout whose host died in its bake ended %s on %s, want rolled-back on hello:1.1.0", settled.Rollout.Phase, settled.Stable)
	}
	deadline := time.Now().Add(15 * time.Minute)
	for {
		st = hostsStatus(t, "lv")
		healthy := 0
		for _, in := range st.Instances {
			if in.Host == "one" && in.Health == "healthy" && in.Version == "hello:1.1.0" {
				healthy++
			}
		}
		if healthy == 2 && len(st.Instances) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host two's instance was not replaced on host one within 15m: %+v", st.Instances)
		}
		time.Sleep(2 * time.Second)
	}
	for i := 0; i < 5; i++ {
		if got := get(t, front); !strings.Contains(got, "hello 1.1.0") {
			t.Errorf("after the rollback the front answers %q, want hello 1.1.0", got)
		}
	}
	ok, fail, errs, versions := h.finish()
	t.Logf("client loop: %d ok, %d failed, versions seen %v", ok, fail, versions)
	if fail != 0 || ok == 0 {
		t.Errorf("the client saw %d failed requests of %d: %v", fail, ok+fail, errs)
	}

	// Each layer went to each host once: the base and 1.0.0 were not sent
	// again for 1.1.0, nor for the rollback's green.
	log, err := os.ReadFile(filepath.Join(home, "data", "kiln", "fleets", "lv", "supervisor.log"))
	if err != nil {
		t.Fatal(err)
	}
	// The chain of hello:1.1.0, top first, as far as it is layered.
	chain := []string{showImage(t, "hello:1.1.0").Digest}
	for _, ref := range []string{"hello:1.1.0", "hello:1.0.0", "debian:12"} {
		if m := showImage(t, ref); chain[len(chain)-1] == m.Digest && m.BackingDigest != "" {
			chain = append(chain, m.BackingDigest)
		}
	}
	if len(chain) < 2 {
		t.Errorf("hello:1.1.0 is not layered (%v): the upload count proves little", chain)
	}
	for _, d := range chain {
		for _, host := range []string{"one", "two"} {
			if n := strings.Count(string(log), "host "+host+": uploaded layer "+d); n != 1 {
				t.Errorf("layer %s was uploaded to host %s %d times, want once", d, host, n)
			}
		}
	}
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "bytes sent to it by this supervisor") {
			t.Log(line)
		}
	}

	// Host two's daemon comes back with the domains whose QEMUs outlived
	// it; fleet down removes everything of the fleet on both hosts.
	if err := two.Restart(); err != nil {
		t.Fatal(err)
	}
	if r := kilnCmd(t, 5*time.Minute, "fleet", "down", "lv"); r.code != 0 {
		t.Fatalf("fleet down: exit %d", r.code)
	}
	for _, d := range hosts {
		if left := kilnDomainsOn(t, d, "lv"); len(left) != 0 {
			t.Errorf("left on host %s after fleet down: %v", d.Name, left)
		}
	}
	if _, err := os.Stat(filepath.Join(home, "data", "kiln", "fleets", "lv")); err == nil {
		t.Error("the fleet's folder remains after fleet down")
	}
	kilnOK(t, "hosts", "rm", "two")
}
