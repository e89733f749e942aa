//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/fleet"
)

// hammer sends requests to the front port until stopped, counting failures
// and when each failed request started.
type hammer struct {
	url      string
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	ok, fail int
	errs     []string
	failedAt []time.Time
	versions map[string]int
}

// startHammer sends one request per new connection, every 100 ms.
func startHammer(url string) *hammer {
	return startHammers(url, 1, &http.Transport{DisableKeepAlives: true})
}

// startKeepAliveHammer runs n clients that each keep one connection open
// across requests, as browsers and HTTP client libraries do.
func startKeepAliveHammer(url string, n int) *hammer {
	return startHammers(url, n, &http.Transport{MaxConnsPerHost: n, MaxIdleConnsPerHost: n})
}

func startHammers(url string, n int, tr *http.Transport) *hammer {
	h := &hammer{url: url, stop: make(chan struct{}), done: make(chan struct{}), versions: map[string]int{}}
	client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			// Bounded: at most one request per 100 ms for at most 40 minutes.
			for i := 0; i < 24000; i++ {
				select {
				case <-h.stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				began := time.Now()
				resp, err := client.Get(h.url)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("HTTP %d", resp.StatusCode)
					}
				}
				h.mu.Lock()
				if err != nil {
					h.fail++
					h.failedAt = append(h.failedAt, began)
					if len(h.errs) < 10 {
						h.errs = append(h.errs, began.Format("15:04:05.000")+" "+err.Error())
					}
				} else {
					h.ok++
					h.versions[strings.TrimSpace(string(body))]++
				}
				h.mu.Unlock()
			}
		})
	}
	go func() { wg.Wait(); close(h.done) }()
	return h
}

func (h *hammer) finish() (ok, fail int, errs []string, versions map[string]int) {
	close(h.stop)
	<-h.done
	return h.ok, h.fail, h.errs, h.versions
}

// gap is a time the front port was expected to be down: from a kill of
// the supervisor to the first request served after it.
type gap struct{ from, to time.Time }

// outside counts the failed requests that started outside every gap.
func (h *hammer) outside(gaps []gap) (n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, at := range h.failedAt {
		in := false
		for _, g := range gaps {
			// A request started just before the kill may fail with it.
			in = in || !at.Before(g.from.Add(-2*time.Second)) && !at.After(g.to)
		}
		if !in {
			n++
		}
	}
	return n
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

type fleetState struct {
	Stable      string              `json:"stable"`
	Running     bool                `json:"running"`
	Ready       bool                `json:"ready"`
	Supervisor  int                 `json:"supervisor_pid"`
	Rollout     *fleet.RolloutState `json:"rollout"`
	Restarts    int                 `json:"restarts"`
	LastRestart *struct {
		Reason   string
		Adopted  []string
		Replaced []string
		Rollout  string
	} `json:"last_restart"`
	Instances []struct {
		ID, Version, Health, Dir string
		Pid                      int
	} `json:"instances"`
}

// pids maps each instance to its QEMU pid.
func (st fleetState) pids() map[string]int {
	out := map[string]int{}
	for _, in := range st.Instances {
		out[in.ID] = in.Pid
	}
	return out
}

// killSupervisor kills the fleet's supervisor with SIGKILL and waits,
// without any command, until the front port serves again and a new
// supervisor reports the fleet ready. It returns the gap the front was
// down and the state then.
func killSupervisor(t *testing.T, name, front string) (gap, fleetState) {
	t.Helper()
	before := fleetStatusJSON(t, name)
	if !before.Running || before.Supervisor == 0 {
		t.Fatalf("no running supervisor to kill: %+v", before)
	}
	g := gap{from: time.Now()}
	if err := syscall.Kill(before.Supervisor, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		resp, err := client.Get(front)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the front port did not serve again within 3m of killing the supervisor (pid %d): %v", before.Supervisor, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.to = time.Now()
	t.Logf("supervisor pid %d killed; the front served again after %s", before.Supervisor, g.to.Sub(g.from).Round(10*time.Millisecond))
	for {
		var st fleetState
		out, err := exec.Command(kiln, "fleet", "status", name, "--json").Output()
		if err == nil && json.Unmarshal(out, &st) == nil && st.Running && st.Ready && st.Supervisor != before.Supervisor {
			return g, st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new supervisor reported the fleet ready within 3m: %v\n%s", err, out)
		}
		time.Sleep(time.Second)
	}
}

// samePids fails the test unless the instances run on the same QEMU
// processes as before: adopted, not rebooted.
func samePids(t *testing.T, what string, before, after map[string]int) {
	t.Helper()
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("%s: instances and QEMU pids %v, want the ones from before %v (adopted, not rebooted)", what, after, before)
	}
	for id, pid := range before {
		if !processAlive(pid) {
			t.Errorf("%s: %s's QEMU (pid %d) is gone", what, id, pid)
		}
	}
}

// waitRollout waits for rollout id to end and returns its final state.
func waitRollout(t *testing.T, name string, id int, within time.Duration) fleetState {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var st fleetState
		out, err := exec.Command(kiln, "fleet", "status", name, "--json").Output()
		if err != nil || json.Unmarshal(out, &st) != nil {
			t.Fatalf("fleet status --json: %v\n%s", err, out)
		}
		if st.Rollout != nil && st.Rollout.ID == id && st.Rollout.Phase.Terminal() {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout %d did not end within %s", id, within)
		}
		time.Sleep(2 * time.Second)
	}
}

// waitPhase waits until the fleet's current rollout is in phase.
func waitPhase(t *testing.T, name string, phase fleet.Phase, within time.Duration) fleetState {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := fleetStatusJSON(t, name)
		if st.Rollout != nil && st.Rollout.Phase == phase {
			return st
		}
		if st.Rollout != nil && st.Rollout.Phase.Terminal() {
			t.Fatalf("the rollout ended %s before reaching %s: %s", st.Rollout.Phase, phase, st.Rollout.Reason)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rollout did not reach %s within %s", phase, within)
		}
		time.Sleep(time.Second)
	}
}

func fleetStatusJSON(t *testing.T, name string) fleetState {
	t.Helper()
	r := kilnCmd(t, time.Minute, "fleet", "status", name, "--json")
	var st fleetState
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("fleet status --json: %v\n%s", err, r.stdout)
	}
	return st
}

// TestFleetRollout runs the whole deployment story on hello 1.0.0 and
// 1.1.0 (needHello): fleet up, a rollout, a broken rollout that must not
// take traffic, a rollback, down, with a client hammering the front port
// all along.
func TestFleetRollout(t *testing.T) {
	needHello(t)
	if r := kilnCmd(t, 20*time.Minute, "build", "testdata/broken/broken.kiln.hcl"); r.code != 0 {
		t.Fatalf("building the broken hello:1.2.0 failed: exit %d", r.code)
	}

	port := freePort(t)
	front := fmt.Sprintf("http://127.0.0.1:%d/", port)
	t.Cleanup(func() { kilnCmd(t, 5*time.Minute, "fleet", "down", "web") })
	r := kilnCmd(t, 20*time.Minute, "fleet", "up", "web", "--image", "hello:1.0.0", "--count", "2",
		"--port", fmt.Sprintf("%d:8080", port), "--health-http", "/healthz", "--health-interval", "1s")
	if r.code != 0 {
		t.Fatalf("fleet up: exit %d", r.code)
	}
	if got := get(t, front); !strings.Contains(got, "hello 1.0.0") {
		t.Fatalf("front port answers %q, want hello 1.0.0", got)
	}
	blue := fleetStatusJSON(t, "web")
	if len(blue.Instances) != 2 {
		t.Fatalf("fleet has %d instances, want 2", len(blue.Instances))
	}

	// Two clients all along: one connection per request, and keep-alive
	// connections that the HTTP front must carry across every switch.
	h := startHammer(front)
	ka := startKeepAliveHammer(front, 4)
	var gaps []gap

	// The supervisor dies with nothing under way: the next one, started by
	// kiln's monitor without any command, adopts both instances.
	g, st := killSupervisor(t, "web", front)
	gaps = append(gaps, g)
	samePids(t, "after the supervisor was killed", blue.pids(), st.pids())
	if st.Restarts != 1 || st.LastRestart == nil || !strings.Contains(st.LastRestart.Reason, "killed") ||
		len(st.LastRestart.Adopted) != 2 || len(st.LastRestart.Replaced) != 0 {
		t.Errorf("the restart record does not say the supervisor was killed and both instances adopted: %+v %+v", st.Restarts, st.LastRestart)
	}
	if out := kilnCmd(t, time.Minute, "fleet", "status", "web"); !strings.Contains(out.stdout, "supervisor restarted 1 times") ||
		!strings.Contains(out.stdout, "killed") {
		t.Errorf("fleet status does not say when and why the supervisor restarted:\n%s", out.stdout)
	}

	// Ctrl-C on the CLI stops following, not the rollout: the supervisor
	// owns it and carries it through.
	follow := startKiln(t, "rollout", "web", "--to", "hello:1.1.0", "--bake", "10s", "--drain", "5s")
	follow.waitFor(t, `→ starting-green`, 2*time.Minute)
	follow.cmd.Process.Signal(syscall.SIGINT)
	if res := follow.wait(t, time.Minute); res.code != 130 || !strings.Contains(res.stderr, "the rollout goes on") {
		t.Errorf("Ctrl-C on kiln rollout: exit %d, want 130 and word that the rollout goes on", res.code)
	}
	deadline := time.Now().Add(20 * time.Minute)
	for {
		var st fleetState
		out, err := exec.Command(kiln, "fleet", "status", "web", "--json").Output()
		if err != nil || json.Unmarshal(out, &st) != nil {
			t.Fatalf("fleet status --json: %v\n%s", err, out)
		}
		if st.Rollout != nil && st.Rollout.Phase.Terminal() {
			if st.Rollout.Phase != "succeeded" {
				t.Fatalf("the rollout to 1.1.0 ended %s: %s", st.Rollout.Phase, st.Rollout.Reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the rollout to 1.1.0 did not end within 20m")
		}
		time.Sleep(2 * time.Second)
	}
	if got := get(t, front); !strings.Contains(got, "hello 1.1.0") {
		t.Errorf("after the rollout the front answers %q, want hello 1.1.0", got)
	}
	green := fleetStatusJSON(t, "web")
	for _, in := range green.Instances {
		if in.Version != "hello:1.1.0" {
			t.Errorf("instance %s still runs %s", in.ID, in.Version)
		}
	}
	for _, in := range blue.Instances {
		if processAlive(in.Pid) {
			t.Errorf("1.0.0 instance %s (pid %d) still runs", in.ID, in.Pid)
		}
		if _, err := os.Stat(in.Dir); err == nil {
			t.Errorf("1.0.0 instance folder %s remains", in.Dir)
		}
	}

	r = kilnCmd(t, 20*time.Minute, "rollout", "web", "--to", "hello:1.2.0", "--bake", "10s", "--drain", "5s")
	if r.code == 0 {
		t.Errorf("the rollout to a version whose /healthz fails succeeded")
	}
	if got := get(t, front); !strings.Contains(got, "hello 1.1.0") {
		t.Errorf("after the failed rollout the front answers %q, want hello 1.1.0", got)
	}
	if st := fleetStatusJSON(t, "web"); st.Stable != "hello:1.1.0" || len(st.Instances) != 2 {
		t.Errorf("after the failed rollout: stable %s with %d instances, want hello:1.1.0 with 2", st.Stable, len(st.Instances))
	}

	// The supervisor dies while a rollback bakes: the next one settles it
	// back on 1.1.0 (green had not passed its bake), keeps blue's QEMU and
	// stops green; nothing is left half-switched.
	onGreen := fleetStatusJSON(t, "web")
	kilnOK(t, "rollback", "web", "--bake", "10m", "--progress-deadline", "30m", "--drain", "5s", "--detach")
	baking := waitPhase(t, "web", fleet.PhaseBaking, 20*time.Minute)
	g, st = killSupervisor(t, "web", front)
	gaps = append(gaps, g)
	settled := waitRollout(t, "web", baking.Rollout.ID, 5*time.Minute)
	if settled.Rollout.Phase != fleet.PhaseRolledBack || settled.Stable != "hello:1.1.0" {
		t.Errorf("the rollback interrupted in its bake ended %s on %s, want rolled-back on hello:1.1.0: %s",
			settled.Rollout.Phase, settled.Stable, settled.Rollout.Reason)
	}
	samePids(t, "after the supervisor was killed during a bake", onGreen.pids(), settled.pids())
	for _, id := range baking.Rollout.Green {
		for _, in := range baking.Instances {
			if in.ID == id && processAlive(in.Pid) {
				t.Errorf("green %s (pid %d) of the interrupted rollback still runs", id, in.Pid)
			}
		}
	}
	for i := 0; i < 5; i++ {
		if got := get(t, front); !strings.Contains(got, "hello 1.1.0") {
			t.Errorf("after the settled rollback the front answers %q, want hello 1.1.0 only", got)
		}
	}
	if st.Restarts != 2 || st.LastRestart == nil || !strings.Contains(st.LastRestart.Rollout, "rolled-back") {
		t.Errorf("the second restart's record does not say how the rollout was settled: %+v", st.LastRestart)
	}

	r = kilnCmd(t, 20*time.Minute, "rollback", "web", "--bake", "5s", "--drain", "5s")
	if r.code != 0 {
		t.Fatalf("rollback: exit %d", r.code)
	}
	if got := get(t, front); !strings.Contains(got, "hello 1.0.0") {
		t.Errorf("after the rollback the front answers %q, want hello 1.0.0", got)
	}
	for name, c := range map[string]*hammer{"one connection per request": h, "keep-alive": ka} {
		ok, fail, errs, versions := c.finish()
		t.Logf("client loop (%s): %d ok, %d failed, versions seen %v", name, ok, fail, versions)
		if n := c.outside(gaps); n != 0 || ok == 0 {
			t.Errorf("the %s client saw %d failed requests outside the supervisor's restarts (%d in all, of %d): %v", name, n, fail, ok+fail, errs)
		}
		if versions["hello from hello 1.2.0"] != 0 {
			t.Errorf("the broken 1.2.0 took traffic")
		}
	}
	hist := kilnCmd(t, time.Minute, "rollout", "history", "web")
	if strings.Count(hist.stdout, "succeeded") != 2 || !strings.Contains(hist.stdout, "aborted") || !strings.Contains(hist.stdout, "rolled-back") ||
		strings.Contains(hist.stdout, "with-cuts") {
		t.Errorf("rollout history does not show two plain successes, an abort and the settled rollback:\n%s", hist.stdout)
	}

	final := fleetStatusJSON(t, "web")
	// The rollback's instances resumed the guest saved by the first
	// instance of hello:1.0.0, each with an identity of its own.
	checkResumedIdentities(t, "web", final)
	r = kilnCmd(t, 5*time.Minute, "fleet", "down", "web")
	if r.code != 0 {
		t.Fatalf("fleet down: exit %d", r.code)
	}
	for _, in := range final.Instances {
		if processAlive(in.Pid) {
			t.Errorf("instance %s (pid %d) still runs after fleet down", in.ID, in.Pid)
		}
	}
	if _, err := os.Stat(filepath.Join(home, "data", "kiln", "fleets", "web")); err == nil {
		t.Error("the fleet's folder remains after fleet down")
	}
}

// checkResumedIdentities checks that every instance of fleet name resumed
// a saved guest, passes its checks, and has a machine-id, SSH host key and
// hostname of its own (the host key kiln pinned: fleet exec verifies it).
func checkResumedIdentities(t *testing.T, name string, st fleetState) {
	t.Helper()
	log, _ := os.ReadFile(filepath.Join(home, "data", "kiln", "fleets", name, "supervisor.log"))
	r := kilnCmd(t, 2*time.Minute, "fleet", "exec", name, "--",
		"echo id=$(cat /etc/machine-id) host=$(hostname) key=$(cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub)")
	if r.code != 0 {
		t.Fatalf("fleet exec: exit %d", r.code)
	}
	seen := map[string]string{}
	for _, in := range st.Instances {
		if in.Health != "healthy" {
			t.Errorf("instance %s is %s", in.ID, in.Health)
		}
		if !strings.Contains(string(log), "instance "+in.ID+" resumed from saved state") {
			t.Errorf("instance %s did not resume a saved guest", in.ID)
		}
		line := regexp.MustCompile(`(?m)^\[` + regexp.QuoteMeta(in.ID) + `\] id=(\w+) host=(\S+) key=(\S+)$`).FindStringSubmatch(r.stdout)
		if line == nil {
			t.Errorf("no identity line from %s:\n%s", in.ID, r.stdout)
			continue
		}
		if line[2] != in.ID {
			t.Errorf("instance %s has hostname %s", in.ID, line[2])
		}
		for i, what := range []string{"machine-id", "hostname", "host key"} {
			v := what + " " + line[i+1]
			if other, dup := seen[v]; dup {
				t.Errorf("instances %s and %s share their %s", other, in.ID, v)
			}
			seen[v] = in.ID
		}
	}
}
