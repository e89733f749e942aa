package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/instance"
	"github.com/kiln-dev/kiln/internal/proc"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/provision"
	"github.com/kiln-dev/kiln/qemu"
)

// member is one instance the supervisor owns: what health checks and
// rollouts use, plus what the state file records of it and a way to remove
// what is left of it. The supervisor works on members only, so its
// decisions are tested with fakes; vm is the QEMU-backed one.
type member interface {
	fleet.Instance
	// record describes the instance for the state file, with the host
	// ports of the given guest ports.
	record(guests []int) InstanceRecord
	// remove kills what still runs and deletes the instance's folder.
	remove() error
}

// machines starts, stops and re-attaches to a fleet's instances.
type machines interface {
	// Launch starts n instances of version; on error none are left.
	Launch(ctx context.Context, version string, n int) ([]member, error)
	// Stop powers an instance off and removes it; a gone one is no error.
	Stop(ctx context.Context, m member) error
	// Adopt re-attaches to an instance a previous supervisor recorded, or
	// says why it cannot: gone, its pid reused, QMP not answering. It is
	// quick; Reconnect, which may take a while, comes after.
	Adopt(ctx context.Context, rec InstanceRecord) (member, error)
	// Reconnect opens an adopted instance's SSH connection, verifying the
	// host key pinned at its first boot.
	Reconnect(ctx context.Context, m member) error
	// Reap stops and removes every instance on disk but the kept ones:
	// those a previous supervisor left and that were not adopted.
	Reap(keep map[string]bool)
	// SetAccel changes what instances started from now on run under (a
	// rollout's --accel).
	SetAccel(c qemu.Choice)
	// SetCold makes instances started from now on boot instead of
	// resuming a saved guest (a rollout's --cold).
	SetCold()
}

// vm is a fleet instance backed by a QEMU guest.
type vm struct {
	id, version string
	inst        *instance.Instance
	started     time.Time
	pidStart    string // the QEMU process's start time, which tells it from a reuse of its pid
}

var _ member = (*vm)(nil)

func (v *vm) ID() string      { return v.id }
func (v *vm) Version() string { return v.version }

func (v *vm) Addr(guestPort int) string {
	p := v.inst.VM.HostPort(guestPort)
	if p == 0 {
		return ""
	}
	return "127.0.0.1:" + strconv.Itoa(p)
}

func (v *vm) Exec(ctx context.Context, cmd string) (int, error) {
	if v.inst.SSH == nil { // adopted, not reconnected yet
		return -1, errors.New("no SSH connection yet")
	}
	return v.inst.SSH.Run(ctx, cmd, nil, nil, nil)
}

func (v *vm) Done() <-chan struct{} { return v.inst.VM.Done() }

func (v *vm) record(guests []int) InstanceRecord {
	ports := map[int]int{}
	for _, g := range guests {
		ports[g] = v.inst.VM.HostPort(g)
	}
	return InstanceRecord{ID: v.id, Version: v.version, Pid: v.inst.VM.Pid(), PidStart: v.pidStart,
		Accel: v.inst.VM.Accel(), CPU: v.inst.VM.CPU(), Dir: v.inst.Dir, SSHPort: v.inst.VM.HostPort(22), Ports: ports, Started: v.started.UTC()}
}

func (v *vm) remove() error { return v.inst.Remove() }

// launcher starts a fleet's instances from stored images.
type launcher struct {
	spec  Spec
	dirs  Dirs
	store *images.Store
	accel qemu.Choice // what new instances run under; a rollout may change it
	log   func(format string, args ...any)
	life  context.Context // the supervisor's lifetime: VMs run under it, not under one request's ctx

	mu     sync.Mutex
	nextID func() int // hands out instance numbers; persisted by the supervisor
}

// SetCold makes instances started from now on boot cold.
func (l *launcher) SetCold() {
	l.mu.Lock()
	l.spec.Cold = true
	l.mu.Unlock()
}

// setAccel changes what instances started from now on run under.
func (l *launcher) SetAccel(c qemu.Choice) {
	l.mu.Lock()
	l.accel = c
	l.mu.Unlock()
}

// Launch starts n instances of version in parallel. On error, the ones that
// did start are stopped, so the caller never owns half a batch.
func (l *launcher) Launch(ctx context.Context, version string, n int) ([]member, error) {
	// The version was checked for revocation when it entered (fleet up, a
	// rollout); a launch of a version the fleet already runs goes ahead.
	img, err := l.store.Use(version, true)
	if err != nil {
		return nil, err
	}
	m := img.Manifest
	var forwards []qemu.Forward
	for _, p := range l.spec.Ports {
		forwards = append(forwards, qemu.Forward{GuestPort: p.Guest})
	}
	if l.spec.Check != nil && l.spec.Check.Port != 0 {
		forwards = appendGuestPort(forwards, l.spec.Check.Port)
	}
	results := make(chan launched, n)
	for i := 0; i < n; i++ {
		l.mu.Lock()
		id := fmt.Sprintf("%s-%d", l.spec.Name, l.nextID())
		accel := l.accel
		l.mu.Unlock()
		go func() {
			// The VM must outlive the rollout step that asked for it, so it
			// runs under the supervisor's lifetime; the caller's ctx only
			// cuts the wait for it short.
			vmCtx, cancel := context.WithCancel(l.life)
			stop := context.AfterFunc(ctx, cancel)
			defer stop()
			inst, err := l.start(vmCtx, m, instance.Options{
				Name: id, Image: img.Blob, ImageFormat: m.Format,
				Dir: string(l.dirs.Instance(id)), CPUs: l.spec.CPUs, MemoryMiB: l.spec.MemoryMiB,
				Accel: accel.Accel, CPU: accel.CPU, Forwards: forwards, Log: l.log,
			})
			if err != nil {
				results <- launched{err: fmt.Errorf("instance %s: %w", id, err)}
				return
			}
			start, _ := proc.StartTime(inst.VM.Pid())
			results <- launched{m: &vm{id: id, version: m.Ref().String(), inst: inst, started: time.Now(), pidStart: start}}
		}()
	}
	return gatherBatch(ctx, n, results, l.Stop)
}

// launched is one instance of a batch, or why it did not start.
type launched struct {
	m   member
	err error
}

// gatherBatch waits for a batch's n launches. If any failed it stops the
// ones that started, so the caller never owns half a batch, and returns the
// first error.
func gatherBatch(ctx context.Context, n int, results <-chan launched, stop func(context.Context, member) error) ([]member, error) {
	var out []member
	var firstErr error
	for range n {
		r := <-results
		if r.err != nil {
			if firstErr == nil {
				firstErr = r.err
			}
			continue
		}
		out = append(out, r.m)
	}
	if firstErr != nil {
		for _, m := range out {
			stop(context.WithoutCancel(ctx), m)
		}
		return nil, firstErr
	}
	return out, nil
}

func appendGuestPort(fw []qemu.Forward, port int) []qemu.Forward {
	for _, f := range fw {
		if f.GuestPort == port {
			return fw
		}
	}
	return append(fw, qemu.Forward{GuestPort: port})
}

// Stop powers an instance off (briefly: fleets are immutable, nothing on
// the disk is kept) and removes its folder.
func (l *launcher) Stop(ctx context.Context, m member) error {
	v, ok := m.(*vm)
	if !ok {
		return m.remove()
	}
	start := time.Now()
	v.inst.Shutdown(ctx, 20*time.Second)
	slog.Debug("instance powered off", "id", v.id, "took", time.Since(start).Round(time.Millisecond))
	return v.inst.Remove()
}

// Adopt takes over an instance a previous supervisor started: its QEMU
// must be the very process recorded (pid and start time) and answer QMP as
// running. Whatever fails, the instance is left for Reap.
func (l *launcher) Adopt(ctx context.Context, rec InstanceRecord) (member, error) {
	if rec.Pid <= 0 || rec.PidStart == "" {
		return nil, errors.New("no QEMU process was recorded")
	}
	recorded := proc.Process{Pid: rec.Pid, Start: rec.PidStart}
	if !proc.Running(rec.Pid) {
		return nil, fmt.Errorf("its QEMU (pid %d) is gone", rec.Pid)
	}
	if !recorded.Alive() {
		return nil, fmt.Errorf("pid %d is no longer its QEMU (another process has it)", rec.Pid)
	}
	ports := map[int]int{22: rec.SSHPort}
	for g, h := range rec.Ports {
		ports[g] = h
	}
	m, err := qemu.Attach(ctx, rec.Dir, rec.Pid, ports, "")
	if err != nil {
		return nil, err
	}
	// The pidfd now pins the process: checking the start time again rules
	// out a reuse between the first check and the attach.
	if !recorded.Alive() {
		return nil, fmt.Errorf("pid %d is no longer its QEMU (another process has it)", rec.Pid)
	}
	if st, err := m.Status(ctx); err != nil {
		m.Kill()
		return nil, fmt.Errorf("QMP: %w", err)
	} else if st != "running" {
		m.Kill()
		return nil, fmt.Errorf("QEMU reports the guest %s", st)
	}
	inst := &instance.Instance{VM: m, Dir: rec.Dir, Overlay: layout.VM(rec.Dir).Disk()}
	return &vm{id: rec.ID, version: rec.Version, inst: inst, started: rec.Started, pidStart: rec.PidStart}, nil
}

// Reconnect opens SSH to an adopted guest, retrying while a loaded guest is
// slow to answer; a host key that is not the pinned one fails at once.
func (l *launcher) Reconnect(ctx context.Context, m member) error {
	v, ok := m.(*vm)
	if !ok {
		return fmt.Errorf("instance %s is not a VM", m.ID())
	}
	for {
		c, err := instance.Connect(ctx, v.inst.Dir, v.inst.VM.HostPort(22))
		if err == nil {
			v.inst.SSH = c
			return nil
		}
		if errors.Is(err, provision.ErrHostKeyMismatch) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-v.Done():
			return errors.New("its QEMU exited")
		case <-time.After(2 * time.Second):
		}
	}
}

// Reap stops what a previous supervisor left that was not adopted.
func (l *launcher) Reap(keep map[string]bool) { killStale(l.dirs, keep) }

// KillStale stops QEMU processes a previous supervisor left behind (it was
// killed), by the pid files in their folders, waits for them to exit and
// removes the folders.
func KillStale(d Dirs) { killStale(d, nil) }

func killStale(d Dirs, keep map[string]bool) {
	all, _ := os.ReadDir(d.Instances())
	var vms []layout.VM
	for _, e := range all {
		if !keep[e.Name()] {
			vms = append(vms, d.Instance(e.Name()))
		}
	}
	proc.StopQEMUs(vms, 10*time.Second)
	for _, vm := range vms {
		os.RemoveAll(string(vm))
	}
}
