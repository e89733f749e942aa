package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	v1 = "web:1.0.0"
	v2 = "web:1.1.0"
)

// checkPersisted asserts Persist saw every transition: each stored state
// adds at most one history entry, and its phase is that entry's target.
func checkPersisted(t *testing.T, s *fakeStore) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := -1
	for i, st := range s.states {
		n := len(st.History)
		if prev >= 0 && n != prev && n != prev+1 {
			t.Fatalf("persisted state %d jumps from %d to %d transitions: a transition was not persisted", i, prev, n)
		}
		if n == 0 {
			t.Fatalf("persisted state %d has no history", i)
		}
		if last := st.History[n-1]; last.To != st.Phase {
			t.Fatalf("persisted state %d: phase %s but last transition to %s", i, st.Phase, last.To)
		}
		prev = n
	}
}

// harness is one fake host: VMs, balancer, health and state file.
type harness struct {
	world   *fakeWorld
	blue    []Instance
	traffic *fakeTraffic
	health  *fakeHealth
	store   *fakeStore
}

func newHarness(nBlue int) *harness {
	w, blue := newFakeWorld(nBlue, v1)
	h := &harness{world: w, blue: blue, health: &fakeHealth{}, store: &fakeStore{}}
	h.resetTraffic()
	// Start with traffic on blue, as the supervisor leaves it.
	h.traffic.SetBackends(addrs(blue, testPort))
	h.traffic.sets = nil
	w.beforeStop = func(addr string) { h.traffic.stopping(addr) }
	return h
}

// resetTraffic gives the harness a fresh balancer, as a restarted
// supervisor has.
func (h *harness) resetTraffic() {
	h.traffic = &fakeTraffic{alive: h.world.alive}
}

// checkBreaches fails the test for every moment a client could have seen
// a failed request.
func checkBreaches(t *testing.T, h *harness) {
	t.Helper()
	h.traffic.mu.Lock()
	defer h.traffic.mu.Unlock()
	for _, b := range h.traffic.breaches {
		t.Error(b)
	}
}

func (h *harness) rollout(o Options) *Rollout {
	return &Rollout{
		Launcher: h.world,
		Traffic:  h.traffic,
		Port:     testPort,
		Verify:   h.health.verify,
		Watch:    h.health.watch,
		Persist:  h.store.persist,
		Options:  o,
	}
}

func (h *harness) addrs(idList ...string) []string {
	var out []string
	for _, id := range idList {
		out = append(out, h.world.addrOf(id))
	}
	return slices.Sorted(slices.Values(out))
}

var (
	successPhases = []Phase{PhaseStartingGreen, PhaseVerifying, PhaseSwitching, PhaseBaking, PhaseDraining, PhaseSucceeded}
	batchPhases   = []Phase{PhaseStartingGreen, PhaseVerifying, PhaseSwitching, PhaseBaking, PhaseDraining}
	fast          = Options{Bake: 5 * time.Second, // the fake watcher returns at once
		Drain: time.Second, ProgressDeadline: 10 * time.Second, AutoPromote: true}
	idsOf          = func(s ...string) []string { return s }
	twoBatchPhases = slices.Concat(batchPhases, successPhases)
	restorePhases  = []Phase{PhaseRestoring, PhaseRestoreDraining, PhaseRolledBack}
)

func with(o Options, f func(*Options)) Options { f(&o); return o }

type rolloutCase struct {
	name    string
	blue    int
	opts    Options
	setup   func(h *harness)
	edit    func(r *Rollout)
	phase   Phase
	phases  []Phase
	traffic []string // final backend ids; nil = traffic never changed
	stopped []string
	reason  string // substring of Reason
	note    string // substring of the last transition's note
	mixed   bool   // a failed restore leaves both versions serving
	cut     int    // what the drains cut
}

func rolloutCases() []rolloutCase {
	return []rolloutCase{
		{
			name: "success", blue: 2, opts: fast,
			phase: PhaseSucceeded, phases: successPhases,
			traffic: idsOf("web-3", "web-4"), stopped: idsOf("web-1", "web-2"),
			note: "stopped blue web-1, web-2",
		},
		{
			name: "launch fails", blue: 2, opts: fast,
			setup: func(h *harness) { h.world.launchErr = func(int) error { return errors.New("no space for overlay") } },
			phase: PhaseAborted, phases: []Phase{PhaseStartingGreen, PhaseAborting, PhaseAborted},
			reason: "starting 2 green of web:1.1.0: no space for overlay",
		},
		{
			name: "launcher's own timeout is not the progress deadline", blue: 2, opts: fast,
			setup: func(h *harness) {
				h.world.launchErr = func(int) error { return fmt.Errorf("wait for SSH: %w", context.DeadlineExceeded) }
			},
			phase: PhaseAborted, phases: []Phase{PhaseStartingGreen, PhaseAborting, PhaseAborted},
			reason: "starting 2 green of web:1.1.0: wait for SSH: context deadline exceeded",
		},
		{
			name: "launcher starts too few", blue: 2, opts: fast,
			setup: func(h *harness) { h.world.launchShort = true },
			phase: PhaseAborted, phases: []Phase{PhaseStartingGreen, PhaseAborting, PhaseAborted},
			stopped: idsOf("web-3"), reason: "launcher started 1 instances, want 2",
		},
		{
			name: "verify fails", blue: 2, opts: fast,
			setup: func(h *harness) { h.health.verifyFail = map[string]bool{"web-4": true} },
			phase: PhaseAborted, phases: []Phase{PhaseStartingGreen, PhaseVerifying, PhaseAborting, PhaseAborted},
			stopped: idsOf("web-3", "web-4"), reason: "verifying green: web-4 is unhealthy",
		},
		{
			name: "bake fails", blue: 2, opts: fast,
			setup: func(h *harness) { h.health.bakeFail = map[string]bool{"web-3": true} },
			phase: PhaseRolledBack, phases: []Phase{PhaseStartingGreen, PhaseVerifying, PhaseSwitching, PhaseBaking, PhaseRollingBack, PhaseRolledBack},
			traffic: idsOf("web-1", "web-2"), stopped: idsOf("web-3", "web-4"), reason: "baking: web-3 is unhealthy",
		},
		{
			name: "default watcher sees green die", blue: 1, opts: with(fast, func(o *Options) { o.Bake = 5 * time.Second }),
			setup: func(h *harness) {
				h.world.afterLaunch = func() { in := h.world.vms["web-2"]; go in.kill() }
			},
			edit:  func(r *Rollout) { r.Watch = nil },
			phase: PhaseRolledBack, phases: []Phase{PhaseStartingGreen, PhaseVerifying, PhaseSwitching, PhaseBaking, PhaseRollingBack, PhaseRolledBack},
			traffic: idsOf("web-1"), stopped: idsOf("web-2"), reason: "baking: web-2 exited",
		},
		{
			name: "deadline while starting green", blue: 2, opts: with(fast, func(o *Options) { o.ProgressDeadline = 50 * time.Millisecond; o.Bake = 0 }),
			setup: func(h *harness) { h.world.launchBlock = true },
			phase: PhaseAborted, phases: []Phase{PhaseStartingGreen, PhaseAborting, PhaseAborted},
			reason: "progress deadline passed while starting 2 green",
		},
		{
			name: "deadline while verifying", blue: 2, opts: with(fast, func(o *Options) { o.ProgressDeadline = 50 * time.Millisecond; o.Bake = 0 }),
			setup: func(h *harness) { h.health.verifyBlock = true },
			phase: PhaseAborted, phases: []Phase{PhaseStartingGreen, PhaseVerifying, PhaseAborting, PhaseAborted},
			stopped: idsOf("web-3", "web-4"), reason: "progress deadline passed while verifying green",
		},
		{
			name: "deadline while baking", blue: 2, opts: with(fast, func(o *Options) { o.ProgressDeadline = 300 * time.Millisecond; o.Bake = 200 * time.Millisecond }),
			setup: func(h *harness) { h.health.bakeBlock = true },
			phase: PhaseRolledBack, phases: []Phase{PhaseStartingGreen, PhaseVerifying, PhaseSwitching, PhaseBaking, PhaseRollingBack, PhaseRolledBack},
			traffic: idsOf("web-1", "web-2"), stopped: idsOf("web-3", "web-4"), reason: "progress deadline passed while baking",
		},
		{
			name: "deadline while draining is not a failure", blue: 2,
			opts: with(fast, func(o *Options) {
				o.ProgressDeadline = 200 * time.Millisecond
				o.Bake = 0
				o.Drain = 400 * time.Millisecond
			}),
			setup: func(h *harness) { h.traffic.drainBlock = map[string]bool{h.world.addrOf("web-1"): true} },
			phase: PhaseSucceeded, phases: successPhases,
			traffic: idsOf("web-3", "web-4"), stopped: idsOf("web-1", "web-2"),
			note: "drain web-1: cut 1 connection to 127.0.0.1:10001 still open at the drain deadline",
			cut:  1,
		},
		{
			name: "drain timeout still stops blue", blue: 2, opts: with(fast, func(o *Options) { o.Drain = 20 * time.Millisecond }),
			setup: func(h *harness) {
				h.traffic.drainBlock = map[string]bool{h.world.addrOf("web-1"): true, h.world.addrOf("web-2"): true}
			},
			phase: PhaseSucceeded, phases: successPhases,
			traffic: idsOf("web-3", "web-4"), stopped: idsOf("web-1", "web-2"),
			note: "drain web-2: cut 1 connection to 127.0.0.1:10002 still open at the drain deadline",
			cut:  2,
		},
		{
			name: "stop failure is noted", blue: 2, opts: fast,
			setup: func(h *harness) { h.world.stopErr = map[string]error{"web-2": errors.New("qmp: timeout")} },
			phase: PhaseSucceeded, phases: successPhases,
			traffic: idsOf("web-3", "web-4"), stopped: idsOf("web-1"),
			note: "stop web-2: qmp: timeout",
		},
		{
			name: "surge 50 in two batches", blue: 4, opts: with(fast, func(o *Options) { o.Surge = 50 }),
			phase: PhaseSucceeded, phases: twoBatchPhases,
			traffic: idsOf("web-5", "web-6", "web-7", "web-8"), stopped: idsOf("web-1", "web-2", "web-3", "web-4"),
		},
		{
			name: "surge 50 verify fails in second batch", blue: 4, opts: with(fast, func(o *Options) { o.Surge = 50 }),
			setup:  func(h *harness) { h.health.verifyFail = map[string]bool{"web-7": true} },
			phase:  PhaseRolledBack,
			phases: slices.Concat(batchPhases, []Phase{PhaseStartingGreen, PhaseVerifying, PhaseAborting}, restorePhases),
			// the first batch's green is replaced by the previous version again
			traffic: idsOf("web-3", "web-4", "web-9", "web-10"), stopped: idsOf("web-1", "web-2", "web-5", "web-6", "web-7", "web-8"),
			reason: "web-7 is unhealthy", note: "stopped web-5, web-6; the fleet runs web:1.0.0 everywhere",
		},
		{
			name: "surge 50 bake fails in second batch", blue: 4, opts: with(fast, func(o *Options) { o.Surge = 50 }),
			setup:   func(h *harness) { h.health.bakeFail = map[string]bool{"web-8": true} },
			phase:   PhaseRolledBack,
			phases:  slices.Concat(batchPhases, []Phase{PhaseStartingGreen, PhaseVerifying, PhaseSwitching, PhaseBaking, PhaseRollingBack}, restorePhases),
			traffic: idsOf("web-3", "web-4", "web-9", "web-10"), stopped: idsOf("web-1", "web-2", "web-5", "web-6", "web-7", "web-8"),
			reason: "web-8 is unhealthy",
		},
		{
			name: "surge 50 deadline in second batch, then the restore", blue: 4,
			opts: with(fast, func(o *Options) {
				o.Surge = 50
				o.Bake = 0
				o.ProgressDeadline = 300 * time.Millisecond
			}),
			// The restore has a window of its own: the rollout's ran out.
			setup:   func(h *harness) { h.health.verifyHang = map[string]bool{"web-7": true} },
			phase:   PhaseRolledBack,
			phases:  slices.Concat(batchPhases, []Phase{PhaseStartingGreen, PhaseVerifying, PhaseAborting}, restorePhases),
			traffic: idsOf("web-3", "web-4", "web-9", "web-10"), stopped: idsOf("web-1", "web-2", "web-5", "web-6", "web-7", "web-8"),
			reason: "progress deadline passed while verifying green",
		},
		{
			name: "surge 50 restore judged by the fleet's own checks", blue: 4, opts: with(fast, func(o *Options) { o.Surge = 50 }),
			// The rollout's checks fail web-9 (as checks written for the new
			// version would); the fleet's checks, used for the restore, pass.
			setup:   func(h *harness) { h.health.verifyFail = map[string]bool{"web-7": true, "web-9": true} },
			edit:    func(r *Rollout) { r.VerifyRestore = func(context.Context, []Instance) error { return nil } },
			phase:   PhaseRolledBack,
			phases:  slices.Concat(batchPhases, []Phase{PhaseStartingGreen, PhaseVerifying, PhaseAborting}, restorePhases),
			traffic: idsOf("web-3", "web-4", "web-9", "web-10"), stopped: idsOf("web-1", "web-2", "web-5", "web-6", "web-7", "web-8"),
			reason: "web-7 is unhealthy",
		},
		{
			name: "surge 50 restore cannot launch", blue: 4, opts: with(fast, func(o *Options) { o.Surge = 50 }),
			setup: func(h *harness) {
				h.health.verifyFail = map[string]bool{"web-7": true}
				h.world.launchErr = func(call int) error {
					if call == 3 {
						return errors.New("no space for overlay")
					}
					return nil
				}
			},
			phase:  PhaseRolledBack,
			phases: slices.Concat(batchPhases, []Phase{PhaseStartingGreen, PhaseVerifying, PhaseAborting, PhaseRestoring, PhaseRolledBack}),
			// the first batch keeps serving the target: nothing else can
			traffic: idsOf("web-3", "web-4", "web-5", "web-6"), stopped: idsOf("web-1", "web-2", "web-7", "web-8"),
			reason: "could not restore web:1.0.0 in place of web-5, web-6 (starting 2 of web:1.0.0: no space for overlay), so they keep serving web:1.1.0",
			mixed:  true,
		},
		{
			name: "surge 50 restore fails its checks", blue: 4, opts: with(fast, func(o *Options) { o.Surge = 50 }),
			setup:   func(h *harness) { h.health.verifyFail = map[string]bool{"web-7": true, "web-10": true} },
			phase:   PhaseRolledBack,
			phases:  slices.Concat(batchPhases, []Phase{PhaseStartingGreen, PhaseVerifying, PhaseAborting, PhaseRestoring, PhaseRolledBack}),
			traffic: idsOf("web-3", "web-4", "web-5", "web-6"), stopped: idsOf("web-1", "web-2", "web-7", "web-8", "web-9", "web-10"),
			reason: "could not restore web:1.0.0 in place of web-5, web-6 (verifying web-9, web-10: web-10 is unhealthy",
			mixed:  true,
		},
		{
			name: "surge 33 of 3 is one at a time", blue: 3, opts: with(fast, func(o *Options) { o.Surge = 33 }),
			phase: PhaseSucceeded, phases: slices.Concat(batchPhases, batchPhases, successPhases),
			traffic: idsOf("web-4", "web-5", "web-6"), stopped: idsOf("web-1", "web-2", "web-3"),
		},
	}
}

func TestRollout(t *testing.T) {
	for _, tc := range rolloutCases() {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(tc.blue)
			if tc.setup != nil {
				tc.setup(h)
			}
			r := h.rollout(tc.opts)
			if tc.edit != nil {
				tc.edit(r)
			}
			st, err := r.Start(t.Context(), 7, v2, h.blue)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			checkOutcome(t, h, st, tc)
			if got := h.store.transitions(); !slices.Equal(got, tc.phases) {
				t.Errorf("persisted transitions\n got %v\nwant %v", got, tc.phases)
			}
		})
	}
}

func checkOutcome(t *testing.T, h *harness, st RolloutState, tc rolloutCase) {
	t.Helper()
	checkPersisted(t, h.store)
	checkBreaches(t, h)
	if st.Phase != tc.phase {
		t.Fatalf("phase %s (reason %q), want %s", st.Phase, st.Reason, tc.phase)
	}
	if last := h.store.last(); last.Phase != st.Phase || len(last.History) != len(st.History) {
		t.Errorf("last persisted state is %s with %d transitions, returned %s with %d", last.Phase, len(last.History), st.Phase, len(st.History))
	}
	var want []string
	if tc.traffic != nil {
		want = h.addrs(tc.traffic...)
	}
	if got := h.traffic.current(); !slices.Equal(got, want) {
		t.Errorf("final traffic %v, want %v", got, want)
	}
	if tc.traffic != nil && !slices.Equal(h.addrs(st.Serving()...), want) {
		t.Errorf("Serving() %v disagrees with traffic %v", st.Serving(), tc.traffic)
	}
	if got := h.world.stoppedIDs(); !slices.Equal(got, slices.Sorted(slices.Values(tc.stopped))) {
		t.Errorf("stopped %v, want %v", got, tc.stopped)
	}
	if !strings.Contains(st.Reason, tc.reason) || (tc.reason == "" && st.Reason != "") {
		t.Errorf("reason %q, want it to contain %q", st.Reason, tc.reason)
	}
	if st.Cut != tc.cut {
		t.Errorf("the drains cut %d, want %d", st.Cut, tc.cut)
	}
	if tc.note != "" && !strings.Contains(st.History[len(st.History)-1].Note, tc.note) {
		t.Errorf("last note %q, want it to contain %q", st.History[len(st.History)-1].Note, tc.note)
	}
	// Whatever failed, the fleet serves the version it started from,
	// unless the restore itself could not be done.
	if st.Phase == PhaseAborted || st.Phase == PhaseRolledBack {
		var versions []string
		for _, id := range st.Serving() {
			versions = append(versions, id+"="+h.world.vms[id].Version())
		}
		mixed := slices.ContainsFunc(versions, func(v string) bool { return !strings.HasSuffix(v, "="+v1) })
		if mixed != tc.mixed {
			t.Errorf("serving %v: mixed = %t, want %t", versions, mixed, tc.mixed)
		}
	}
	if st.Target != v2 || st.PreviousStable != v1 || st.ID != 7 {
		t.Errorf("state names %d %s→%s, want 7 %s→%s", st.ID, st.PreviousStable, st.Target, v1, v2)
	}
}

func jsonRoundTrip(t *testing.T, st RolloutState) RolloutState {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out RolloutState
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// The restore's window is the progress deadline the rollout was given,
// not what is left of a deadline pushed back by waits for promotion.
func TestRestoreWindow(t *testing.T) {
	now := time.Now()
	st := RolloutState{
		Blue: idsOf("web-1", "web-2"), Green: idsOf("web-3", "web-4"), Surge: 50, Batch: 1,
		ProgressDeadline: time.Minute, StartedAt: now.Add(-2 * time.Hour), Deadline: now.Add(time.Hour),
	}
	if next := thenRestore(&st, PhaseRolledBack); next != PhaseRestoring {
		t.Fatalf("thenRestore in the second batch = %s, want restoring", next)
	}
	if d := time.Until(st.RestoreDeadline); d < 50*time.Second || d > time.Minute {
		t.Errorf("restore window %s, want the rollout's one minute", d)
	}
	st.Batch = 0
	if next := thenRestore(&st, PhaseAborted); next != PhaseAborted {
		t.Errorf("thenRestore in the first batch = %s, want aborted", next)
	}
}

// A Persist that fails stops the rollout where it is, before the phase it
// could not record is acted on; the supervisor then settles it.
func TestPersistFailureStops(t *testing.T) {
	h := newHarness(2)
	h.store.failAt = 3 // verifying → switching
	saved, err := h.rollout(fast).Start(t.Context(), 1, v2, h.blue)
	if !errors.Is(err, errDiskFull) {
		t.Fatalf("Start: %v, want disk full", err)
	}
	if saved.Phase != PhaseVerifying {
		t.Fatalf("returned %s, want the last persisted phase verifying", saved.Phase)
	}
	if h.traffic.current() != nil {
		t.Fatalf("traffic switched although the switch was never persisted: %v", h.traffic.current())
	}
	checkPersisted(t, h.store)
}

func TestPromote(t *testing.T) {
	h := newHarness(2)
	r := h.rollout(with(fast, func(o *Options) { o.AutoPromote = false; o.Bake = 0; o.ProgressDeadline = 300 * time.Millisecond }))
	if err := r.Promote(); !errors.Is(err, ErrNotPaused) {
		t.Fatalf("Promote before the pause: %v", err)
	}
	done := make(chan result, 1)
	go func() {
		st, err := r.Start(t.Context(), 1, v2, h.blue)
		done <- result{st, err}
	}()
	waitPaused(t, r, done)
	if r.State().Phase != PhaseVerifying || h.traffic.current() != nil {
		t.Fatalf("paused in %s with traffic %v; want verifying, untouched", r.State().Phase, h.traffic.current())
	}
	// Waiting longer than the deadline must not fail the rollout.
	time.Sleep(400 * time.Millisecond)
	if err := r.Promote(); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	res := <-done
	if res.err != nil || res.st.Phase != PhaseSucceeded {
		t.Fatalf("after Promote: %s (%s), %v", res.st.Phase, res.st.Reason, res.err)
	}
	if !res.st.PausedAt.IsZero() {
		t.Errorf("PausedAt still set after promotion")
	}
	if h.health.verifyCalls != 2 {
		t.Errorf("health gate ran %d times, want twice (before the pause and after promotion)", h.health.verifyCalls)
	}
	checkPersisted(t, h.store)
}

type result struct {
	st  RolloutState
	err error
}

// waitPaused waits until r waits for promotion; it fails if the rollout
// ends first or nothing happens for 5s.
func waitPaused(t *testing.T, r *Rollout, done chan result) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.State().PausedAt.IsZero() {
		select {
		case res := <-done:
			t.Fatalf("rollout ended instead of pausing: %s (%s), %v", res.st.Phase, res.st.Reason, res.err)
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("rollout did not pause for promotion")
		}
	}
}

func TestStartRejects(t *testing.T) {
	w, blue := newFakeWorld(2, v1)
	noPort := newFakeInstance("web-9", v1, nil)
	base := func() *Rollout {
		h := &harness{world: w, traffic: &fakeTraffic{}, health: &fakeHealth{}, store: &fakeStore{}}
		return h.rollout(fast)
	}
	tests := []struct {
		name   string
		edit   func(r *Rollout)
		target string
		blue   []Instance
		want   string
	}{
		{"no target", nil, "", blue, "no target version"},
		{"no blue", nil, v2, nil, "no running instances"},
		{"duplicate", nil, v2, []Instance{blue[0], blue[0]}, "given twice"},
		{"port not forwarded", nil, v2, []Instance{noPort}, "web-9 does not forward guest port 80"},
		{"no verify", func(r *Rollout) { r.Verify = nil }, v2, blue, "are required"},
		{"bad port", func(r *Rollout) { r.Port = 0 }, v2, blue, "guest port must be"},
		{"bad surge", func(r *Rollout) { r.Options.Surge = 101 }, v2, blue, "surge must be"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			if tc.edit != nil {
				tc.edit(r)
			}
			_, err := r.Start(t.Context(), 1, tc.target, tc.blue)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestTransitions(t *testing.T) {
	all := []Phase{PhaseIdle, PhaseStartingGreen, PhaseVerifying, PhaseSwitching, PhaseBaking, PhaseDraining,
		PhaseSucceeded, PhaseAborting, PhaseRollingBack, PhaseAborted, PhaseRolledBack,
		PhaseRestoring, PhaseRestoreDraining}
	legal := map[[2]Phase]bool{
		{PhaseIdle, PhaseStartingGreen}:      true,
		{PhaseStartingGreen, PhaseVerifying}: true,
		{PhaseStartingGreen, PhaseAborting}:  true,
		{PhaseVerifying, PhaseSwitching}:     true,
		{PhaseVerifying, PhaseAborting}:      true,
		{PhaseSwitching, PhaseBaking}:        true,
		{PhaseSwitching, PhaseRollingBack}:   true,
		{PhaseBaking, PhaseDraining}:         true,
		{PhaseBaking, PhaseRollingBack}:      true,
		{PhaseDraining, PhaseStartingGreen}:  true,
		{PhaseDraining, PhaseSucceeded}:      true,
		{PhaseAborting, PhaseAborted}:        true,
		{PhaseRollingBack, PhaseRolledBack}:  true,
		// a later batch failed: the earlier batches go back too
		{PhaseAborting, PhaseRestoring}:         true,
		{PhaseRollingBack, PhaseRestoring}:      true,
		{PhaseRestoring, PhaseRestoreDraining}:  true,
		{PhaseRestoring, PhaseRolledBack}:       true,
		{PhaseRestoreDraining, PhaseRolledBack}: true,
	}
	for _, from := range all {
		if !from.known() {
			t.Errorf("%s not known", from)
		}
		terminal := from == PhaseSucceeded || from == PhaseAborted || from == PhaseRolledBack
		if from.Terminal() != terminal {
			t.Errorf("%s.Terminal() = %v", from, from.Terminal())
		}
		for _, to := range all {
			if got := canTransition(from, to); got != legal[[2]Phase{from, to}] {
				t.Errorf("canTransition(%s, %s) = %v", from, to, got)
			}
		}
	}
	// Before the switch a failure aborts; after it, it rolls back.
	for _, p := range []Phase{PhaseStartingGreen, PhaseVerifying} {
		if canTransition(p, PhaseRollingBack) {
			t.Errorf("%s can roll back although traffic was never switched", p)
		}
	}
	for _, p := range []Phase{PhaseSwitching, PhaseBaking} {
		if canTransition(p, PhaseAborting) {
			t.Errorf("%s can abort although traffic may be on green", p)
		}
	}
}

func TestBatches(t *testing.T) {
	tests := []struct {
		blue, surge, size, batches int
	}{
		{1, 100, 1, 1},
		{4, 100, 4, 1},
		{4, 50, 2, 2},
		{4, 25, 1, 4},
		{4, 1, 1, 4},
		{3, 50, 2, 2}, // ceil(1.5)
		{3, 34, 2, 2}, // ceil(1.02)
		{3, 33, 1, 3},
		{5, 40, 2, 3},
	}
	for _, tc := range tests {
		st := RolloutState{Surge: tc.surge}
		for i := range tc.blue {
			st.Blue = append(st.Blue, "b"+string(rune('0'+i)))
		}
		if st.batchSize() != tc.size || st.batches() != tc.batches {
			t.Errorf("%d blue at %d%%: size %d batches %d, want %d %d", tc.blue, tc.surge, st.batchSize(), st.batches(), tc.size, tc.batches)
		}
	}
}

func TestServing(t *testing.T) {
	blue := []string{"b1", "b2", "b3", "b4"}
	tests := []struct {
		phase    Phase
		batch    int
		green    []string
		want     []string
		restore  []string
		restored bool
	}{
		{PhaseStartingGreen, 0, nil, blue, nil, false},
		{PhaseVerifying, 0, []string{"g1", "g2"}, blue, nil, false},
		{PhaseAborted, 0, []string{"g1", "g2"}, blue, nil, false},
		{PhaseSwitching, 0, []string{"g1", "g2"}, []string{"g1", "g2", "b3", "b4"}, nil, false},
		{PhaseBaking, 0, []string{"g1", "g2"}, []string{"g1", "g2", "b3", "b4"}, nil, false},
		{PhaseRollingBack, 0, []string{"g1", "g2"}, blue, nil, false},
		{PhaseStartingGreen, 1, []string{"g1", "g2"}, []string{"g1", "g2", "b3", "b4"}, nil, false},
		{PhaseVerifying, 1, []string{"g1", "g2", "g3", "g4"}, []string{"g1", "g2", "b3", "b4"}, nil, false},
		{PhaseDraining, 1, []string{"g1", "g2", "g3", "g4"}, []string{"g1", "g2", "g3", "g4"}, nil, false},
		{PhaseSucceeded, 1, []string{"g1", "g2", "g3", "g4"}, []string{"g1", "g2", "g3", "g4"}, nil, false},
		{PhaseRolledBack, 1, []string{"g1", "g2", "g3", "g4"}, []string{"g1", "g2", "b3", "b4"}, nil, false},
		{PhaseRestoring, 1, []string{"g1", "g2"}, []string{"g1", "g2", "b3", "b4"}, []string{"r1", "r2"}, false},
		{PhaseRestoreDraining, 1, []string{"g1", "g2"}, []string{"r1", "r2", "b3", "b4"}, []string{"r1", "r2"}, true},
		{PhaseRolledBack, 1, []string{"g1", "g2"}, []string{"r1", "r2", "b3", "b4"}, []string{"r1", "r2"}, true},
		{PhaseRolledBack, 1, []string{"g1", "g2"}, []string{"g1", "g2", "b3", "b4"}, []string{"r1", "r2"}, false},
	}
	for _, tc := range tests {
		st := RolloutState{Phase: tc.phase, Blue: blue, Green: tc.green, Surge: 50, Batch: tc.batch, Restore: tc.restore, Restored: tc.restored}
		if got := st.Serving(); !slices.Equal(got, tc.want) {
			t.Errorf("%s batch %d: Serving() = %v, want %v", tc.phase, tc.batch, got, tc.want)
		}
	}
}

func TestOptions(t *testing.T) {
	d := Options{}.WithDefaults()
	if d.Surge != 100 || d.Drain != DefaultDrain || d.ProgressDeadline != DefaultProgressDeadline || d.Bake != 0 {
		t.Errorf("defaults %+v", d)
	}
	tests := []struct {
		o    Options
		want string
	}{
		{Options{}, ""},
		{Options{Surge: 50, Bake: time.Minute}, ""},
		{Options{Surge: -1}, "surge must be"},
		{Options{Surge: 150}, "surge must be"},
		{Options{Drain: -time.Second}, "cannot be negative"},
		{Options{Bake: time.Hour}, "must be longer than the bake"},
	}
	for _, tc := range tests {
		err := tc.o.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}

func TestStateJSON(t *testing.T) {
	h := newHarness(2)
	st, err := h.rollout(fast).Start(t.Context(), 3, v2, h.blue)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(st)
	for _, key := range []string{`"phase":"succeeded"`, `"previous_stable":"web:1.0.0"`, `"blue":["web-1","web-2"]`, `"history":[`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
	back := jsonRoundTrip(t, st)
	if back.Phase != st.Phase || !slices.Equal(back.Green, st.Green) || len(back.History) != len(st.History) || !back.Deadline.Equal(st.Deadline) {
		t.Errorf("round trip changed the state:\n%+v\n%+v", st, back)
	}
}

func TestCommonVersion(t *testing.T) {
	mk := func(vs ...string) []Instance {
		var out []Instance
		for i, v := range vs {
			out = append(out, newFakeInstance(string(rune('a'+i)), v, nil))
		}
		return out
	}
	tests := []struct {
		insts []Instance
		want  string
	}{
		{mk(v1), v1},
		{mk(v1, v1), v1},
		{mk(v2, v1, v1), v1},
		{mk(v2, v1), v2}, // a tie keeps the first
	}
	for _, tc := range tests {
		if got := commonVersion(tc.insts); got != tc.want {
			t.Errorf("commonVersion = %s, want %s", got, tc.want)
		}
	}
}
