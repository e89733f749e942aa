package supervisor

import (
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/fleet"
)

func TestSpecValidate(t *testing.T) {
	good := Spec{Name: "web", Image: "hello:1.0.0", Count: 2, Ports: []Port{{8080, 8080}}}
	cases := []struct {
		name    string
		edit    func(*Spec)
		wantErr string
	}{
		{"good", func(*Spec) {}, ""},
		{"bad name", func(s *Spec) { s.Name = "Web_1" }, `name "Web_1"`},
		{"bad ref", func(s *Spec) { s.Image = "Hello:1" }, "invalid image ref"},
		{"no instances", func(s *Spec) { s.Count = 0 }, "count 0: use 1 to 16"},
		{"port twice", func(s *Spec) { s.Ports = append(s.Ports, Port{8080, 80}) }, "given twice"},
		{"bad port", func(s *Spec) { s.Ports = []Port{{70000, 80}} }, "1 to 65535"},
		{"bad check", func(s *Spec) { s.Check = &fleet.Check{Kind: "ping"} }, "ping"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := good
			s.Ports = append([]Port(nil), good.Ports...)
			c.edit(&s)
			err := s.Validate()
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Errorf("err = %v, want %q", err, c.wantErr)
			}
		})
	}
}

func TestDefaultCheck(t *testing.T) {
	if c := DefaultCheck(Spec{Ports: []Port{{8080, 80}}}); c.Kind != fleet.CheckTCP || c.Port != 80 {
		t.Errorf("default check with a port = %+v", c)
	}
	if c := DefaultCheck(Spec{}); c.Kind != fleet.CheckExec {
		t.Errorf("default check without ports = %+v", c)
	}
	http := &fleet.Check{Kind: fleet.CheckHTTP, Path: "/healthz", Port: 8080}
	if c := DefaultCheck(Spec{Check: http}); c.Kind != fleet.CheckHTTP || c.Interval == 0 {
		t.Errorf("a given check must be kept with defaults filled: %+v", c)
	}
}

func TestStateRoundTrip(t *testing.T) {
	d := Dirs{Root: t.TempDir()}
	if st, err := ReadState(d); err != nil || st.Stable != "" {
		t.Fatalf("a missing state file must read as empty: %+v, %v", st, err)
	}
	want := State{Stable: "hello:1.1.0", Previous: []string{"hello:1.0.0"}, NextID: 4,
		Rollout: &fleet.RolloutState{ID: 1, Target: "hello:1.1.0", Phase: fleet.PhaseBaking, Blue: []string{"web-1"}, Green: []string{"web-3"}}}
	if err := writeJSON(d.State(), want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadState(d)
	if err != nil || got.Stable != want.Stable || got.Rollout.Phase != fleet.PhaseBaking || got.Rollout.Green[0] != "web-3" {
		t.Errorf("got %+v, %v", got, err)
	}
}

func TestInterruptedRolloutIsSettled(t *testing.T) {
	cases := []struct {
		phase      fleet.Phase
		wantStable string
		wantResult string
	}{
		{fleet.PhaseStartingGreen, "hello:1.0.0", "aborted"},
		{fleet.PhaseVerifying, "hello:1.0.0", "aborted"},
		{fleet.PhaseSwitching, "hello:1.0.0", "rolled-back"},
		{fleet.PhaseBaking, "hello:1.0.0", "rolled-back"},
		{fleet.PhaseDraining, "hello:1.1.0", "succeeded"},
		{fleet.PhaseAborting, "hello:1.0.0", "aborted"},
		{fleet.PhaseRollingBack, "hello:1.0.0", "rolled-back"},
	}
	for _, c := range cases {
		t.Run(string(c.phase), func(t *testing.T) {
			s := &Supervisor{dirs: Dirs{Root: t.TempDir()}, state: State{Stable: "hello:1.0.0"}}
			r := &fleet.RolloutState{ID: 1, Target: "hello:1.1.0", PreviousStable: "hello:1.0.0", Phase: c.phase}
			s.state.Rollout = r
			s.finishInterruptedLocked(r)
			if s.state.Stable != c.wantStable {
				t.Errorf("stable = %s, want %s", s.state.Stable, c.wantStable)
			}
			if len(s.state.History) != 1 || s.state.History[0].Result != c.wantResult || !r.Phase.Terminal() {
				t.Errorf("history = %+v, phase %s", s.state.History, r.Phase)
			}
			saved, _ := ReadState(s.dirs)
			if saved.Stable != c.wantStable {
				t.Error("the settled state was not saved")
			}
		})
	}
}
