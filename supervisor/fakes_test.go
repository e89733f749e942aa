package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/qemu"
)

// fakeVM stands in for a QEMU guest that outlives the supervisor that
// started it, as a real one does.
type fakeVM struct {
	id, version string
	pid         int
	pidStart    string
	healthy     bool // its exec check passes
	host        *fakeHost

	once sync.Once
	done chan struct{}
}

func (f *fakeVM) ID() string                { return f.id }
func (f *fakeVM) Version() string           { return f.version }
func (f *fakeVM) Addr(guestPort int) string { return fmt.Sprintf("127.0.0.1:%d", 20000+f.pid) }
func (f *fakeVM) Done() <-chan struct{}     { return f.done }
func (f *fakeVM) kill()                     { f.once.Do(func() { close(f.done) }) }
func (f *fakeVM) remove() error {
	f.kill()
	f.host.mu.Lock()
	defer f.host.mu.Unlock()
	if _, ok := f.host.vms[f.id]; ok {
		delete(f.host.vms, f.id)
		f.host.reaped = append(f.host.reaped, f.id)
	}
	return nil
}
func (f *fakeVM) Exec(ctx context.Context, cmd string) (int, error) {
	if f.healthy {
		return 0, nil
	}
	return 1, nil
}

func (f *fakeVM) record(guests []int) InstanceRecord {
	return InstanceRecord{ID: f.id, Version: f.version, Pid: f.pid, PidStart: f.pidStart,
		Dir: "/fleet/instances/" + f.id, Ports: map[int]int{80: 20000 + f.pid}}
}

// fakeHost is the machine's processes plus the supervisor's machines: it
// survives a simulated supervisor crash.
type fakeHost struct {
	mu       sync.Mutex
	next     int
	vms      map[string]*fakeVM // running, by id
	qmpGone  map[string]bool    // QEMU runs but its monitor does not answer
	sshGone  map[string]bool    // its guest does not answer SSH (or not with its pinned key)
	launched []string
	stopped  []string
	reaped   []string

	onReconnect func(id string) // sees each Reconnect first
}

func newFakeHost() *fakeHost {
	return &fakeHost{vms: map[string]*fakeVM{}, qmpGone: map[string]bool{}, sshGone: map[string]bool{}}
}

// boot starts a VM outside any supervisor, as the crashed one did.
func (h *fakeHost) boot(version string) *fakeVM {
	h.next++
	v := &fakeVM{id: fmt.Sprintf("web-%d", h.next), version: version, pid: 1000 + h.next,
		pidStart: fmt.Sprint(h.next * 7), healthy: true, host: h, done: make(chan struct{})}
	h.vms[v.id] = v
	return v
}

func (h *fakeHost) Launch(ctx context.Context, version string, n int) ([]member, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []member
	for range n {
		v := h.boot(version)
		h.launched = append(h.launched, v.id)
		out = append(out, v)
	}
	return out, nil
}

func (h *fakeHost) Stop(ctx context.Context, m member) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if v, ok := h.vms[m.ID()]; ok {
		v.kill()
		delete(h.vms, m.ID())
		h.stopped = append(h.stopped, m.ID())
	}
	return nil
}

// Adopt applies the same tests as the real launcher: the process must be
// the one recorded (pid and start time) and answer QMP.
func (h *fakeHost) Adopt(ctx context.Context, rec InstanceRecord) (member, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.vms[rec.ID]
	switch {
	case !ok || v.pid != rec.Pid:
		return nil, fmt.Errorf("its QEMU (pid %d) is gone", rec.Pid)
	case v.pidStart != rec.PidStart:
		return nil, fmt.Errorf("pid %d is no longer its QEMU (another process has it)", rec.Pid)
	case h.qmpGone[rec.ID]:
		return nil, errors.New("QMP: connection refused")
	}
	return v, nil
}

func (h *fakeHost) Reconnect(ctx context.Context, m member) error {
	if h.onReconnect != nil {
		h.onReconnect(m.ID())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sshGone[m.ID()] {
		return errors.New("ssh: host key mismatch")
	}
	return nil
}

func (h *fakeHost) SetAccel(c qemu.Choice) {}
func (h *fakeHost) SetCold()               {}

func (h *fakeHost) Reap(keep map[string]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, v := range h.vms {
		if !keep[id] {
			v.kill()
			delete(h.vms, id)
			h.reaped = append(h.reaped, id)
		}
	}
}

func (h *fakeHost) running() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return sortedIDs(slices.Collect(func(yield func(string) bool) {
		for id := range h.vms {
			if !yield(id) {
				return
			}
		}
	}))
}

func sortedIDs(ids []string) []string {
	ids = slices.Clone(ids)
	slices.SortFunc(ids, compareIDs)
	return ids
}

// fakeCheck is a quick exec check the fakes answer.
var fakeCheck = fleet.Check{Kind: fleet.CheckExec, Command: "true", Interval: 5 * time.Millisecond,
	Timeout: time.Second, FailureThreshold: 2, SuccessThreshold: 1}

// testSupervisor is a supervisor over host, as one restarted after a crash
// finds it: the saved state st, and a front on a free port.
func testSupervisor(t *testing.T, host *fakeHost, st State, count int) *Supervisor {
	t.Helper()
	dirs := FleetDirs(t.TempDir(), "web")
	check := fakeCheck
	spec := Spec{Name: "web", Image: "hello:1.0.0", Count: count, Ports: []Port{{Host: 0, Guest: 80}}, Check: &check}
	if err := WriteSpec(dirs, spec); err != nil {
		t.Fatal(err)
	}
	s := newSupervisor(t.Context(), dirs, spec, st, slog.New(slog.DiscardHandler))
	s.launch = host
	t.Cleanup(func() {
		// Probes that are still finishing find no instance, so nothing
		// writes the state while the folder is removed.
		s.stop()
		s.mu.Lock()
		s.insts = map[string]member{}
		s.mu.Unlock()
	})
	front, err := fleet.NewFront(fleet.FrontTCP, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close() })
	s.balancers[80] = front
	return s
}

// recordAll is what the crashed supervisor last saved of the VMs: all
// healthy and serving.
func recordAll(vms ...*fakeVM) []InstanceRecord {
	var out []InstanceRecord
	for _, v := range vms {
		rec := v.record(nil)
		rec.Health, rec.Serving = string(fleet.Healthy), true
		out = append(out, rec)
	}
	return out
}
