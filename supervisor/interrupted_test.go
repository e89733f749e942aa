package supervisor

import (
	"fmt"
	"os"
	"testing"

	"github.com/kiln-dev/kiln/fleet"
)

// A supervisor killed mid-rollout leaves its rollout in some phase; the
// next supervisor settles it from what had happened to traffic by then, and
// saves the result so `kiln rollout history` shows it.
func TestFinishInterruptedRollout(t *testing.T) {
	cases := []struct {
		phase      fleet.Phase
		batch      int // of two
		wantResult fleet.Phase
		wantStable string
	}{
		{fleet.PhaseStartingGreen, 0, fleet.PhaseAborted, "hello:1.0.0"},
		{fleet.PhaseVerifying, 0, fleet.PhaseAborted, "hello:1.0.0"},
		{fleet.PhaseAborting, 0, fleet.PhaseAborted, "hello:1.0.0"},
		{fleet.PhaseSwitching, 0, fleet.PhaseRolledBack, "hello:1.0.0"},
		{fleet.PhaseBaking, 0, fleet.PhaseRolledBack, "hello:1.0.0"},
		{fleet.PhaseRollingBack, 0, fleet.PhaseRolledBack, "hello:1.0.0"},
		{fleet.PhaseDraining, 1, fleet.PhaseSucceeded, "hello:1.1.0"},
		// a later batch: the earlier one had moved traffic
		{fleet.PhaseVerifying, 1, fleet.PhaseRolledBack, "hello:1.0.0"},
		{fleet.PhaseAborting, 1, fleet.PhaseRolledBack, "hello:1.0.0"},
		{fleet.PhaseRestoring, 1, fleet.PhaseRolledBack, "hello:1.0.0"},
		{fleet.PhaseRestoreDraining, 1, fleet.PhaseRolledBack, "hello:1.0.0"},
		// draining the first of two batches is not the end of the rollout
		{fleet.PhaseDraining, 0, fleet.PhaseRolledBack, "hello:1.0.0"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s in batch %d", c.phase, c.batch+1), func(t *testing.T) {
			dirs := FleetDirs(t.TempDir(), "web")
			if err := os.MkdirAll(dirs.Root, 0o700); err != nil {
				t.Fatal(err)
			}
			r := &fleet.RolloutState{ID: 3, Target: "hello:1.1.0", PreviousStable: "hello:1.0.0", Phase: c.phase,
				Batch: c.batch, Blue: []string{"web-1", "web-2"}, Surge: 50}
			s := &Supervisor{dirs: dirs, state: State{Stable: "hello:1.0.0", Rollout: r}}
			s.finishInterruptedLocked(r)
			if r.Phase != c.wantResult || s.state.Stable != c.wantStable {
				t.Errorf("phase %s, stable %s; want %s, %s", r.Phase, s.state.Stable, c.wantResult, c.wantStable)
			}
			saved, err := ReadState(dirs)
			if err != nil {
				t.Fatal(err)
			}
			if len(saved.History) != 1 || saved.History[0].Result != string(c.wantResult) || saved.Stable != c.wantStable {
				t.Errorf("saved state: stable %s, history %+v", saved.Stable, saved.History)
			}
			if !saved.Rollout.Phase.Terminal() {
				t.Errorf("saved rollout still in %s", saved.Rollout.Phase)
			}
		})
	}
}
