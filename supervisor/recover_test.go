package supervisor

import (
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-dev/kiln/fleet"
)

// A supervisor that starts after another died adopts the VMs that are the
// very processes recorded and pass their checks, replaces only the others,
// and settles an interrupted rollout without rebooting what is fine.
func TestRecoverAdopts(t *testing.T) {
	const v1, v2 = "hello:1.0.0", "hello:1.1.0"
	type world struct {
		recorded []*fakeVM
		rollout  *fleet.RolloutState
		after    func() // what happened after the last save
	}
	cases := []struct {
		name  string
		setup func(h *fakeHost) world
		count int

		serving  []string
		launched []string
		stopped  []string // gracefully, as adopted instances the fleet no longer runs
		reaped   []string // killed and removed, as not adoptable
		stable   string
		result   fleet.Phase // of the interrupted rollout
		replaced string      // in the restart's record
	}{
		{
			name: "alive and healthy: adopted, nothing booted",
			setup: func(h *fakeHost) world {
				return world{recorded: []*fakeVM{h.boot(v1), h.boot(v1)}}
			},
			serving: []string{"web-1", "web-2"},
		},
		{
			name: "pid reused: replaced",
			setup: func(h *fakeHost) world {
				a, b := h.boot(v1), h.boot(v1)
				// b's QEMU died and its pid went to a new process.
				return world{recorded: []*fakeVM{a, b}, after: func() { b.pidStart = "another process's start" }}
			},
			serving: []string{"web-1", "web-3"}, launched: []string{"web-3"}, reaped: []string{"web-2"},
			replaced: "web-2: pid 1002 is no longer its QEMU",
		},
		{
			name: "QEMU gone: replaced",
			setup: func(h *fakeHost) world {
				a, b := h.boot(v1), h.boot(v1)
				delete(h.vms, b.id)
				return world{recorded: []*fakeVM{a, b}}
			},
			serving: []string{"web-1", "web-3"}, launched: []string{"web-3"},
			replaced: "web-2: its QEMU (pid 1002) is gone",
		},
		{
			name: "QMP gone: replaced",
			setup: func(h *fakeHost) world {
				a, b := h.boot(v1), h.boot(v1)
				h.qmpGone[a.id] = true
				return world{recorded: []*fakeVM{a, b}}
			},
			serving: []string{"web-2", "web-3"}, launched: []string{"web-3"}, reaped: []string{"web-1"},
			replaced: "web-1: QMP",
		},
		{
			name: "SSH not answering with its pinned key: replaced",
			setup: func(h *fakeHost) world {
				a, b := h.boot(v1), h.boot(v1)
				h.sshGone[b.id] = true
				return world{recorded: []*fakeVM{a, b}}
			},
			serving: []string{"web-1", "web-3"}, launched: []string{"web-3"}, reaped: []string{"web-2"},
			replaced: "web-2: SSH: ssh: host key mismatch",
		},
		{
			name: "failing its checks: replaced",
			setup: func(h *fakeHost) world {
				a, b := h.boot(v1), h.boot(v1)
				b.healthy = false
				return world{recorded: []*fakeVM{a, b}}
			},
			serving: []string{"web-1", "web-3"}, launched: []string{"web-3"}, reaped: []string{"web-2"},
			replaced: "web-2: its checks fail",
		},
		{
			name: "an instance never recorded is reaped",
			setup: func(h *fakeHost) world {
				a, b := h.boot(v1), h.boot(v1)
				h.boot(v1) // launched, then the supervisor died before saving it
				return world{recorded: []*fakeVM{a, b}}
			},
			serving: []string{"web-1", "web-2"}, reaped: []string{"web-3"},
		},
		{
			name: "baking: rolled back on blue, which never stopped",
			setup: func(h *fakeHost) world {
				b1, b2, g1, g2 := h.boot(v1), h.boot(v1), h.boot(v2), h.boot(v2)
				return world{recorded: []*fakeVM{b1, b2, g1, g2}, rollout: &fleet.RolloutState{
					ID: 1, Target: v2, PreviousStable: v1, Phase: fleet.PhaseBaking, Surge: 100,
					Blue: []string{"web-1", "web-2"}, Green: []string{"web-3", "web-4"}}}
			},
			serving: []string{"web-1", "web-2"}, stopped: []string{"web-3", "web-4"},
			stable: v1, result: fleet.PhaseRolledBack,
		},
		{
			name: "draining the last batch: succeeded on green, the blue left stops",
			setup: func(h *fakeHost) world {
				b1, b2, g1, g2 := h.boot(v1), h.boot(v1), h.boot(v2), h.boot(v2)
				delete(h.vms, b1.id) // already drained and stopped
				return world{recorded: []*fakeVM{b2, g1, g2}, rollout: &fleet.RolloutState{
					ID: 1, Target: v2, PreviousStable: v1, Phase: fleet.PhaseDraining, Surge: 100,
					Blue: []string{"web-1", "web-2"}, Green: []string{"web-3", "web-4"}}}
			},
			serving: []string{"web-3", "web-4"}, stopped: []string{"web-2"},
			stable: v2, result: fleet.PhaseSucceeded,
		},
		{
			name: "starting green: aborted, the half-launched green reaped",
			setup: func(h *fakeHost) world {
				b1, b2 := h.boot(v1), h.boot(v1)
				h.boot(v2) // green booting, not recorded yet
				return world{recorded: []*fakeVM{b1, b2}, rollout: &fleet.RolloutState{
					ID: 1, Target: v2, PreviousStable: v1, Phase: fleet.PhaseStartingGreen, Surge: 100,
					Blue: []string{"web-1", "web-2"}, Green: []string{}}}
			},
			serving: []string{"web-1", "web-2"}, reaped: []string{"web-3"},
			stable: v1, result: fleet.PhaseAborted,
		},
		{
			name: "second batch of two: rolled back, the blue still up kept, one booted for the batch done",
			setup: func(h *fakeHost) world {
				b1, b2, g1, g2 := h.boot(v1), h.boot(v1), h.boot(v2), h.boot(v2)
				delete(h.vms, b1.id) // retired by the first batch
				return world{recorded: []*fakeVM{b2, g1, g2}, rollout: &fleet.RolloutState{
					ID: 1, Target: v2, PreviousStable: v1, Phase: fleet.PhaseVerifying, Surge: 50, Batch: 1,
					Blue: []string{"web-1", "web-2"}, Green: []string{"web-3", "web-4"}}}
			},
			serving: []string{"web-2", "web-5"}, launched: []string{"web-5"}, stopped: []string{"web-3", "web-4"},
			stable: v1, result: fleet.PhaseRolledBack,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			host := newFakeHost()
			w := c.setup(host)
			st := State{Stable: v1, Supervisor: 4242, Instances: recordAll(w.recorded...), Rollout: w.rollout}
			if w.after != nil {
				w.after()
			}
			count := c.count
			if count == 0 {
				count = 2
			}
			s := testSupervisor(t, host, st, count)
			prev := s.begin()
			if err := s.recover(t.Context(), prev); err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if got := sortedIDs(s.serving); !slices.Equal(got, c.serving) {
				t.Errorf("serving %v, want %v", got, c.serving)
			}
			var wantAddrs []string
			for _, id := range c.serving {
				wantAddrs = append(wantAddrs, s.insts[id].Addr(80))
			}
			if got := s.balancers[80].Backends(); !slices.Equal(sortedStrings(got), sortedStrings(wantAddrs)) {
				t.Errorf("front backends %v, want %v", got, wantAddrs)
			}
			for what, lists := range map[string][2][]string{
				"launched": {host.launched, c.launched}, "stopped": {host.stopped, c.stopped}, "reaped": {host.reaped, c.reaped},
			} {
				if got := sortedIDs(lists[0]); !slices.Equal(got, sortedIDs(lists[1])) && (len(got) > 0 || len(lists[1]) > 0) {
					t.Errorf("%s %v, want %v", what, got, lists[1])
				}
			}
			if got := host.running(); !slices.Equal(got, c.serving) {
				t.Errorf("running after recovery %v, want exactly the serving %v", got, c.serving)
			}
			if want := c.stable; want != "" && s.state.Stable != want {
				t.Errorf("stable %s, want %s", s.state.Stable, want)
			}
			if c.result != "" {
				if s.state.Rollout.Phase != c.result || len(s.state.History) != 1 || s.state.History[0].Result != string(c.result) {
					t.Errorf("rollout %s, history %+v; want %s", s.state.Rollout.Phase, s.state.History, c.result)
				}
			}
			lr := s.state.LastRestart
			if lr == nil || s.state.Restarts != 1 || lr.Previous != 4242 || !strings.Contains(lr.Reason, "pid 4242") {
				t.Fatalf("restart record %+v (restarts %d)", lr, s.state.Restarts)
			}
			adopted := sortedIDs(slices.DeleteFunc(slices.Clone(c.serving), func(id string) bool { return slices.Contains(c.launched, id) }))
			if !slices.Equal(sortedIDs(lr.Adopted), adopted) {
				t.Errorf("restart record adopted %v, want %v", lr.Adopted, adopted)
			}
			if got := strings.Join(lr.Replaced, "; "); !strings.Contains(got, c.replaced) || (c.replaced == "" && got != "") {
				t.Errorf("restart record replaced %q, want %q", got, c.replaced)
			}
			saved, err := ReadState(s.dirs)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, rec := range saved.Instances {
				ids = append(ids, rec.ID)
			}
			if !slices.Equal(ids, c.serving) {
				t.Errorf("state file lists %v, want %v", ids, c.serving)
			}
		})
	}
}

func sortedStrings(s []string) []string { return slices.Sorted(slices.Values(s)) }

// A first start is no restart.
func TestBeginFirstStart(t *testing.T) {
	s := testSupervisor(t, newFakeHost(), State{}, 1)
	if prev := s.begin(); len(prev) != 0 || s.state.Restarts != 0 || s.state.LastRestart != nil {
		t.Errorf("first start: prev %v, restarts %d, last %+v", prev, s.state.Restarts, s.state.LastRestart)
	}
	if s.state.Stable != "hello:1.0.0" {
		t.Errorf("stable %q", s.state.Stable)
	}
}

// Instances that were healthy and serving go back behind the front before
// the slower SSH reconnect and checks; one recorded as still starting
// waits for them.
func TestRecoverServesBeforeReconnect(t *testing.T) {
	host := newFakeHost()
	a, b := host.boot("hello:1.0.0"), host.boot("hello:1.0.0")
	recs := recordAll(a, b)
	recs[1].Health, recs[1].Serving = string(fleet.Unknown), false // a replacement, still booting
	s := testSupervisor(t, host, State{Stable: "hello:1.0.0", Supervisor: 4242, Instances: recs}, 2)
	var mu sync.Mutex
	seen := map[string][]string{}
	host.onReconnect = func(id string) {
		mu.Lock()
		defer mu.Unlock()
		seen[id] = s.balancers[80].Backends()
	}
	if err := s.recover(t.Context(), s.begin()); err != nil {
		t.Fatal(err)
	}
	if got := seen["web-1"]; !slices.Contains(got, a.Addr(80)) || slices.Contains(got, b.Addr(80)) {
		t.Errorf("while reconnecting, the front served %v; want web-1 (%s) and not the unproven web-2", got, a.Addr(80))
	}
	if got := sortedStrings(s.balancers[80].Backends()); !slices.Equal(got, sortedStrings([]string{a.Addr(80), b.Addr(80)})) {
		t.Errorf("after recovery the front serves %v, want both", got)
	}
}
