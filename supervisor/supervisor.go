package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/proc"
	"github.com/kiln-dev/kiln/layout"
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
	dirs     Dirs
	spec     Spec
	store    *images.Store
	check    fleet.Check
	launch   machines
	newFront func(kind fleet.FrontKind, addr string) (fleet.Front, error)
	log      *slog.Logger

	mu        sync.Mutex
	state     State
	insts     map[string]member
	health    map[string]fleet.Status
	serving   []string            // ids in the fronts' set
	balancers map[int]fleet.Front // guest port -> front
	rollout   *fleet.Rollout
	rolling   bool
	replacing int // replacements under way, so the watcher does not start more

	ctx  context.Context // the supervisor's lifetime; instances live under it
	stop context.CancelFunc
}

// RestartReasonEnv carries why a supervisor was restarted from whatever
// restarted it (kiln's monitor, kiln fleet up) to the new supervisor.
const RestartReasonEnv = "KILN_RESTART_REASON"

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
	store, err := images.Open(layout.Default().StoreDir())
	if err != nil {
		return err
	}
	st, err := ReadState(dirs)
	if err != nil {
		return err
	}
	s := newSupervisor(ctx, dirs, spec, st, log)
	s.store = store
	defer s.stop()
	ctx = s.ctx // ends on SIGTERM or when the CLI asks the fleet down
	logf := func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) }
	if len(spec.Hosts) > 0 {
		if s.launch, err = hostMachines(data, spec, dirs, store, ctx, logf, s.nextID); err != nil {
			return err
		}
	} else {
		s.launch = &launcher{spec: spec, dirs: dirs, store: store, accel: accel, life: ctx, log: logf, nextID: s.nextID}
	}
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

func newSupervisor(ctx context.Context, dirs Dirs, spec Spec, st State, log *slog.Logger) *Supervisor {
	ctx, cancel := context.WithCancel(ctx)
	return &Supervisor{
		dirs: dirs, spec: spec, check: DefaultCheck(spec), log: log, newFront: fleet.NewFront,
		state: st, insts: map[string]member{}, health: map[string]fleet.Status{},
		balancers: map[int]fleet.Front{}, ctx: ctx, stop: cancel,
	}
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
	prev := s.begin()
	for _, p := range s.spec.Ports {
		b, err := s.newFront(s.spec.FrontFor(p.Guest), fmt.Sprintf("127.0.0.1:%d", p.Host))
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

	if err := s.recover(ctx, prev); err != nil {
		return err
	}
	s.mu.Lock()
	s.state.Ready = true
	s.saveLocked()
	n, stable := len(s.serving), s.state.Stable
	s.mu.Unlock()
	s.log.Info("fleet ready", "version", stable, "count", n)

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

// begin marks the state as this supervisor's and returns the instances the
// previous one recorded. A previous supervisor that never brought the
// fleet down died: this start is a restart, and is recorded as one.
func (s *Supervisor) begin() []InstanceRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.state.Instances
	if s.state.Supervisor != 0 {
		why := os.Getenv(RestartReasonEnv)
		if why == "" {
			why = fmt.Sprintf("the previous supervisor (pid %d) had stopped without bringing the fleet down", s.state.Supervisor)
		}
		s.state.Restarts++
		s.state.LastRestart = &RestartInfo{At: time.Now().UTC(), Reason: why, Previous: s.state.Supervisor, Adopted: []string{}}
		s.log.Warn("supervisor restarted", "reason", why, "recorded_instances", len(prev))
	}
	self := proc.Self()
	s.state.Supervisor, s.state.SupervisorStart = self.Pid, self.Start
	s.state.StartedAt = time.Now().UTC()
	s.state.Error = ""
	s.state.Ready = false
	s.state.ShuttingDown = false
	if s.state.Stable == "" {
		s.state.Stable = s.spec.Image
	}
	s.state.Instances = prev // kept until recover has looked at them
	s.saveLocked()
	return prev
}

// adoptTimeout bounds taking over one recorded instance, its SSH
// connection and first health checks included.
const adoptTimeout = 2 * time.Minute

// recover brings the fleet to its stable version with as little disturbance
// as possible. The instances a previous supervisor left running are
// adopted when they are the very QEMU processes recorded and answer QMP;
// only the others are replaced. An interrupted rollout is settled first
// (see finishInterruptedLocked). Adopted instances of the version it
// settles on that were serving and healthy when last recorded go back
// behind the front at once, so the front's gap is the restart and a QMP
// handshake; then each is reconnected over SSH (its pinned host key
// verified) and must pass its checks, or it is taken out and replaced.
// Adopted instances of another version stop, and whatever is missing is
// launched, checked, and only then given traffic.
func (s *Supervisor) recover(ctx context.Context, prev []InstanceRecord) error {
	recs := map[string]InstanceRecord{}
	for _, rec := range prev {
		recs[rec.ID] = rec
	}
	adopted, replaced := s.adoptAll(ctx, prev)
	if err := ctx.Err(); err != nil {
		for _, m := range adopted {
			m.remove()
		}
		return err
	}
	keep := map[string]bool{}
	for id := range adopted {
		keep[id] = true
	}
	// What is on disk and was not adopted: the folders of instances that
	// failed, and of any launched but never recorded.
	s.launch.Reap(keep)

	s.mu.Lock()
	settled := ""
	if r := s.state.Rollout; r != nil && !r.Phase.Terminal() {
		s.finishInterruptedLocked(r)
		settled = fmt.Sprintf("rollout %d settled as %s", r.ID, r.Phase)
	}
	stable := s.state.Stable
	var serve, extra []member
	for _, id := range slices.SortedFunc(maps.Keys(adopted), compareIDs) {
		m := adopted[id]
		if m.Version() == stable && len(serve) < s.spec.Count {
			serve = append(serve, m)
		} else {
			extra = append(extra, m)
		}
	}
	for _, m := range serve {
		rec := recs[m.ID()]
		s.insts[m.ID()] = m
		s.health[m.ID()] = fleet.Status{Instance: m.ID(), State: fleet.Unknown, LastDetail: "adopted; checking"}
		if rec.Serving && rec.Health == string(fleet.Healthy) {
			s.health[m.ID()] = fleet.Status{Instance: m.ID(), State: fleet.Healthy, LastDetail: "adopted; re-checking"}
			s.serving = append(s.serving, m.ID())
		}
	}
	for _, m := range extra {
		s.insts[m.ID()] = m // listed while it stops
	}
	s.applyLocked()
	if lr := s.state.LastRestart; lr != nil {
		lr.Rollout = settled
		lr.Completed = time.Now().UTC()
	}
	s.saveLocked()
	s.mu.Unlock()

	// The same checks as for a new instance: SSH with the pinned host key,
	// then the fleet's health check.
	failed := make([]error, len(serve))
	var wg sync.WaitGroup
	for i, m := range serve {
		wg.Go(func() {
			vctx, cancel := context.WithTimeout(ctx, adoptTimeout)
			defer cancel()
			if err := s.launch.Reconnect(vctx, m); err != nil {
				failed[i] = fmt.Errorf("SSH: %w", err)
			} else if err := fleet.WaitHealthy(vctx, s.check, []fleet.Instance{m}); err != nil {
				failed[i] = fmt.Errorf("its checks fail: %w", err)
			}
		})
	}
	wg.Wait()
	var kept []member
	s.mu.Lock()
	for i, m := range serve {
		if failed[i] != nil {
			s.log.Warn("not adopting an instance", "instance", m.ID(), "reason", failed[i])
			replaced = append(replaced, fmt.Sprintf("%s: %v", m.ID(), failed[i]))
			s.removeLocked(m.ID())
			m.remove()
			continue
		}
		kept = append(kept, m)
		s.watchLocked(ctx, m)
		if !slices.Contains(s.serving, m.ID()) {
			s.serving = append(s.serving, m.ID())
		}
		s.log.Info("adopted an instance", "instance", m.ID(), "version", m.Version(), "pid", recs[m.ID()].Pid)
	}
	s.applyLocked()
	if lr := s.state.LastRestart; lr != nil {
		lr.Adopted = idsOf(kept)
		lr.Replaced = replaced
	}
	s.saveLocked()
	s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}

	// Adopted instances of another version (a settled rollout's green, or
	// blue that had drained) go; the front no longer sends them anything.
	for _, m := range extra {
		s.log.Info("stopping an adopted instance the fleet no longer runs", "instance", m.ID(), "version", m.Version())
	}
	stopAll(context.WithoutCancel(ctx), s.launch, extra)
	s.mu.Lock()
	for _, m := range extra {
		delete(s.insts, m.ID())
	}
	s.recordLocked()
	s.mu.Unlock()

	missing := s.spec.Count - len(kept)
	if missing <= 0 {
		return nil
	}
	insts, err := s.launch.Launch(ctx, stable, missing)
	if err != nil {
		return err
	}
	s.mu.Lock()
	for _, in := range insts {
		s.addLocked(ctx, in)
	}
	s.mu.Unlock()
	if err := fleet.WaitHealthy(ctx, s.check, asInstances(insts)); err != nil {
		return fmt.Errorf("instances of %s did not become healthy (%s): %w", stable, s.check, err)
	}
	s.mu.Lock()
	s.serving = append(s.serving, idsOf(insts)...)
	s.applyLocked()
	s.mu.Unlock()
	return nil
}

// adoptAll takes over the recorded instances in parallel; replaced says
// why each one that could not be was not.
func (s *Supervisor) adoptAll(ctx context.Context, prev []InstanceRecord) (adopted map[string]member, replaced []string) {
	type adoption struct {
		m   member
		err error
	}
	results := make([]adoption, len(prev))
	var wg sync.WaitGroup
	for i, rec := range prev {
		wg.Go(func() {
			actx, cancel := context.WithTimeout(ctx, adoptTimeout)
			defer cancel()
			m, err := s.launch.Adopt(actx, rec)
			results[i] = adoption{m, err}
		})
	}
	wg.Wait()
	adopted = map[string]member{}
	for i, r := range results {
		if r.err != nil {
			s.log.Warn("not adopting an instance", "instance", prev[i].ID, "reason", r.err)
			replaced = append(replaced, fmt.Sprintf("%s: %v", prev[i].ID, r.err))
			continue
		}
		adopted[r.m.ID()] = r.m
	}
	return adopted, replaced
}

func stopAll(ctx context.Context, l machines, ms []member) {
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() { l.Stop(ctx, m) })
	}
	wg.Wait()
}

// finishInterruptedLocked settles a rollout whose supervisor died. Traffic
// is not half-switched: the new supervisor's fronts start empty and serve
// only the stable version this settles on, so the record says what
// happened and the fleet serves its stable version.
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
		Started: r.StartedAt, Ended: time.Now().UTC(), Cut: r.Cut,
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

// addLocked registers a new instance and starts watching its health.
func (s *Supervisor) addLocked(ctx context.Context, in member) {
	s.insts[in.ID()] = in
	s.health[in.ID()] = fleet.Status{Instance: in.ID(), State: fleet.Unknown}
	s.watchLocked(ctx, in)
}

// watchLocked starts the health prober of a registered instance.
func (s *Supervisor) watchLocked(ctx context.Context, in member) {
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
	var guests []int
	for guest := range s.balancers {
		guests = append(guests, guest)
	}
	if s.check.Port != 0 && !slices.Contains(guests, s.check.Port) {
		guests = append(guests, s.check.Port)
	}
	var recs []InstanceRecord
	for id, in := range s.insts {
		h := s.health[id]
		rec := in.record(guests)
		rec.Health = string(h.State)
		if isDone(in) {
			rec.Health = "dead"
		}
		rec.Detail = h.LastDetail
		rec.Serving = slices.Contains(s.serving, id)
		recs = append(recs, rec)
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
	var dead []member
	for _, in := range s.insts {
		if isDone(in) {
			dead = append(dead, in)
		}
	}
	for _, in := range dead {
		s.log.Warn("instance died; replacing it", "instance", in.ID())
		s.removeLocked(in.ID())
		in.remove()
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
		if err != nil {
			s.replacing -= missing
			s.mu.Unlock()
			s.log.Error("replace instances", "err", err)
			return
		}
		for _, in := range insts {
			s.addLocked(ctx, in)
		}
		s.mu.Unlock()
		// Traffic only once it answers: a guest still booting would take
		// connections (QEMU accepts them) and reset them.
		if err := fleet.WaitHealthy(ctx, s.check, asInstances(insts)); err != nil {
			s.log.Warn("replacement not healthy", "err", err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.replacing -= missing
		if s.rolling {
			return // the rollout owns the serving set; it stops what it did not take
		}
		for _, in := range insts {
			if _, ok := s.insts[in.ID()]; ok {
				s.serving = append(s.serving, in.ID())
			}
		}
		s.applyLocked()
	}()
}

// shutdown stops every instance and closes the fronts.
func (s *Supervisor) shutdown() {
	s.mu.Lock()
	s.state.ShuttingDown = true
	insts := make([]member, 0, len(s.insts))
	for _, in := range s.insts {
		insts = append(insts, in)
	}
	for _, b := range s.balancers {
		b.Close()
	}
	s.mu.Unlock()
	stopAll(context.Background(), s.launch, insts)
	s.mu.Lock()
	s.insts = map[string]member{}
	s.serving = nil
	s.state.Instances = nil
	s.saveLocked()
	s.mu.Unlock()
}

func asInstances(ms []member) []fleet.Instance {
	out := make([]fleet.Instance, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

func idsOf[T fleet.Instance](insts []T) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.ID()
	}
	return out
}
