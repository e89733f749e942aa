package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/qemu"
)

// RolloutRequest is what `kiln rollout` and `kiln rollback` ask for.
type RolloutRequest struct {
	To               string        `json:"to"`
	Surge            int           `json:"surge"`
	Bake             time.Duration `json:"bake"`
	Drain            time.Duration `json:"drain"`
	ProgressDeadline time.Duration `json:"progress_deadline"`
	AutoPromote      bool          `json:"auto_promote"`
	Check            *fleet.Check  `json:"check,omitempty"` // overrides the fleet's check for this rollout
	Rollback         bool          `json:"rollback"`
	Force            bool          `json:"force"` // use a revoked image
	// Accel, when set, is what the rollout's instances (and later
	// replacements) run under, as the CLI's accelerator probe chose it.
	Accel qemu.Accel `json:"accel,omitempty"`
	CPU   string     `json:"cpu_model,omitempty"`
	// Cold boots the rollout's instances (and the fleet's later ones)
	// instead of resuming a saved guest, as the fleet's Spec.Cold does.
	Cold bool `json:"cold,omitempty"`
}

// traffic lets a rollout move the load balancers: it names instances by
// their service address, and every front follows.
type traffic struct {
	s    *Supervisor
	port int
}

func (t traffic) SetBackends(addrs []string) {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	var ids []string
	for _, a := range addrs {
		for id, in := range t.s.insts {
			if in.Addr(t.port) == a {
				ids = append(ids, id)
			}
		}
	}
	t.s.serving = ids
	t.s.applyLocked()
}

func (t traffic) Drain(ctx context.Context, addr string) error {
	t.s.mu.Lock()
	var target fleet.Instance
	for _, in := range t.s.insts {
		if in.Addr(t.port) == addr {
			target = in
		}
	}
	balancers := t.s.balancers
	t.s.mu.Unlock()
	if target == nil {
		return nil
	}
	var errs []error
	for guest, b := range balancers {
		errs = append(errs, b.Drain(ctx, target.Addr(guest)))
	}
	return errors.Join(errs...)
}

// rolloutLauncher registers the rollout's instances with the supervisor, so
// they are health-checked, listed and stopped with the fleet.
type rolloutLauncher struct{ s *Supervisor }

func (l rolloutLauncher) Launch(ctx context.Context, version string, n int) ([]fleet.Instance, error) {
	insts, err := l.s.launch.Launch(ctx, version, n)
	if err != nil {
		return nil, err
	}
	l.s.mu.Lock()
	for _, in := range insts {
		l.s.addLocked(l.s.ctx, in)
	}
	l.s.mu.Unlock()
	return asInstances(insts), nil
}

func (l rolloutLauncher) Stop(ctx context.Context, in fleet.Instance) error {
	m, ok := in.(member) // every instance a rollout holds came from the supervisor
	if !ok {
		return fmt.Errorf("instance %s is not one of the fleet's", in.ID())
	}
	l.s.mu.Lock()
	l.s.removeLocked(in.ID())
	l.s.mu.Unlock()
	return l.s.launch.Stop(ctx, m)
}

// startRollout validates the request and runs the rollout in the
// background; the CLI follows it through the state.
func (s *Supervisor) startRollout(req RolloutRequest) (int, error) {
	if len(s.spec.Ports) == 0 {
		return 0, errors.New("this fleet has no front port: a rollout needs a service port to move traffic on")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rolling {
		return 0, fmt.Errorf("rollout %d is still running; wait for it (kiln rollout status %s)", s.state.Rollout.ID, s.spec.Name)
	}
	if !s.state.Ready {
		return 0, errors.New("the fleet is still starting; try again when `kiln fleet status` shows it healthy")
	}
	if req.Rollback && req.To == "" {
		if len(s.state.Previous) == 0 {
			return 0, errors.New("nothing to roll back to: the fleet has had one stable version only")
		}
		req.To = s.state.Previous[len(s.state.Previous)-1]
	}
	ref, err := images.ParseRef(req.To)
	if err != nil {
		return 0, err
	}
	m, err := s.store.Resolve(ref)
	if err != nil {
		return 0, err
	}
	if err := s.store.CheckUsable(m, req.Force); err != nil {
		return 0, err
	}
	target := m.Ref().String()
	if target == s.state.Stable {
		return 0, fmt.Errorf("the fleet already runs %s", target)
	}
	check := s.check
	if req.Check != nil {
		check = req.Check.WithDefaults()
		if err := check.Validate(); err != nil {
			return 0, err
		}
	}
	opts := fleet.Options{Bake: req.Bake, Drain: req.Drain, ProgressDeadline: req.ProgressDeadline,
		Surge: req.Surge, AutoPromote: req.AutoPromote}
	if err := opts.WithDefaults().Validate(); err != nil {
		return 0, err
	}
	if req.Accel != "" {
		s.launch.SetAccel(qemu.Choice{Accel: req.Accel, CPU: req.CPU})
	}
	if req.Cold {
		s.launch.SetCold()
	}
	var blue []fleet.Instance
	for _, id := range s.serving {
		blue = append(blue, s.insts[id])
	}
	id := len(s.state.History) + 1
	if s.state.Rollout != nil && s.state.Rollout.ID >= id {
		id = s.state.Rollout.ID + 1
	}
	port := s.spec.Ports[0].Guest
	r := &fleet.Rollout{
		Launcher: rolloutLauncher{s}, Traffic: traffic{s, port}, Port: port,
		Verify: func(ctx context.Context, green []fleet.Instance) error { return fleet.WaitHealthy(ctx, check, green) },
		// The previous version is judged by the fleet's own checks, not by
		// checks given for the new one.
		VerifyRestore: func(ctx context.Context, insts []fleet.Instance) error {
			return fleet.WaitHealthy(ctx, s.check, insts)
		},
		Watch: func(ctx context.Context, green []fleet.Instance, d time.Duration) error {
			return fleet.WatchHealthy(ctx, check, green, d)
		},
		Persist: func(st fleet.RolloutState) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.state.Rollout = &st
			return s.saveLocked()
		},
		Options: opts,
	}
	s.rolling = true
	s.rollout = r
	from := s.state.Stable
	started := time.Now().UTC()
	go func() {
		st, err := r.Start(s.ctx, id, target, blue)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.rolling = false
		s.rollout = nil
		if err != nil && s.ctx.Err() != nil {
			return // the supervisor is stopping; the next one settles it
		}
		result := string(st.Phase)
		if err != nil && !st.Phase.Terminal() {
			result = "failed"
			st.Reason = err.Error()
		}
		if st.Phase == fleet.PhaseSucceeded && st.Cut > 0 {
			// Clients lost something: not a plain success.
			result = ResultSucceededWithCuts
			st.Reason = fmt.Sprintf("cut %d %s still open at the drain deadline (%s); a longer drain window lets them finish",
				st.Cut, s.cutWhat(port), st.Drain)
		}
		if st.Phase == fleet.PhaseSucceeded {
			s.promoteLocked(target)
		}
		// Whatever the ending, exactly the instances the rollout left
		// serving stay; anything else it launched or kept goes.
		if st.Phase.Terminal() {
			s.serving = st.Serving()
			s.applyLocked()
			for id, in := range s.insts {
				if !slices.Contains(s.serving, id) {
					s.log.Warn("stopping an instance the rollout left behind", "instance", id)
					s.removeLocked(id)
					go s.launch.Stop(context.Background(), in)
				}
			}
		}
		s.state.History = append(s.state.History, RolloutSummary{
			ID: id, From: from, To: target, Result: result, Reason: st.Reason, Started: started, Ended: time.Now().UTC(),
			Cut: st.Cut,
		})
		s.state.Rollout = &st
		s.saveLocked()
		s.log.Info("rollout ended", "id", id, "to", target, "result", result, "reason", st.Reason)
	}()
	return id, nil
}

// cutWhat names what a drain on the front of guest port cuts.
func (s *Supervisor) cutWhat(guest int) string {
	if s.spec.FrontFor(guest) == fleet.FrontHTTP {
		return "requests"
	}
	return "connections"
}
