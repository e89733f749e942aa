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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/fleet"
)

// hammer sends requests to the front port until stopped, counting failures.
type hammer struct {
	url      string
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	ok, fail int
	errs     []string
	versions map[string]int
}

func startHammer(url string) *hammer {
	h := &hammer{url: url, stop: make(chan struct{}), done: make(chan struct{}), versions: map[string]int{}}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		defer close(h.done)
		// Bounded: at most one request per 100 ms for at most 40 minutes.
		for i := 0; i < 24000; i++ {
			select {
			case <-h.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
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
				if len(h.errs) < 10 {
					h.errs = append(h.errs, err.Error())
				}
			} else {
				h.ok++
				h.versions[strings.TrimSpace(string(body))]++
			}
			h.mu.Unlock()
		}
	}()
	return h
}

func (h *hammer) finish() (ok, fail int, errs []string, versions map[string]int) {
	close(h.stop)
	<-h.done
	return h.ok, h.fail, h.errs, h.versions
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
	Stable    string              `json:"stable"`
	Running   bool                `json:"running"`
	Rollout   *fleet.RolloutState `json:"rollout"`
	Instances []struct {
		ID, Version, Health, Dir string
		Pid                      int
	} `json:"instances"`
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
// 1.1.0 from TestBuildHello: fleet up, a rollout, a broken rollout that
// must not take traffic, a rollback, down, with a client hammering the
// front port all along.
func TestFleetRollout(t *testing.T) {
	for _, ref := range []string{"hello:1.0.0", "hello:1.1.0"} {
		if r := kilnCmd(t, time.Minute, "images", "show", ref); r.code != 0 {
			t.Skipf("%s is not in the store (TestBuildHello failed?)", ref)
		}
	}
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

	h := startHammer(front)
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

	r = kilnCmd(t, 20*time.Minute, "rollback", "web", "--bake", "5s", "--drain", "5s")
	if r.code != 0 {
		t.Fatalf("rollback: exit %d", r.code)
	}
	if got := get(t, front); !strings.Contains(got, "hello 1.0.0") {
		t.Errorf("after the rollback the front answers %q, want hello 1.0.0", got)
	}
	ok, fail, errs, versions := h.finish()
	t.Logf("client loop: %d ok, %d failed, versions seen %v", ok, fail, versions)
	if fail != 0 || ok == 0 {
		t.Errorf("the client saw %d failed requests (of %d): %v", fail, ok+fail, errs)
	}
	if versions["hello from hello 1.2.0"] != 0 {
		t.Errorf("the broken 1.2.0 took traffic")
	}
	hist := kilnCmd(t, time.Minute, "rollout", "history", "web")
	if strings.Count(hist.stdout, "succeeded") != 2 || !strings.Contains(hist.stdout, "aborted") {
		t.Errorf("rollout history does not show two successes and an abort:\n%s", hist.stdout)
	}

	final := fleetStatusJSON(t, "web")
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
