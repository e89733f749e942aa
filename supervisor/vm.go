package supervisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/instance"
	"github.com/kiln-dev/kiln/qemu"
	"github.com/kiln-dev/kiln/workdir"
)

// vm is a fleet instance backed by a QEMU guest.
type vm struct {
	id, version string
	inst        *instance.Instance
	started     time.Time
}

var _ fleet.Instance = (*vm)(nil)

func (v *vm) ID() string      { return v.id }
func (v *vm) Version() string { return v.version }

func (v *vm) Addr(guestPort int) string {
	return "127.0.0.1:" + strconv.Itoa(v.inst.VM.HostPort(guestPort))
}

func (v *vm) Exec(ctx context.Context, cmd string) (int, error) {
	return v.inst.SSH.Run(ctx, cmd, nil, nil, nil)
}

func (v *vm) Done() <-chan struct{} { return v.inst.VM.Done() }

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

// setAccel changes what instances started from now on run under.
func (l *launcher) setAccel(c qemu.Choice) {
	l.mu.Lock()
	l.accel = c
	l.mu.Unlock()
}

// Launch starts n instances of version in parallel. On error, the ones that
// did start are stopped, so the caller never owns half a batch.
func (l *launcher) Launch(ctx context.Context, version string, n int) ([]fleet.Instance, error) {
	ref, err := images.ParseRef(version)
	if err != nil {
		return nil, err
	}
	m, err := l.store.Resolve(ref)
	if err != nil {
		return nil, err
	}
	var forwards []qemu.Forward
	for _, p := range l.spec.Ports {
		forwards = append(forwards, qemu.Forward{GuestPort: p.Guest})
	}
	if l.spec.Check != nil && l.spec.Check.Port != 0 {
		forwards = appendGuestPort(forwards, l.spec.Check.Port)
	}
	type result struct {
		v   *vm
		err error
	}
	results := make(chan result, n)
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
			inst, err := instance.Launch(vmCtx, instance.Options{
				Name: id, Image: l.store.BlobPath(m.Digest), ImageFormat: m.Format,
				Dir: l.dirs.Instance(id), CPUs: l.spec.CPUs, MemoryMiB: l.spec.MemoryMiB,
				Accel: accel.Accel, CPU: accel.CPU, Forwards: forwards, Log: l.log,
			})
			if err != nil {
				results <- result{err: fmt.Errorf("instance %s: %w", id, err)}
				return
			}
			results <- result{v: &vm{id: id, version: m.Ref().String(), inst: inst, started: time.Now()}}
		}()
	}
	var out []fleet.Instance
	var firstErr error
	for i := 0; i < n; i++ {
		r := <-results
		if r.err != nil {
			if firstErr == nil {
				firstErr = r.err
			}
			continue
		}
		out = append(out, r.v)
	}
	if firstErr != nil {
		for _, inst := range out {
			l.Stop(context.WithoutCancel(ctx), inst)
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
func (l *launcher) Stop(ctx context.Context, inst fleet.Instance) error {
	v, ok := inst.(*vm)
	if !ok {
		return fmt.Errorf("instance %s is not a VM", inst.ID())
	}
	v.inst.Shutdown(ctx, 20*time.Second)
	return v.inst.Remove()
}

// KillStale stops QEMU processes a previous supervisor left behind (it was
// killed), by the pid files in their folders, waits for them to exit and
// removes the folders.
func KillStale(d Dirs) {
	entries, _ := os.ReadDir(d.Instances())
	var killed []int
	for _, e := range entries {
		dir := d.Instance(e.Name())
		if b, err := os.ReadFile(filepath.Join(dir, "qemu.pid")); err == nil {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			// The pid must still be a QEMU of this folder, not a reused pid.
			if cmdline, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && rerr == nil && strings.Contains(string(cmdline), dir) {
				syscall.Kill(pid, syscall.SIGKILL)
				killed = append(killed, pid)
			}
		}
	}
	// SIGKILL is asynchronous: a large guest takes a moment to unmap, and
	// its disk is not free until then.
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range killed {
		for workdir.Running(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, e := range entries {
		os.RemoveAll(d.Instance(e.Name()))
	}
}
