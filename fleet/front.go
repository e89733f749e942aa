package fleet

import (
	"context"
	"fmt"
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
