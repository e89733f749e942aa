package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"syscall"
)

// Front is what stands on a fleet's front port: the TCP Balancer, or the
// HTTPFront for services that speak HTTP. A rollout moves traffic through
// it; the supervisor owns one per front port.
type Front interface {
	Addr() string
	SetBackends(addrs []string)
	Backends() []string
	// Active is the number of connections (TCP) or requests (HTTP) in
	// flight to addr.
	Active(addr string) int
	// Drain waits until nothing is in flight to addr. When ctx ends first
	// it cuts what is left and returns a *CutError saying how much.
	Drain(ctx context.Context, addr string) error
	Close() error
}

// FrontKind names a kind of front.
type FrontKind string

const (
	FrontTCP  FrontKind = "tcp"  // a TCP proxy: each connection stays on the backend it was given
	FrontHTTP FrontKind = "http" // a reverse proxy: each request goes to a serving backend
)

// NewFront listens on addr with a front of the given kind.
func NewFront(kind FrontKind, addr string) (Front, error) {
	switch kind {
	case FrontHTTP:
		return NewHTTPFront(addr)
	case FrontTCP, "":
		return NewBalancer(addr)
	}
	return nil, fmt.Errorf("unknown front %q: use http or tcp", kind)
}

// CutError says a drain ran out of time and what it cut: open connections
// of a TCP front, requests in flight on an HTTP one.
type CutError struct {
	Addr string
	N    int
	What string // "connection" or "request"
	Err  error  // why the wait ended
}

func (e *CutError) Error() string {
	what := e.What
	if e.N != 1 {
		what += "s"
	}
	return fmt.Sprintf("cut %d %s to %s still open at the drain deadline", e.N, what, e.Addr)
}

func (e *CutError) Unwrap() error { return e.Err }

// Cut is how many connections or requests the drains behind err cut (err
// may wrap or join several CutErrors).
func Cut(err error) int {
	switch e := err.(type) {
	case nil:
		return 0
	case *CutError:
		return e.N
	case interface{ Unwrap() []error }:
		n := 0
		for _, x := range e.Unwrap() {
			n += Cut(x)
		}
		return n
	case interface{ Unwrap() error }:
		return Cut(e.Unwrap())
	}
	return 0
}

// listenFront listens on a front address, naming a taken port plainly.
func listenFront(front string) (net.Listener, error) {
	ln, err := net.Listen("tcp", front)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("front port %s is already in use", front)
		}
		return nil, fmt.Errorf("listen on front port %s: %w", front, err)
	}
	return ln, nil
}

// backendSet is what both fronts keep: the backend set, swapped
// atomically (gen tells a pick made before a switch), a round-robin
// cursor, and what is in flight on each backend, so a drain can wait for
// it. Its mutex also guards the fields of the front that embeds it.
type backendSet struct {
	mu       sync.Mutex
	backends []string
	gen      uint64 // bumped by SetBackends
	next     uint64 // round-robin position
	active   map[string]int
	changed  chan struct{} // closed and replaced when backends or active counts change
	closed   bool
}

func newBackendSet() backendSet {
	return backendSet{active: map[string]int{}, changed: make(chan struct{})}
}

// SetBackends replaces the backend set. What is picked from now on comes
// from the new set; what is in flight continues untouched.
func (s *backendSet) SetBackends(addrs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.backends = slices.Clone(addrs)
	s.gen++
	s.notifyLocked()
}

// Backends returns the current backend set.
func (s *backendSet) Backends() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.backends)
}

// Active is the number of connections or requests in flight to addr.
func (s *backendSet) Active(addr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[addr]
}

func (s *backendSet) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// pick is the set to try next, starting at the round-robin cursor.
func (s *backendSet) pick() (set []string, gen, start uint64, changed <-chan struct{}, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set, gen, start, changed, closed = s.backends, s.gen, s.next, s.changed, s.closed
	s.next++
	return
}

// acquire counts one more in flight on addr, unless the set changed since
// gen or the front is closing.
func (s *backendSet) acquire(addr string, gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.gen != gen {
		return false
	}
	s.active[addr]++
	return true
}

// switched says the set changed since gen (and the front is open).
func (s *backendSet) switched(gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen != gen && !s.closed
}

func (s *backendSet) release(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[addr]--; s.active[addr] <= 0 {
		delete(s.active, addr)
	}
	s.notifyLocked()
}

// drain waits until nothing is in flight to addr, or ctx ends; then
// cutLocked (called with the mutex held) cuts what is left, and the
// returned *CutError counts it as what.
func (s *backendSet) drain(ctx context.Context, addr, what string, cutLocked func()) error {
	for {
		s.mu.Lock()
		n, ch := s.active[addr], s.changed
		if n > 0 && ctx.Err() != nil {
			cutLocked()
			s.mu.Unlock()
			return &CutError{Addr: addr, N: n, What: what, Err: ctx.Err()}
		}
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
}
