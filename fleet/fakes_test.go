package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// fakeInstance stands in for a VM. Its done channel outlives any one
// supervisor, as a QEMU process would.
type fakeInstance struct {
	id, version string
	ports       map[int]string // guest port → host address
	exec        func(ctx context.Context, cmd string) (int, error)

	once sync.Once
	done chan struct{}
}

func newFakeInstance(id, version string, ports map[int]string) *fakeInstance {
	return &fakeInstance{id: id, version: version, ports: ports, done: make(chan struct{})}
}

func (f *fakeInstance) ID() string            { return f.id }
func (f *fakeInstance) Version() string       { return f.version }
func (f *fakeInstance) Addr(port int) string  { return f.ports[port] }
func (f *fakeInstance) Done() <-chan struct{} { return f.done }
func (f *fakeInstance) kill()                 { f.once.Do(func() { close(f.done) }) }
func (f *fakeInstance) Exec(ctx context.Context, cmd string) (int, error) {
	if f.exec == nil {
		return 0, nil
	}
	return f.exec(ctx, cmd)
}

const testPort = 80

// fakeWorld is the set of VMs on the host plus a Launcher for them. It
// survives a simulated supervisor crash; Rollouts and traffic do not.
type fakeWorld struct {
	mu       sync.Mutex
	next     int
	vms      map[string]*fakeInstance
	launched []string
	stopped  []string
	calls    int

	launchErr   func(call int) error // nil: launches succeed
	launchBlock bool                 // Launch waits for ctx to end
	launchShort bool                 // Launch starts one instance too few
	afterLaunch func()               // runs before Launch returns
	stopErr     map[string]error
	afterStop   func(id string)
	beforeStop  func(addr string) // sees each Stop first; the harness checks traffic with it
}

func newFakeWorld(nBlue int, version string) (*fakeWorld, []Instance) {
	w := &fakeWorld{vms: map[string]*fakeInstance{}}
	var blue []Instance
	for range nBlue {
		blue = append(blue, w.add(version))
	}
	return w, blue
}

func (w *fakeWorld) add(version string) *fakeInstance {
	w.next++
	id := fmt.Sprintf("web-%d", w.next)
	in := newFakeInstance(id, version, map[int]string{testPort: fmt.Sprintf("127.0.0.1:%d", 10000+w.next)})
	w.vms[id] = in
	return in
}

func (w *fakeWorld) Launch(ctx context.Context, version string, n int) ([]Instance, error) {
	w.mu.Lock()
	w.calls++
	call := w.calls
	w.mu.Unlock()
	if w.launchErr != nil {
		if err := w.launchErr(call); err != nil {
			return nil, err
		}
	}
	if w.launchBlock {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	w.mu.Lock()
	if w.launchShort {
		n--
	}
	var out []Instance
	for range n {
		in := w.add(version)
		w.launched = append(w.launched, in.id)
		out = append(out, in)
	}
	w.mu.Unlock()
	if w.afterLaunch != nil {
		w.afterLaunch()
	}
	return out, nil
}

func (w *fakeWorld) Stop(ctx context.Context, inst Instance) error {
	id := inst.ID()
	if w.beforeStop != nil {
		w.beforeStop(w.addrOf(id))
	}
	w.mu.Lock()
	if err := w.stopErr[id]; err != nil {
		w.mu.Unlock()
		return err
	}
	vm, ok := w.vms[id]
	if ok {
		delete(w.vms, id)
		w.stopped = append(w.stopped, id)
		vm.kill()
	}
	w.mu.Unlock()
	if ok && w.afterStop != nil {
		w.afterStop(id)
	}
	return nil
}

// vanish makes a VM disappear behind the rollout's back, as one that
// died while the supervisor was down.
func (w *fakeWorld) vanish(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if vm, ok := w.vms[id]; ok {
		delete(w.vms, id)
		w.stopped = append(w.stopped, id)
		vm.kill()
	}
}

func (w *fakeWorld) alive(addr string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id := range w.vms {
		if w.addrOf(id) == addr {
			return true
		}
	}
	return false
}

func (w *fakeWorld) addrOf(id string) string {
	return fmt.Sprintf("127.0.0.1:%d", 10000+mustAtoi(id[len("web-"):]))
}

func mustAtoi(s string) int {
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		panic(err)
	}
	return n
}

func (w *fakeWorld) stoppedIDs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Sorted(slices.Values(w.stopped))
}

// fakeTraffic records what a rollout does to the balancer, and every
// breach of the rules that keep requests from failing: traffic only to
// live instances, no instance stopped while it takes traffic, and none
// that took traffic stopped before it was drained.
type fakeTraffic struct {
	mu         sync.Mutex
	sets       [][]string
	drained    []string
	drainBlock map[string]bool // Drain of these addresses waits for ctx
	afterSet   func()
	alive      func(addr string) bool // nil: not checked
	served     map[string]bool
	breaches   []string
}

func (t *fakeTraffic) SetBackends(addrs []string) {
	t.mu.Lock()
	set := slices.Sorted(slices.Values(addrs))
	t.sets = append(t.sets, set)
	if t.served == nil {
		t.served = map[string]bool{}
	}
	for _, a := range set {
		t.served[a] = true
		if t.alive != nil && !t.alive(a) {
			t.breaches = append(t.breaches, fmt.Sprintf("traffic set %v includes stopped %s", set, a))
		}
	}
	t.mu.Unlock()
	if t.afterSet != nil {
		t.afterSet()
	}
}

func (t *fakeTraffic) Drain(ctx context.Context, addr string) error {
	t.mu.Lock()
	t.drained = append(t.drained, addr)
	block := t.drainBlock[addr]
	t.mu.Unlock()
	if block {
		<-ctx.Done()
		return &CutError{Addr: addr, N: 1, What: "connection", Err: ctx.Err()}
	}
	return nil
}

// stopping records a breach when addr is stopped while serving, or
// undrained after it served.
func (t *fakeTraffic) stopping(addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.sets); n > 0 && slices.Contains(t.sets[n-1], addr) {
		t.breaches = append(t.breaches, fmt.Sprintf("%s stopped while in the traffic set %v", addr, t.sets[n-1]))
	}
	if t.served[addr] && !slices.Contains(t.drained, addr) {
		t.breaches = append(t.breaches, fmt.Sprintf("%s stopped without a drain after it took traffic", addr))
	}
}

// current is the backend set last applied; nil when none was.
func (t *fakeTraffic) current() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.sets) == 0 {
		return nil
	}
	return t.sets[len(t.sets)-1]
}

// fakeHealth is a health gate and bake watcher driven by instance ids.
type fakeHealth struct {
	mu          sync.Mutex
	verifyFail  map[string]bool // ids that fail the gate
	bakeFail    map[string]bool // ids that fail the bake
	verifyBlock bool            // the gate waits for ctx
	verifyHang  map[string]bool // the gate waits for ctx when checking these ids
	bakeBlock   bool            // the bake watcher waits for ctx
	verifyCalls int
}

func (h *fakeHealth) verify(ctx context.Context, insts []Instance) error {
	h.mu.Lock()
	h.verifyCalls++
	h.mu.Unlock()
	hang := h.verifyBlock
	for _, in := range insts {
		hang = hang || h.verifyHang[in.ID()]
	}
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	for _, in := range insts {
		if h.verifyFail[in.ID()] {
			return fmt.Errorf("%s is unhealthy: GET /: 503 Service Unavailable", in.ID())
		}
	}
	return nil
}

func (h *fakeHealth) watch(ctx context.Context, insts []Instance, d time.Duration) error {
	if h.bakeBlock {
		<-ctx.Done()
		return ctx.Err()
	}
	for _, in := range insts {
		if h.bakeFail[in.ID()] {
			return fmt.Errorf("%s is unhealthy: exec: exit status 1", in.ID())
		}
	}
	return nil
}

// fakeStore is Persist. It can simulate a crash (cancel the run's ctx)
// right after storing the state of the crashAt-th transition, or after a
// state crashIf picks (such as one saved inside a step), or fail the
// failAt-th call.
type fakeStore struct {
	mu      sync.Mutex
	states  []RolloutState
	crashAt int
	crashIf func(RolloutState) bool
	cancel  context.CancelFunc
	failAt  int
	calls   int
}

var errDiskFull = errors.New("disk full")

func (s *fakeStore) persist(st RolloutState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.calls == s.failAt {
		return errDiskFull
	}
	s.states = append(s.states, st.clone())
	crash := len(st.History) == s.crashAt || s.crashIf != nil && s.crashIf(st)
	if crash && s.cancel != nil {
		s.cancel()
	}
	return nil
}

func (s *fakeStore) last() RolloutState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.states[len(s.states)-1].clone()
}

// transitions lists the phases entered, one per persisted transition.
func (s *fakeStore) transitions() []Phase {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Phase
	seen := 0
	for _, st := range s.states {
		for _, t := range st.History[min(seen, len(st.History)):] {
			out = append(out, t.To)
		}
		seen = len(st.History)
	}
	return out
}
