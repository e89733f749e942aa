package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Phase is where a rollout stands. It is persisted after every change so a
// restarted supervisor knows exactly what was under way.
type Phase string

// Rollout phases. A rollout moves forward through starting-green,
// verifying, switching, baking and draining (once per batch) to succeeded;
// a failure before the switch goes through aborting to aborted, after it
// through rolling-back to rolled-back. When a later batch fails, the
// earlier batches already serve the target: restoring launches the
// previous version in their place and restore-draining retires them, so
// the fleet ends whole on the version it started from.
const (
	PhaseIdle          Phase = "idle"
	PhaseStartingGreen Phase = "starting-green"
	PhaseVerifying     Phase = "verifying"
	PhaseSwitching     Phase = "switching"
	PhaseBaking        Phase = "baking"
	PhaseDraining      Phase = "draining"
	PhaseSucceeded     Phase = "succeeded"
	PhaseAborting      Phase = "aborting"
	PhaseRollingBack   Phase = "rolling-back"
	PhaseAborted       Phase = "aborted"
	PhaseRolledBack    Phase = "rolled-back"

	PhaseRestoring       Phase = "restoring"
	PhaseRestoreDraining Phase = "restore-draining"
)

// nextPhases lists the legal transitions. switching → rolling-back happens
// when green vanished while the supervisor was down: the switch may already
// have been applied, so only a rollback is safe.
var nextPhases = map[Phase][]Phase{
	PhaseIdle:            {PhaseStartingGreen},
	PhaseStartingGreen:   {PhaseVerifying, PhaseAborting},
	PhaseVerifying:       {PhaseSwitching, PhaseAborting},
	PhaseSwitching:       {PhaseBaking, PhaseRollingBack},
	PhaseBaking:          {PhaseDraining, PhaseRollingBack},
	PhaseDraining:        {PhaseStartingGreen, PhaseSucceeded},
	PhaseAborting:        {PhaseAborted, PhaseRestoring},
	PhaseRollingBack:     {PhaseRolledBack, PhaseRestoring},
	PhaseRestoring:       {PhaseRestoreDraining, PhaseRolledBack},
	PhaseRestoreDraining: {PhaseRolledBack},
}

// Terminal reports whether a rollout in phase p is over.
func (p Phase) Terminal() bool {
	return p == PhaseSucceeded || p == PhaseAborted || p == PhaseRolledBack
}

func (p Phase) known() bool {
	_, ok := nextPhases[p]
	return ok || p.Terminal()
}

func canTransition(from, to Phase) bool { return slices.Contains(nextPhases[from], to) }

// Transition is one entry of a rollout's history.
type Transition struct {
	From Phase     `json:"from"`
	To   Phase     `json:"to"`
	At   time.Time `json:"at"`
	Note string    `json:"note,omitempty"`
}

// RolloutState is what the supervisor persists after every transition:
// enough for a restarted supervisor to settle an interrupted rollout
// (supervisor.finishInterruptedLocked) and for status to explain it.
// Instances are recorded by id.
type RolloutState struct {
	ID             int      `json:"id"`
	Target         string   `json:"target"`          // image ref being rolled out
	PreviousStable string   `json:"previous_stable"` // what blue ran
	Phase          Phase    `json:"phase"`
	Blue           []string `json:"blue"`  // instances serving when the rollout started
	Green          []string `json:"green"` // instances launched so far, batch after batch

	// Options the rollout started with.
	Surge       int           `json:"surge"` // percent; 100 = all green at once
	Bake        time.Duration `json:"bake"`
	Drain       time.Duration `json:"drain"`
	AutoPromote bool          `json:"auto_promote"`
	// ProgressDeadline is the window Deadline was set from; Deadline moves
	// on while waiting for promotion, the window does not.
	ProgressDeadline time.Duration `json:"progress_deadline"`

	Batch  int    `json:"batch"`            // current batch when Surge < 100, from 0
	Reason string `json:"reason,omitempty"` // why it aborted or rolled back
	// Cut counts the connections (TCP fronts) or requests (HTTP fronts)
	// still open on retiring instances at a drain deadline, cut when they
	// stopped: a rollout that cut any did not go unnoticed by clients.
	Cut int `json:"cut,omitempty"`

	// Restore holds the previous version's instances launched in place of
	// the earlier batches' green after a later batch failed; Restored
	// says traffic moved to them.
	Restore         []string  `json:"restore,omitempty"`
	Restored        bool      `json:"restored,omitempty"`
	RestoreDeadline time.Time `json:"restore_deadline,omitzero"`

	StartedAt time.Time    `json:"started_at"`
	UpdatedAt time.Time    `json:"updated_at"`
	Deadline  time.Time    `json:"deadline"`            // progress deadline for the whole rollout
	BakeUntil time.Time    `json:"bake_until,omitzero"` // end of the current batch's bake
	PausedAt  time.Time    `json:"paused_at,omitzero"`  // waiting for Promote since; the deadline is suspended meanwhile
	History   []Transition `json:"history"`
}

func (s RolloutState) clone() RolloutState {
	s.Blue = slices.Clone(s.Blue)
	s.Green = slices.Clone(s.Green)
	s.Restore = slices.Clone(s.Restore)
	s.History = slices.Clone(s.History)
	return s
}

// batchSize is how many blue instances each batch replaces.
func (s RolloutState) batchSize() int {
	n := len(s.Blue)
	k := (n*s.Surge + 99) / 100
	return min(max(k, 1), max(n, 1))
}

func (s RolloutState) batches() int {
	k := s.batchSize()
	return (len(s.Blue) + k - 1) / k
}

// InLastBatch says whether the current batch is the rollout's last: with
// Surge 100, always.
func (s RolloutState) InLastBatch() bool { return s.Batch+1 >= s.batches() }

// batchRange is the current batch's slice of Blue (to retire) and of Green
// (to launch).
func (s RolloutState) batchRange() (lo, hi int) {
	k := s.batchSize()
	lo = min(s.Batch*k, len(s.Blue))
	return lo, min(lo+k, len(s.Blue))
}

// batchGreen is the current batch's green, as far as it was launched.
func (s RolloutState) batchGreen() []string {
	lo, hi := s.batchRange()
	return s.Green[min(lo, len(s.Green)):min(hi, len(s.Green))]
}

// before is the serving set before the current batch's switch.
func (s RolloutState) before() []string {
	lo, _ := s.batchRange()
	return slices.Concat(s.Green[:min(lo, len(s.Green))], s.Blue[lo:])
}

// after is the serving set once the current batch's switch is applied.
func (s RolloutState) after() []string {
	_, hi := s.batchRange()
	return slices.Concat(s.Green[:min(hi, len(s.Green))], s.Blue[hi:])
}

// earlier is the green of the batches before the current one: what a
// restore replaces.
func (s RolloutState) earlier() []string {
	lo, _ := s.batchRange()
	return s.Green[:min(lo, len(s.Green))]
}

// restored is the serving set once a restore has switched: the previous
// version everywhere.
func (s RolloutState) restored() []string {
	lo, _ := s.batchRange()
	return slices.Concat(s.Restore, s.Blue[lo:])
}

// Serving lists the ids that take traffic in this state. Before a batch's
// switch, and after an abort or rollback, that is the set before the
// batch; from the switch on it includes the batch's green; once a restore
// switched, the restored set. With Surge 100 that is exactly blue or
// exactly green.
func (s RolloutState) Serving() []string {
	switch {
	case s.Phase == PhaseSwitching, s.Phase == PhaseBaking, s.Phase == PhaseDraining, s.Phase == PhaseSucceeded:
		return s.after()
	case s.Phase == PhaseRestoreDraining, s.Phase == PhaseRolledBack && s.Restored:
		return s.restored()
	}
	return s.before()
}

// Default rollout options. Bake defaults to no bake: zero Options then mean
// "switch as soon as green is healthy".
const (
	DefaultDrain            = 30 * time.Second
	DefaultProgressDeadline = 15 * time.Minute // TCG boots take a minute or more each
	DefaultSurge            = 100
)

// Options tune a rollout. Zero fields take the defaults.
type Options struct {
	Bake             time.Duration // green must stay healthy this long after the switch before blue stops
	Drain            time.Duration // longest wait for a retiring instance's connections; default 30s
	ProgressDeadline time.Duration // for the whole rollout; default 15m
	Surge            int           // percent of the fleet replaced per batch, 1-100; default 100
	// AutoPromote switches traffic as soon as green is healthy. When false
	// the rollout waits in verifying for Rollout.Promote before each switch.
	AutoPromote bool
}

// WithDefaults returns o with zero fields set to their defaults.
func (o Options) WithDefaults() Options {
	if o.Drain == 0 {
		o.Drain = DefaultDrain
	}
	if o.ProgressDeadline == 0 {
		o.ProgressDeadline = DefaultProgressDeadline
	}
	if o.Surge == 0 {
		o.Surge = DefaultSurge
	}
	return o
}

// Validate reports the first thing wrong with o (after defaults).
func (o Options) Validate() error {
	o = o.WithDefaults()
	switch {
	case o.Surge < 1 || o.Surge > 100:
		return fmt.Errorf("rollout: surge must be a percentage from 1 to 100, got %d", o.Surge)
	case o.Bake < 0 || o.Drain < 0 || o.ProgressDeadline < 0:
		return errors.New("rollout: bake, drain and progress deadline cannot be negative")
	case o.ProgressDeadline <= o.Bake:
		return fmt.Errorf("rollout: progress deadline %s must be longer than the bake %s", o.ProgressDeadline, o.Bake)
	}
	return nil
}

// Traffic is the part of a Balancer a rollout drives; tests fake it.
type Traffic interface {
	SetBackends(addrs []string)
	Drain(ctx context.Context, addr string) error
}

// ErrNotPaused is returned by Promote when no switch is waiting for it.
var ErrNotPaused = errors.New("rollout is not waiting for promotion")

// Rollout drives one blue/green rollout. Fill in the fields, then call
// Start. One Rollout runs one rollout; a rollout whose supervisor died is
// not resumed but settled by the next supervisor (back to the version that
// was stable, or forward when only blue's draining was left).
//
// While it runs, the rollout owns the traffic set: it calls SetBackends at
// the switch and on rollback.
//
// With Surge < 100 each batch is launched, verified, switched, baked and
// drained in turn. A failure in a later batch undoes that batch, then
// restores the earlier ones: the previous version is launched in place of
// their green, verified, switched to, and the green drained and stopped,
// so the fleet ends on PreviousStable everywhere, as a cloud's rolling
// update with rollback does. Only when the restore itself fails does the
// fleet end mixed (Serving says which, the reason says why).
type Rollout struct {
	Launcher Launcher
	Traffic  Traffic
	Port     int // guest port the service listens on; backends are Addr(Port)

	// Verify blocks until every given instance is healthy, or returns an
	// error when one is unhealthy or ctx ends. WaitHealthy fits.
	Verify func(ctx context.Context, green []Instance) error
	// VerifyRestore checks the previous version's instances a restore
	// launched; nil uses Verify. A rollout's own checks may be written for
	// the new version, so the supervisor passes the fleet's checks here.
	VerifyRestore func(ctx context.Context, insts []Instance) error
	// Watch returns nil after d if the instances stayed healthy, an error
	// as soon as one is not. WatchHealthy fits. Nil only watches for
	// instances dying.
	Watch func(ctx context.Context, green []Instance, d time.Duration) error
	// Persist stores the state durably. It is called after every
	// transition, before the new phase is acted on; an error stops the
	// rollout where it is, at the last stored state.
	Persist func(RolloutState) error
	Options Options

	insts map[string]Instance

	mu      sync.Mutex
	saved   RolloutState
	promote chan struct{}
}

// State returns the last persisted state.
func (r *Rollout) State() RolloutState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.saved.clone()
}

// Promote lets a rollout waiting for promotion (AutoPromote false) switch.
func (r *Rollout) Promote() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.promote == nil {
		return ErrNotPaused
	}
	close(r.promote)
	r.promote = nil
	return nil
}

func (r *Rollout) check() error {
	switch {
	case r.Launcher == nil, r.Traffic == nil, r.Verify == nil, r.Persist == nil:
		return errors.New("rollout: Launcher, Traffic, Verify and Persist are required")
	case r.Port < 1 || r.Port > 65535:
		return fmt.Errorf("rollout: service guest port must be between 1 and 65535, got %d", r.Port)
	}
	return nil
}

// Start rolls blue (the instances serving now) over to target. It returns
// the final state, or, when ctx ends or Persist fails, the last persisted
// state with the error.
func (r *Rollout) Start(ctx context.Context, id int, target string, blue []Instance) (RolloutState, error) {
	if err := r.check(); err != nil {
		return RolloutState{}, err
	}
	o := r.Options.WithDefaults()
	if err := o.Validate(); err != nil {
		return RolloutState{}, err
	}
	if target == "" {
		return RolloutState{}, errors.New("rollout: no target version")
	}
	if len(blue) == 0 {
		return RolloutState{}, errors.New("rollout: the fleet has no running instances to replace")
	}
	r.insts = map[string]Instance{}
	for _, in := range blue {
		if _, dup := r.insts[in.ID()]; dup {
			return RolloutState{}, fmt.Errorf("rollout: instance %s given twice", in.ID())
		}
		if in.Addr(r.Port) == "" {
			return RolloutState{}, fmt.Errorf("rollout: %s does not forward guest port %d", in.ID(), r.Port)
		}
		r.insts[in.ID()] = in
	}
	now := time.Now()
	st := RolloutState{
		ID:               id,
		Target:           target,
		PreviousStable:   commonVersion(blue),
		Phase:            PhaseIdle,
		Blue:             ids(blue),
		Green:            []string{},
		Surge:            o.Surge,
		Bake:             o.Bake,
		Drain:            o.Drain,
		AutoPromote:      o.AutoPromote,
		ProgressDeadline: o.ProgressDeadline,
		StartedAt:        now,
		UpdatedAt:        now,
		Deadline:         now.Add(o.ProgressDeadline),
	}
	return r.run(ctx, st)
}

func (r *Rollout) run(ctx context.Context, st RolloutState) (RolloutState, error) {
	r.setSaved(st)
	for !st.Phase.Terminal() {
		// A cancelled ctx means the supervisor is going away: stop without
		// acting on the phase just persisted; the next one settles it.
		if err := ctx.Err(); err != nil {
			return r.State(), err
		}
		next, note, err := r.step(ctx, &st)
		if err != nil {
			return r.State(), err
		}
		if err := r.transition(&st, next, note); err != nil {
			return r.State(), err
		}
	}
	return st.clone(), nil
}

func (r *Rollout) setSaved(st RolloutState) {
	r.mu.Lock()
	r.saved = st.clone()
	r.mu.Unlock()
}

func (r *Rollout) save(st *RolloutState) error {
	st.UpdatedAt = time.Now()
	if err := r.Persist(st.clone()); err != nil {
		return fmt.Errorf("rollout %d: persist %s: %w", st.ID, st.Phase, err)
	}
	r.setSaved(*st)
	return nil
}

func (r *Rollout) transition(st *RolloutState, to Phase, note string) error {
	if !canTransition(st.Phase, to) {
		return fmt.Errorf("rollout %d: illegal transition %s → %s", st.ID, st.Phase, to)
	}
	st.History = append(st.History, Transition{From: st.Phase, To: to, At: time.Now(), Note: note})
	st.Phase = to
	return r.save(st)
}

// step acts on st.Phase and says which phase comes next and why. An error
// means stop here (ctx ended, or Persist failed); failures of the rollout
// itself are transitions, not errors.
func (r *Rollout) step(ctx context.Context, st *RolloutState) (Phase, string, error) {
	switch st.Phase {
	case PhaseIdle:
		return PhaseStartingGreen, fmt.Sprintf("%s → %s, %d instances, %d batches", st.PreviousStable, st.Target, len(st.Blue), st.batches()), nil
	case PhaseStartingGreen:
		return r.startGreen(ctx, st)
	case PhaseVerifying:
		return r.verify(ctx, st)
	case PhaseSwitching:
		return r.switchTraffic(st)
	case PhaseBaking:
		return r.bake(ctx, st)
	case PhaseDraining:
		return r.drainBlue(ctx, st)
	case PhaseAborting:
		return r.abort(ctx, st)
	case PhaseRollingBack:
		return r.rollBack(ctx, st)
	case PhaseRestoring:
		return r.restore(ctx, st)
	case PhaseRestoreDraining:
		return r.drainEarlier(ctx, st)
	}
	return "", "", fmt.Errorf("rollout %d: nothing to do in phase %q", st.ID, st.Phase)
}

// fail records why the rollout is giving up and moves to phase to.
func fail(st *RolloutState, to Phase, reason string) (Phase, string, error) {
	st.Reason = reason
	return to, reason, nil
}

// failure turns an error from launching, verifying or baking into the
// right move: stop when ctx ended, otherwise abort or roll back, naming
// the progress deadline when that is what cut the work short.
func failure(ctx context.Context, st *RolloutState, to Phase, doing string, err error) (Phase, string, error) {
	if ctx.Err() != nil {
		return "", "", ctx.Err()
	}
	// Judge by the clock, not by err: a launcher's own boot timeout also
	// wraps context.DeadlineExceeded.
	if deadlinePassed(st) {
		return fail(st, to, fmt.Sprintf("progress deadline passed while %s", doing))
	}
	return fail(st, to, fmt.Sprintf("%s: %v", doing, err))
}

func deadlinePassed(st *RolloutState) bool { return !time.Now().Before(st.Deadline) }

func (r *Rollout) startGreen(ctx context.Context, st *RolloutState) (Phase, string, error) {
	lo, hi := st.batchRange()
	st.Green = st.Green[:min(lo, len(st.Green))]
	if deadlinePassed(st) {
		return fail(st, PhaseAborting, "progress deadline passed before green started")
	}
	n := hi - lo
	dctx, cancel := context.WithDeadline(ctx, st.Deadline)
	defer cancel()
	green, err := r.Launcher.Launch(dctx, st.Target, n)
	if err != nil {
		return failure(ctx, st, PhaseAborting, fmt.Sprintf("starting %d green of %s", n, st.Target), err)
	}
	// Record what was launched even if ctx ended meanwhile: the transition
	// persists the ids, so whoever settles the rollout can stop them.
	for _, in := range green {
		r.insts[in.ID()] = in
	}
	st.Green = append(st.Green, ids(green)...)
	if len(green) != n {
		return fail(st, PhaseAborting, fmt.Sprintf("launcher started %d instances, want %d", len(green), n))
	}
	return PhaseVerifying, "started " + strings.Join(ids(green), ", "), nil
}

func (r *Rollout) verify(ctx context.Context, st *RolloutState) (Phase, string, error) {
	green, gone := r.resolve(st.batchGreen())
	if gone != "" {
		return fail(st, PhaseAborting, fmt.Sprintf("green %s is gone", gone))
	}
	for _, in := range green {
		if in.Addr(r.Port) == "" {
			return fail(st, PhaseAborting, fmt.Sprintf("green %s does not forward guest port %d", in.ID(), r.Port))
		}
	}
	if deadlinePassed(st) {
		return fail(st, PhaseAborting, "progress deadline passed before green was verified")
	}
	if err := r.gate(ctx, st, green); err != nil {
		return failure(ctx, st, PhaseAborting, "verifying green", err)
	}
	if !st.AutoPromote {
		if err := r.awaitPromotion(ctx, st); err != nil {
			return "", "", err
		}
		// Green may have failed while waiting: check again before the switch.
		if err := r.gate(ctx, st, green); err != nil {
			return failure(ctx, st, PhaseAborting, "verifying green after promotion", err)
		}
	}
	return PhaseSwitching, "green healthy: " + strings.Join(ids(green), ", "), nil
}

func (r *Rollout) gate(ctx context.Context, st *RolloutState, green []Instance) error {
	dctx, cancel := context.WithDeadline(ctx, st.Deadline)
	defer cancel()
	if err := r.Verify(dctx, green); err != nil {
		return err
	}
	return dctx.Err() // a gate that returned nil on a dead ctx proved nothing
}

// awaitPromotion persists that the rollout is waiting, then waits for
// Promote. The progress deadline is pushed back by the wait: a person
// deciding is not a stuck rollout.
func (r *Rollout) awaitPromotion(ctx context.Context, st *RolloutState) error {
	ch := make(chan struct{})
	r.mu.Lock()
	r.promote = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.promote = nil
		r.mu.Unlock()
	}()
	st.PausedAt = time.Now()
	if err := r.save(st); err != nil {
		return err
	}
	select {
	case <-ch:
	case <-ctx.Done():
		return ctx.Err()
	}
	st.Deadline = st.Deadline.Add(time.Since(st.PausedAt))
	st.PausedAt = time.Time{}
	return nil
}

func (r *Rollout) switchTraffic(st *RolloutState) (Phase, string, error) {
	if _, gone := r.resolve(st.batchGreen()); gone != "" {
		// Green died before the switch: only a rollback
		// leaves traffic on live instances.
		return fail(st, PhaseRollingBack, fmt.Sprintf("green %s is gone", gone))
	}
	set := st.after()
	r.Traffic.SetBackends(r.addrsOf(set))
	st.BakeUntil = time.Now().Add(st.Bake)
	return PhaseBaking, "traffic → " + strings.Join(set, ", "), nil
}

func (r *Rollout) bake(ctx context.Context, st *RolloutState) (Phase, string, error) {
	green, gone := r.resolve(st.batchGreen())
	if gone != "" {
		return fail(st, PhaseRollingBack, fmt.Sprintf("green %s is gone", gone))
	}
	if deadlinePassed(st) {
		return fail(st, PhaseRollingBack, "progress deadline passed while baking")
	}
	if left := time.Until(st.BakeUntil); left > 0 {
		dctx, cancel := context.WithDeadline(ctx, st.Deadline)
		defer cancel()
		watch := r.Watch
		if watch == nil {
			watch = watchDone
		}
		err := watch(dctx, green, left)
		if err == nil && dctx.Err() != nil && time.Now().Before(st.BakeUntil) {
			err = dctx.Err() // the watch ended early without saying why
		}
		if err != nil {
			return failure(ctx, st, PhaseRollingBack, "baking", err)
		}
	}
	return PhaseDraining, fmt.Sprintf("green stayed healthy for %s", st.Bake), nil
}

func (r *Rollout) drainBlue(ctx context.Context, st *RolloutState) (Phase, string, error) {
	lo, hi := st.batchRange()
	blue, _ := r.resolve(st.Blue[lo:hi]) // a blue that is gone needs no draining
	problems, err := r.retire(ctx, st, blue)
	if err != nil {
		return "", "", err
	}
	note := "stopped blue " + strings.Join(st.Blue[lo:hi], ", ")
	note = withProblems(note, problems)
	if !st.InLastBatch() {
		st.Batch++
		return PhaseStartingGreen, note, nil
	}
	return PhaseSucceeded, note, nil
}

func (r *Rollout) abort(ctx context.Context, st *RolloutState) (Phase, string, error) {
	green, _ := r.resolve(st.batchGreen())
	problems := r.stop(ctx, green)
	if ctx.Err() != nil {
		return "", "", ctx.Err()
	}
	note := "stopped green " + strings.Join(st.batchGreen(), ", ")
	note = withProblems(note, problems)
	return thenRestore(st, PhaseAborted), note, nil
}

// thenRestore is where an abort or rollback goes next: restoring when
// earlier batches already moved to the target, else done.
func thenRestore(st *RolloutState, done Phase) Phase {
	if len(st.earlier()) == 0 {
		return done
	}
	// The restore gets a progress window of its own, as long as the
	// rollout's: it is the way back, and the rollout's may have run out.
	window := st.ProgressDeadline
	if window <= 0 { // a state saved before the window was recorded
		window = DefaultProgressDeadline
	}
	st.RestoreDeadline = time.Now().Add(window)
	return PhaseRestoring
}

func (r *Rollout) rollBack(ctx context.Context, st *RolloutState) (Phase, string, error) {
	set := st.before()
	addrs := r.addrsOf(set)
	r.Traffic.SetBackends(addrs)
	green, _ := r.resolve(st.batchGreen())
	problems, err := r.retire(ctx, st, green)
	if err != nil {
		return "", "", err
	}
	note := "traffic → " + strings.Join(set, ", ") + "; stopped green " + strings.Join(st.batchGreen(), ", ")
	if len(addrs) == 0 {
		problems = append(problems, "no instance left to serve")
	}
	note = withProblems(note, problems)
	return thenRestore(st, PhaseRolledBack), note, nil
}

// restore launches the previous version in place of the earlier batches'
// green and verifies it, then moves traffic to it. A restore that cannot
// finish leaves traffic where it was: the fleet ends mixed, and says so.
func (r *Rollout) restore(ctx context.Context, st *RolloutState) (Phase, string, error) {
	earlier := st.earlier()
	n := len(earlier)
	dctx, cancel := context.WithDeadline(ctx, st.RestoreDeadline)
	defer cancel()
	var problems []string
	giveUp := func(doing string, err error) (Phase, string, error) {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		// Judge the cause now: stopping VMs below takes time of its own.
		why := fmt.Sprintf("%s: %v", doing, err)
		if !time.Now().Before(st.RestoreDeadline) {
			why = "its progress deadline passed while " + doing
		}
		launched, _ := r.resolve(st.Restore)
		problems = append(problems, r.stop(ctx, launched)...)
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		st.Reason += fmt.Sprintf("; could not restore %s in place of %s (%s), so they keep serving %s",
			st.PreviousStable, strings.Join(earlier, ", "), why, st.Target)
		return PhaseRolledBack, withProblems("restore failed: "+why, problems), nil
	}

	restore, gone := r.resolve(st.Restore)
	if gone != "" || len(restore) != n {
		// A restore interrupted before it recorded everything: start over.
		problems = append(problems, r.stop(ctx, restore)...)
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		st.Restore = nil
		launched, err := r.Launcher.Launch(dctx, st.PreviousStable, n)
		for _, in := range launched {
			r.insts[in.ID()] = in
		}
		st.Restore = ids(launched)
		if err == nil && len(launched) != n {
			err = fmt.Errorf("launcher started %d instances, want %d", len(launched), n)
		}
		if err != nil {
			return giveUp(fmt.Sprintf("starting %d of %s", n, st.PreviousStable), err)
		}
		// Record them before the wait, so a restart finds and reuses them.
		if err := r.save(st); err != nil {
			return "", "", err
		}
		restore = launched
	}
	for _, in := range restore {
		if in.Addr(r.Port) == "" {
			return giveUp("checking the restored instances", fmt.Errorf("%s does not forward guest port %d", in.ID(), r.Port))
		}
	}
	verify := r.VerifyRestore
	if verify == nil {
		verify = r.Verify
	}
	if err := verify(dctx, restore); err != nil || dctx.Err() != nil {
		if err == nil {
			err = dctx.Err()
		}
		return giveUp("verifying "+strings.Join(st.Restore, ", "), err)
	}
	st.Restored = true
	set := st.restored()
	r.Traffic.SetBackends(r.addrsOf(set))
	return PhaseRestoreDraining, withProblems(fmt.Sprintf("%s healthy again on %s; traffic → %s",
		st.PreviousStable, strings.Join(st.Restore, ", "), strings.Join(set, ", ")), problems), nil
}

// drainEarlier retires the earlier batches' green once the restore took
// their traffic. Should a restore instance have vanished meanwhile (seen
// after a restart), the earlier green go back to serving instead.
func (r *Rollout) drainEarlier(ctx context.Context, st *RolloutState) (Phase, string, error) {
	earlier, earlierGone := r.resolve(st.earlier())
	restore, restoreGone := r.resolve(st.Restore)
	if restoreGone != "" && earlierGone == "" {
		st.Restored = false
		set := st.before()
		r.Traffic.SetBackends(r.addrsOf(set))
		problems, err := r.retire(ctx, st, restore)
		if err != nil {
			return "", "", err
		}
		st.Reason += fmt.Sprintf("; restored instance %s vanished, so %s keep serving %s",
			restoreGone, strings.Join(st.earlier(), ", "), st.Target)
		note := "traffic → " + strings.Join(set, ", ")
		note = withProblems(note, problems)
		return PhaseRolledBack, note, nil
	}
	problems, err := r.retire(ctx, st, earlier)
	if err != nil {
		return "", "", err
	}
	note := "stopped " + strings.Join(st.earlier(), ", ")
	if len(problems) == 0 {
		note += "; the fleet runs " + st.PreviousStable + " everywhere"
	}
	return PhaseRolledBack, withProblems(note, problems), nil
}

// withProblems appends what went wrong along the way to a transition's
// note: problems that did not stop the rollout but should be seen.
func withProblems(note string, problems []string) string {
	if len(problems) == 0 {
		return note
	}
	return note + "; " + strings.Join(problems, "; ")
}

// retire drains the instances (for at most st.Drain), then stops them.
// Problems are reported, not fatal; the error is ctx's when it ended
// meanwhile. What a drain had to cut is added to st.Cut.
func (r *Rollout) retire(ctx context.Context, st *RolloutState, insts []Instance) ([]string, error) {
	problems := r.drain(ctx, st, insts)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	problems = append(problems, r.stop(ctx, insts)...)
	return problems, ctx.Err()
}

// drain waits, in parallel and for at most st.Drain in all, until the
// instances have nothing in flight. Timeouts are reported, not fatal: the
// instances are stopped anyway, and what the front cut is counted.
func (r *Rollout) drain(ctx context.Context, st *RolloutState, insts []Instance) []string {
	dctx, cancel := context.WithTimeout(ctx, st.Drain)
	defer cancel()
	var cut atomic.Int64
	problems := parallel(insts, func(in Instance) error {
		addr := in.Addr(r.Port)
		if addr == "" {
			return nil
		}
		if err := r.Traffic.Drain(dctx, addr); err != nil {
			cut.Add(int64(Cut(err)))
			return fmt.Errorf("drain %s: %w", in.ID(), err)
		}
		return nil
	})
	st.Cut += int(cut.Load())
	return problems
}

// stop stops the instances in parallel. Failures are reported in the
// history; the caller's reconciliation removes what is left.
func (r *Rollout) stop(ctx context.Context, insts []Instance) []string {
	return parallel(insts, func(in Instance) error {
		if err := r.Launcher.Stop(ctx, in); err != nil {
			return fmt.Errorf("stop %s: %w", in.ID(), err)
		}
		return nil
	})
}

func parallel(insts []Instance, f func(Instance) error) []string {
	errs := make([]error, len(insts))
	var wg sync.WaitGroup
	for i, in := range insts {
		wg.Go(func() { errs[i] = f(in) })
	}
	wg.Wait()
	var out []string
	for _, err := range errs {
		if err != nil {
			out = append(out, err.Error())
		}
	}
	return out
}

// resolve maps ids to known instances; gone is the first id not known.
func (r *Rollout) resolve(idList []string) (found []Instance, gone string) {
	for _, id := range idList {
		if in, ok := r.insts[id]; ok {
			found = append(found, in)
		} else if gone == "" {
			gone = id
		}
	}
	return found, gone
}

func (r *Rollout) addrsOf(idList []string) []string {
	found, _ := r.resolve(idList)
	return addrs(found, r.Port)
}

// watchDone is the bake watcher when none is given: it fails only when an
// instance dies.
func watchDone(ctx context.Context, insts []Instance, d time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	died := make(chan string, len(insts))
	for _, in := range insts {
		go func() {
			select {
			case <-in.Done():
				died <- in.ID()
			case <-ctx.Done():
			}
		}()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case id := <-died:
		return fmt.Errorf("%s exited", id)
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commonVersion is the version most blue instances run: the fleet's stable
// version even when an earlier batched rollout left it mixed.
func commonVersion(insts []Instance) string {
	count := map[string]int{}
	best := ""
	for _, in := range insts {
		v := in.Version()
		count[v]++
		if count[v] > count[best] {
			best = v
		}
	}
	return best
}
