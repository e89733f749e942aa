package fleet

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"syscall"
	"time"
)

// HTTPFront is a reverse proxy on one front address for services that
// speak HTTP. Unlike the TCP Balancer it picks a backend for every request,
// not for every connection, so a client's keep-alive connection outlives a
// switch: its next request simply goes to the new set. In-flight requests
// are counted per backend, so a drain waits for exactly the requests still
// running on the instance about to stop.
type HTTPFront struct {
	ln        net.Listener
	srv       *http.Server
	transport *http.Transport
	grace     time.Duration

	backendSet
	cancels map[string]map[*int]context.CancelFunc // in-flight requests per backend, to cut at a deadline
}

var _ Front = (*HTTPFront)(nil)

// NewHTTPFront listens on front at once (a taken port is reported before
// anything is launched) and starts with no backends.
func NewHTTPFront(front string) (*HTTPFront, error) {
	return newHTTPFront(front, noBackendGrace, backendDialTimeout)
}

func newHTTPFront(front string, grace, dialTimeout time.Duration) (*HTTPFront, error) {
	ln, err := listenFront(front)
	if err != nil {
		return nil, err
	}
	f := &HTTPFront{
		ln:    ln,
		grace: grace,
		transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: dialTimeout}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		},
		backendSet: newBackendSet(),
		cancels:    map[string]map[*int]context.CancelFunc{},
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The host is a placeholder: RoundTrip picks the backend. The
			// client's Host header is kept, as load balancers do.
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "backend"
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport:     f,
		FlushInterval: -1, // stream: server-sent events and long polls pass through
		ErrorLog:      log.New(io.Discard, "", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			code := http.StatusBadGateway
			if errors.Is(err, errNoBackend) {
				code = http.StatusServiceUnavailable
			}
			http.Error(w, err.Error(), code)
		},
	}
	f.srv = &http.Server{
		Handler:           proxy,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go f.srv.Serve(ln)
	return f, nil
}

var errNoBackend = errors.New("no instance is serving")

// Addr is the front address clients connect to.
func (f *HTTPFront) Addr() string { return f.ln.Addr().String() }

// Drain waits until no request is in flight to addr (take it out of the set
// first). When ctx ends first, the requests left are cancelled and counted
// in a *CutError. Idle connections to addr are closed either way, so none
// is reused after the instance stops.
func (f *HTTPFront) Drain(ctx context.Context, addr string) error {
	defer f.transport.CloseIdleConnections()
	return f.drain(ctx, addr, "request", func() {
		for _, cancel := range f.cancels[addr] {
			cancel()
		}
	})
}

// Close stops listening and closes every client and backend connection.
func (f *HTTPFront) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.notifyLocked()
	f.mu.Unlock()
	err := f.srv.Close()
	f.transport.CloseIdleConnections()
	return err
}

// RoundTrip sends one request to a backend of the current set, round-robin.
// A backend that refuses the connection is skipped for the next one, as the
// TCP Balancer does: nothing was sent yet, so any request may be retried.
// With no backend it holds the request up to the grace for a set to appear.
func (f *HTTPFront) RoundTrip(req *http.Request) (*http.Response, error) {
	deadline := time.Now().Add(f.grace)
	var lastErr error
	for {
		set, gen, start, changed, closed := f.pick()
		if closed {
			return nil, errors.New("the front is closing")
		}

		if len(set) == 0 {
			wait := time.Until(deadline)
			if wait <= 0 {
				return nil, errNoBackend
			}
			t := time.NewTimer(wait)
			select {
			case <-changed:
			case <-t.C:
			case <-req.Context().Done():
				t.Stop()
				return nil, req.Context().Err()
			}
			t.Stop()
			continue
		}
		for i := range set {
			addr := set[(start+uint64(i))%uint64(len(set))]
			resp, err := f.send(req, addr, gen)
			if err == nil {
				return resp, nil
			}
			lastErr = err
			if !retryable(req, err) {
				return nil, err
			}
		}
		if !f.switched(gen) {
			return nil, lastErr
		}
	}
}

// errSwitched makes RoundTrip try the new set when the set changed between
// picking a backend and counting the request on it.
var errSwitched = &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}

// send runs req on addr, counting it as in flight until its response body
// is closed (the proxy closes it once copied).
func (f *HTTPFront) send(req *http.Request, addr string, gen uint64) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	key := new(int)
	if !f.acquire(addr, gen) {
		cancel()
		return nil, errSwitched
	}
	f.mu.Lock()
	if f.cancels[addr] == nil {
		f.cancels[addr] = map[*int]context.CancelFunc{}
	}
	f.cancels[addr][key] = cancel
	f.mu.Unlock()
	var once sync.Once
	done := func() {
		once.Do(func() {
			cancel()
			f.mu.Lock()
			delete(f.cancels[addr], key)
			if len(f.cancels[addr]) == 0 {
				delete(f.cancels, addr)
			}
			f.mu.Unlock()
			f.release(addr)
		})
	}

	out := req.Clone(ctx)
	out.URL.Host = addr
	resp, err := f.transport.RoundTrip(out)
	if err != nil {
		done()
		return nil, err
	}
	resp.Body = &countedBody{ReadCloser: resp.Body, done: done}
	return resp, nil
}

// countedBody ends a request's count when the proxy closes the body.
type countedBody struct {
	io.ReadCloser
	done func()
}

func (b *countedBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

// retryable says the next backend may take req after err: the backend
// could not be reached (nothing was sent), or, for an idempotent request,
// it dropped the connection without answering — as a guest still booting
// does when QEMU accepts a connection for it. The transport has closed a
// request body by then, so only bodiless requests go to another backend.
func retryable(req *http.Request, err error) bool {
	if req.Context().Err() != nil || (req.Body != nil && req.Body != http.NoBody) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	idempotent := req.Method == http.MethodGet || req.Method == http.MethodHead || req.Method == http.MethodOptions
	return idempotent && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF))
}
