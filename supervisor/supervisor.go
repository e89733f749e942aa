package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/qemu"
)

// DefaultCheck is used when a fleet names none: the first guest port must
// accept TCP connections.
func DefaultCheck(spec Spec) fleet.Check {
	if spec.Check != nil {
		return spec.Check.WithDefaults()
	}
	if len(spec.Ports) > 0 {
		return fleet.Check{Kind: fleet.CheckTCP, Port: spec.Ports[0].Guest}.WithDefaults()
	}
	return fleet.Check{Kind: fleet.CheckExec, Command: "true"}.WithDefaults()
}

// Supervisor runs one fleet.
type Supervisor struct {
	dirs   Dirs
	spec   Spec
	store  *images.Store
	check  fleet.Check
	launch *launcher
	log    *slog.Logger

	mu        sync.Mutex
	state     State
	insts     map[string]fleet.Instance
	health    map[string]fleet.Status
	serving   []string                // ids in the load balancers' set
	balancers map[int]*fleet.Balancer // guest port -> front
	rollout   *fleet.Rollout
	rolling   bool
	replacing int // replacements under way, so the watcher does not start more

	ctx  context.Context // the supervisor's lifetime; instances live under it
	stop context.CancelFunc
}

// Run is the supervisor process: it serves until ctx ends or the CLI asks
// it to bring the fleet down. It returns an error when the fleet cannot
// start (a front port in use, an image missing); the error is also saved
// in the state file for the CLI that is waiting.
func Run(ctx context.Context, data string, name string, accel qemu.Choice, log *slog.Logger) error {
	dirs := FleetDirs(data, name)
	spec, err := ReadSpec(dirs)
	if err != nil {
		return err
	}
	store, err := images.Open(images.DefaultPaths().Images())
	if err != nil {
		return err
	}
	st, err := ReadState(dirs)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &Supervisor{
		dirs: dirs, spec: spec, store: store, check: DefaultCheck(spec), log: log,
		state: st, insts: map[string]fleet.Instance{}, health: map[string]fleet.Status{},
		balancers: map[int]*fleet.Balancer{}, ctx: ctx, stop: cancel,
	}
	s.launch = &launcher{spec: spec, dirs: dirs, store: store, accel: accel, life: ctx,
		log:    func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) },
		nextID: s.nextID}
	err = s.serve(ctx)
	failed := err != nil && !errors.Is(err, context.Canceled)
	if failed {
		// Recorded before the (slow) shutdown, so the waiting CLI can say why.
		s.mu.Lock()
		s.state.Error = err.Error()
		s.saveLocked()
		s.mu.Unlock()
		s.log.Error("fleet failed", "err", err)
	}
	s.shutdown()
	if failed {
		return err
	}
	return nil
}

func (s *Supervisor) nextID() int {
	// Called with s.launch.mu held, never with s.mu: take s.mu here.
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.NextID++
	s.saveLocked()
	return s.state.NextID
}

func (s *Supervisor) serve(ctx context.Context) error {
	s.mu.Lock()
	s.state.Supervisor = os.Getpid()
	s.state.StartedAt = time.Now().UTC()
	s.state.Error = ""
	s.state.Ready = false
	s.state.ShuttingDown = false
	if s.state.Stable == "" {
		s.state.Stable = s.spec.Image
	}
	s.state.Instances = nil
	s.saveLocked()
	s.mu.Unlock()

	// A previous supervisor that was killed may have left QEMU running.
	KillStale(s.dirs)

	for _, p := range s.spec.Ports {
		b, err := fleet.NewBalancer(fmt.Sprintf("127.0.0.1:%d", p.Host))
		if err != nil {
			return err
		}
		s.balancers[p.Guest] = b
	}
	api, err := s.listenAPI()
	if err != nil {
		return err
	}
	defer api.Close()

	// An interrupted rollout: its instances died with the old supervisor,
	// so what it left is settled here: whatever was serving before stays
	// or comes back, and the rollout is recorded as rolled back.
	s.mu.Lock()
	if r := s.state.Rollout; r != nil && !r.Phase.Terminal() {
		s.finishInterruptedLocked(r)
	}
	stable := s.state.Stable
	s.mu.Unlock()

	insts, err := s.launch.Launch(ctx, stable, s.spec.Count)
	if err != nil {
		return err
	}
	s.mu.Lock()
	for _, in := range insts {
		s.addLocked(ctx, in)
	}
	s.serving = idsOf(insts)
	s.applyLocked()
	s.mu.Unlock()

	if err := fleet.WaitHealthy(ctx, s.check, insts); err != nil {
		return fmt.Errorf("instances of %s did not become healthy (%s): %w", stable, s.check, err)
	}
	s.mu.Lock()
	s.state.Ready = true
	s.saveLocked()
	s.mu.Unlock()
	s.log.Info("fleet ready", "version", stable, "count", len(insts))

	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
			s.replaceDead(ctx)
		}
	}
}

// finishInterruptedLocked settles a rollout whose supervisor died. All VMs
// died with it, so nothing is half-switched on the machine; the record says
// what happened and the fleet comes back on its stable version.
func (s *Supervisor) finishInterruptedLocked(r *fleet.RolloutState) {
	var result string
	switch {
	case r.Phase == fleet.PhaseDraining && r.InLastBatch():
		// Green had passed its bake: the rollout had in effect succeeded.
		result = string(fleet.PhaseSucceeded)
		s.promoteLocked(r.Target)
	case r.Batch == 0 && (r.Phase == fleet.PhaseStartingGreen || r.Phase == fleet.PhaseVerifying || r.Phase == fleet.PhaseAborting):
		result = string(fleet.PhaseAborted) // traffic had not moved
	default:
		// Traffic had moved, at least in an earlier batch; the fleet comes
		// back on its stable version everywhere.
		result = string(fleet.PhaseRolledBack)
	}
	settled := "the supervisor stopped during " + string(r.Phase) + "; settled on restart"
	if r.Reason != "" { // keep why it was already failing
		settled = r.Reason + "; " + settled
	}
	r.Reason = settled
	s.state.History = append(s.state.History, RolloutSummary{
		ID: r.ID, From: r.PreviousStable, To: r.Target, Result: result, Reason: r.Reason,
		Started: r.StartedAt, Ended: time.Now().UTC(),
	})
	r.Phase = fleet.Phase(result)
	s.saveLocked()
}

func (s *Supervisor) promoteLocked(version string) {
	if s.state.Stable != version {
		s.state.Previous = append(s.state.Previous, s.state.Stable)
		s.state.Stable = version
	}
}

// addLocked starts watching a new instance's health.
func (s *Supervisor) addLocked(ctx context.Context, in fleet.Instance) {
	s.insts[in.ID()] = in
	s.health[in.ID()] = fleet.Status{Instance: in.ID(), State: fleet.Unknown}
	p := fleet.NewProber(s.check, in)
	go p.Run(ctx, func(st fleet.Status) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.insts[in.ID()]; !ok {
			return
		}
		s.health[in.ID()] = st
		s.applyLocked()
	})
	s.recordLocked()
}

func (s *Supervisor) removeLocked(id string) {
	delete(s.insts, id)
	delete(s.health, id)
	s.serving = slices.DeleteFunc(s.serving, func(x string) bool { return x == id })
	s.applyLocked()
}

// applyLocked sets every front's backends to the serving instances that are
// alive and not known to be unhealthy.
func (s *Supervisor) applyLocked() {
	for guest, b := range s.balancers {
		var addrs []string
		for _, id := range s.serving {
			in, ok := s.insts[id]
			if !ok || isDone(in) || s.health[id].State == fleet.Unhealthy {
				continue
			}
			addrs = append(addrs, in.Addr(guest))
		}
		b.SetBackends(addrs)
	}
	s.recordLocked()
}

func isDone(in fleet.Instance) bool {
	select {
	case <-in.Done():
		return true
	default:
		return false
	}
}

// recordLocked refreshes the instance list in the state file.
func (s *Supervisor) recordLocked() {
	var recs []InstanceRecord
	for id, in := range s.insts {
		v := in.(*vm)
		h := s.health[id]
		ports := map[int]int{}
		for guest := range s.balancers {
			ports[guest] = v.inst.VM.HostPort(guest)
		}
		if s.check.Port != 0 {
			ports[s.check.Port] = v.inst.VM.HostPort(s.check.Port)
		}
		state := string(h.State)
		if isDone(in) {
			state = "dead"
		}
		recs = append(recs, InstanceRecord{
			ID: id, Version: in.Version(), Pid: v.inst.VM.Pid(), Dir: v.inst.Dir,
			Accel: v.inst.VM.Accel(), CPU: v.inst.VM.CPU(),
			SSHPort: v.inst.VM.HostPort(22), Ports: ports, Started: v.started.UTC(),
			Health: state, Detail: h.LastDetail, Serving: slices.Contains(s.serving, id),
		})
	}
	slices.SortFunc(recs, func(a, b InstanceRecord) int { return compareIDs(a.ID, b.ID) })
	s.state.Instances = recs
	s.saveLocked()
}

func compareIDs(a, b string) int { return images.CompareVersions(a, b) }

func (s *Supervisor) saveLocked() error {
	s.state.UpdatedAt = time.Now().UTC()
	err := writeJSON(s.dirs.State(), s.state)
	if err != nil && s.log != nil {
		s.log.Error("save state", "err", err)
	}
	return err
}

// replaceDead notices instances that died and starts replacements of the
// same version, outside rollouts (a rollout handles its own instances).
func (s *Supervisor) replaceDead(ctx context.Context) {
	s.mu.Lock()
	if s.rolling {
		s.mu.Unlock()
		return
	}
	var dead []fleet.Instance
	for _, in := range s.insts {
		if isDone(in) {
			dead = append(dead, in)
		}
	}
	for _, in := range dead {
		s.log.Warn("instance died; replacing it", "instance", in.ID())
		s.removeLocked(in.ID())
		in.(*vm).inst.Remove()
	}
	missing := s.spec.Count - len(s.insts) - s.replacing
	version := s.state.Stable
	if missing > 0 {
		s.replacing += missing
	}
	s.mu.Unlock()
	if missing <= 0 {
		return
	}
	go func() {
		insts, err := s.launch.Launch(ctx, version, missing)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.replacing -= missing
		if err != nil {
			s.log.Error("replace instances", "err", err)
			return
		}
		for _, in := range insts {
			s.addLocked(ctx, in)
			s.serving = append(s.serving, in.ID())
		}
		s.applyLocked()
	}()
}

// shutdown stops every instance and closes the fronts.
func (s *Supervisor) shutdown() {
	s.mu.Lock()
	s.state.ShuttingDown = true
	insts := make([]fleet.Instance, 0, len(s.insts))
	for _, in := range s.insts {
		insts = append(insts, in)
	}
	for _, b := range s.balancers {
		b.Close()
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.launch.Stop(context.Background(), in)
		}()
	}
	wg.Wait()
	s.mu.Lock()
	s.insts = map[string]fleet.Instance{}
	s.serving = nil
	s.state.Instances = nil
	s.saveLocked()
	s.mu.Unlock()
}

func idsOf(insts []fleet.Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.ID()
	}
	return out
}
