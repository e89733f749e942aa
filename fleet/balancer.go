package fleet

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Balancer timing. The grace covers the instant between a switch that
// empties the set and the one that fills it, so clients are held rather
// than dropped; the dial timeout bounds a backend that does not answer.
const (
	noBackendGrace     = 5 * time.Second
	backendDialTimeout = 3 * time.Second
)

// Balancer is a TCP proxy on one front address that spreads connections
// round-robin over a set of backends. The set can be swapped atomically,
// which is how a rollout moves traffic from blue to green.
type Balancer struct {
	ln          net.Listener
	grace       time.Duration
	dialTimeout time.Duration
	ctx         context.Context // ends on Close, cutting dials short
	cancel      context.CancelFunc

	backendSet
	conns  map[net.Conn]struct{}
	routes map[net.Conn]string // client connection → the backend it was given
	wg     sync.WaitGroup
}

// NewBalancer listens on front (e.g. "127.0.0.1:8080", or port 0 for any)
// at once, so a taken port is reported before anything is launched. It
// starts with no backends.
func NewBalancer(front string) (*Balancer, error) {
	return newBalancer(front, noBackendGrace, backendDialTimeout)
}

func newBalancer(front string, grace, dialTimeout time.Duration) (*Balancer, error) {
	ln, err := listenFront(front)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Balancer{
		ln:          ln,
		grace:       grace,
		dialTimeout: dialTimeout,
		ctx:         ctx,
		cancel:      cancel,
		backendSet:  newBackendSet(),
		conns:       map[net.Conn]struct{}{},
		routes:      map[net.Conn]string{},
	}
	b.wg.Add(1)
	go b.serve()
	return b, nil
}

// Addr is the front address clients connect to.
func (b *Balancer) Addr() string { return b.ln.Addr().String() }

// Drain waits until no connection to addr remains open, or ctx ends. Take
// addr out of the set first, or new connections keep arriving. At ctx's end
// it closes the connections still open to addr and returns a *CutError
// with their number, so a deadline is never passed over in silence.
func (b *Balancer) Drain(ctx context.Context, addr string) error {
	return b.drain(ctx, addr, "connection", func() {
		for c, a := range b.routes {
			if a == addr {
				c.Close()
			}
		}
	})
}

// Close stops listening and closes every connection.
func (b *Balancer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for c := range b.conns {
		c.Close()
	}
	b.notifyLocked()
	b.mu.Unlock()
	b.cancel()
	err := b.ln.Close()
	b.wg.Wait()
	return err
}

// track registers c so Close can reach it; false when already closing.
func (b *Balancer) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *Balancer) untrack(c net.Conn) {
	b.mu.Lock()
	delete(b.conns, c)
	delete(b.routes, c)
	b.mu.Unlock()
	c.Close()
}

func (b *Balancer) serve() {
	defer b.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait rather than spin.
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			c.Close()
			return
		}
		b.conns[c] = struct{}{}
		b.wg.Add(1)
		b.mu.Unlock()
		go b.handle(c)
	}
}

func (b *Balancer) handle(client net.Conn) {
	defer b.wg.Done()
	defer b.untrack(client)
	backend, addr := b.dial()
	if backend == nil {
		return
	}
	defer b.release(addr)
	defer b.untrack(backend)
	b.mu.Lock()
	b.routes[client] = addr
	b.mu.Unlock()
	proxy(client, backend)
}

// dial picks the next backend round-robin and, when it refuses, tries the
// others in turn: an instance that is stopping costs its clients nothing.
// With no backends it holds the client up to the grace for a set to
// appear. It returns nil when every backend failed or the grace ran out.
func (b *Balancer) dial() (net.Conn, string) {
	deadline := time.Now().Add(b.grace)
	for {
		set, gen, start, changed, closed := b.pick()
		if closed {
			return nil, ""
		}
		if len(set) == 0 {
			wait := time.Until(deadline)
			if wait <= 0 {
				return nil, ""
			}
			t := time.NewTimer(wait)
			select {
			case <-changed:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		for i := range set {
			addr := set[(start+uint64(i))%uint64(len(set))]
			// Count the dial as a connection so a Drain that starts while it
			// is in flight waits for it.
			if !b.acquire(addr, gen) {
				break
			}
			ctx, cancel := context.WithTimeout(b.ctx, b.dialTimeout)
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			cancel()
			if err == nil {
				if b.track(conn) {
					return conn, addr
				}
				conn.Close()
			}
			b.release(addr)
		}
		if !b.switched(gen) {
			return nil, ""
		}
		// The set changed under us: try the new one.
	}
}

// proxy copies both ways until both sides are done. A clean end of one
// direction is passed on as a half-close (CloseWrite), so request/response
// protocols that shut down their sending side still get their answer; an
// error in either direction tears both down.
func proxy(client, backend net.Conn) {
	errc := make(chan error, 2)
	go func() { errc <- pipe(backend, client) }()
	go func() { errc <- pipe(client, backend) }()
	if err := <-errc; err != nil {
		client.Close()
		backend.Close()
	}
	<-errc
}

func pipe(dst, src net.Conn) error {
	_, err := io.Copy(dst, src)
	if err != nil {
		return err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return dst.Close()
}
