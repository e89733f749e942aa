package fleet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echoServer answers each line with "name:line" until the client
// half-closes, then closes. It stands in for one instance.
func echoServer(t *testing.T, name string) string {
	addr, _ := startEcho(t, name)
	return addr
}

// startEcho is echoServer with a stop that closes the listener and every
// connection, as an instance that powers off does.
func startEcho(t *testing.T, name string) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			for c := range conns {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s:%s\n", name, sc.Text())
				}
			})
		}
	})
	return ln.Addr().String(), stop
}

func newTestBalancer(t *testing.T, grace time.Duration) *Balancer {
	t.Helper()
	b, err := newBalancer("127.0.0.1:0", grace, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// session is one client connection through the balancer.
type session struct {
	c net.Conn
	r *bufio.Reader
}

func dialSession(t *testing.T, addr string) *session {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &session{c: c, r: bufio.NewReader(c)}
}

func (s *session) ask(msg string) (string, error) {
	if _, err := fmt.Fprintln(s.c, msg); err != nil {
		return "", err
	}
	line, err := s.r.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// askOnce opens a connection, asks once and closes it.
func askOnce(t *testing.T, addr, msg string) (string, error) {
	t.Helper()
	s := dialSession(t, addr)
	defer s.c.Close()
	return s.ask(msg)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestBalancerRoundRobin(t *testing.T) {
	tests := []struct {
		backends, conns int
		want            []int
	}{
		{1, 3, []int{3}},
		{2, 5, []int{3, 2}},
		{3, 9, []int{3, 3, 3}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d over %d", tc.conns, tc.backends), func(t *testing.T) {
			b := newTestBalancer(t, time.Second)
			var set []string
			for i := range tc.backends {
				set = append(set, echoServer(t, fmt.Sprint(i)))
			}
			b.SetBackends(set)
			if got := b.Backends(); strings.Join(got, ",") != strings.Join(set, ",") {
				t.Fatalf("Backends() = %v", got)
			}
			counts := make([]int, tc.backends)
			for range tc.conns {
				reply, err := askOnce(t, b.Addr(), "hi")
				if err != nil {
					t.Fatal(err)
				}
				var i int
				fmt.Sscanf(reply, "%d:", &i)
				counts[i]++
			}
			if fmt.Sprint(counts) != fmt.Sprint(tc.want) {
				t.Errorf("spread %v, want %v", counts, tc.want)
			}
		})
	}
}

func TestBalancerSwitchAndDrain(t *testing.T) {
	b := newTestBalancer(t, time.Second)
	blue, green := echoServer(t, "blue"), echoServer(t, "green")
	b.SetBackends([]string{blue})

	long := dialSession(t, b.Addr())
	if reply, err := long.ask("1"); err != nil || reply != "blue:1" {
		t.Fatalf("before the switch: %q %v", reply, err)
	}
	b.SetBackends([]string{green})
	for i := range 3 {
		if reply, err := askOnce(t, b.Addr(), "new"); err != nil || reply != "green:new" {
			t.Fatalf("new connection %d after the switch: %q %v", i, reply, err)
		}
	}
	if reply, err := long.ask("2"); err != nil || reply != "blue:2" {
		t.Fatalf("in-flight connection after the switch: %q %v", reply, err)
	}
	if n := b.Active(blue); n != 1 {
		t.Fatalf("Active(blue) = %d, want 1", n)
	}

	drained := make(chan error, 1)
	go func() { drained <- b.Drain(t.Context(), blue) }()
	select {
	case err := <-drained:
		t.Fatalf("Drain returned while a connection is open: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	long.c.Close()
	select {
	case err := <-drained:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return after the last connection closed")
	}
	if n := b.Active(blue); n != 0 {
		t.Errorf("Active(blue) = %d after drain", n)
	}
	if err := b.Drain(t.Context(), "127.0.0.1:1"); err != nil {
		t.Errorf("Drain of an unused address: %v", err)
	}

	// At the drain deadline the connections left are cut, and counted.
	b.SetBackends([]string{blue})
	left := []*session{dialSession(t, b.Addr()), dialSession(t, b.Addr())}
	for _, s := range left {
		if reply, err := s.ask("x"); err != nil || reply != "blue:x" {
			t.Fatalf("before the second drain: %q %v", reply, err)
		}
	}
	b.SetBackends([]string{green})
	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	err := b.Drain(short, blue)
	var cut *CutError
	if !errors.As(err, &cut) || cut.N != 2 || Cut(fmt.Errorf("wrapped: %w", errors.Join(err, nil))) != 2 ||
		!strings.Contains(err.Error(), "cut 2 connections to "+blue) {
		t.Fatalf("Drain at its deadline with two connections open: %v", err)
	}
	for i, s := range left {
		if _, err := s.ask("y"); err == nil {
			t.Errorf("connection %d still answers after it was cut", i)
		}
	}
	waitFor(t, "the cut connections to be released", func() bool { return b.Active(blue) == 0 })
}

func TestBalancerFailover(t *testing.T) {
	a, c := echoServer(t, "a"), echoServer(t, "c")
	dead1, dead2 := closedAddr(t), closedAddr(t)
	tests := []struct {
		name    string
		set     []string
		answers []string // "" = the connection is closed without an answer
	}{
		{"first dead", []string{dead1, a}, []string{"a", "a", "a", "a"}},
		{"middle dead", []string{a, dead1, c}, []string{"a", "c", "c", "a"}},
		{"all but last dead", []string{dead1, dead2, c}, []string{"c", "c", "c"}},
		{"all dead", []string{dead1, dead2}, []string{""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBalancer(t, time.Second)
			b.SetBackends(tc.set)
			for i, want := range tc.answers {
				reply, err := askOnce(t, b.Addr(), "x")
				if want == "" {
					if err == nil {
						t.Fatalf("conn %d: got %q, want the connection closed", i, reply)
					}
					continue
				}
				if err != nil || reply != want+":x" {
					t.Fatalf("conn %d: %q %v, want %s:x", i, reply, err, want)
				}
			}
			for _, addr := range tc.set {
				waitFor(t, "connections to close", func() bool { return b.Active(addr) == 0 })
			}
		})
	}
}

func TestBalancerNoBackends(t *testing.T) {
	tests := []struct {
		name   string
		grace  time.Duration
		appear time.Duration // when backends are set; 0 = never
		want   string
	}{
		{"held until a set appears", 5 * time.Second, 50 * time.Millisecond, "late:x"},
		{"closed after the grace", 50 * time.Millisecond, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBalancer(t, tc.grace)
			late := echoServer(t, "late")
			if tc.appear > 0 {
				time.AfterFunc(tc.appear, func() { b.SetBackends([]string{late}) })
			}
			start := time.Now()
			reply, err := askOnce(t, b.Addr(), "x")
			if tc.want == "" {
				if err == nil {
					t.Fatalf("got %q, want the connection closed", reply)
				}
				if time.Since(start) < tc.grace {
					t.Errorf("closed after %s, before the grace %s", time.Since(start), tc.grace)
				}
				return
			}
			if err != nil || reply != tc.want {
				t.Fatalf("got %q %v, want %q", reply, err, tc.want)
			}
		})
	}
}

// TestBalancerHalfClose checks a client that sends a request, shuts its
// sending side and then reads the answer, as `nc -N` or HTTP/1.0 do.
func TestBalancerHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		data, _ := io.ReadAll(c) // until the client's half-close arrives
		fmt.Fprintf(c, "got %d bytes", len(data))
	}()
	b := newTestBalancer(t, time.Second)
	b.SetBackends([]string{ln.Addr().String()})
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte(strings.Repeat("x", 100000)))
	c.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != "got 100000 bytes" {
		t.Fatalf("reply %q %v", reply, err)
	}
}

func TestBalancerPortInUse(t *testing.T) {
	b := newTestBalancer(t, time.Second)
	_, err := NewBalancer(b.Addr())
	if want := fmt.Sprintf("front port %s is already in use", b.Addr()); err == nil || err.Error() != want {
		t.Fatalf("NewBalancer on a taken port: %v, want %q", err, want)
	}
}

func TestBalancerClose(t *testing.T) {
	b, err := NewBalancer("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.SetBackends([]string{echoServer(t, "a")})
	s := dialSession(t, b.Addr())
	if _, err := s.ask("x"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ask("y"); err == nil {
		t.Error("connection still works after Close")
	}
	if c, err := net.DialTimeout("tcp", b.Addr(), time.Second); err == nil {
		c.Close()
		t.Error("front port still accepts after Close")
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestBalancerHammer switches between two backends while clients make
// short HTTP requests; not one may fail.
func TestBalancerHammer(t *testing.T) {
	var hits [2]atomic.Int32
	mk := func(i int) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits[i].Add(1)
			fmt.Fprint(w, i)
		}))
	}
	s0, s1 := mk(0), mk(1)
	defer s0.Close()
	defer s1.Close()
	sets := [][]string{{s0.Listener.Addr().String()}, {s1.Listener.Addr().String()}}

	b := newTestBalancer(t, 5*time.Second)
	b.SetBackends(sets[0])
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	const workers, perWorker, switches = 4, 50, 20
	var failures atomic.Int32
	var done atomic.Int32
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				resp, err := client.Get("http://" + b.Addr() + "/")
				if err != nil {
					failures.Add(1)
					t.Log(err)
				} else {
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != 200 || (string(body) != "0" && string(body) != "1") {
						failures.Add(1)
						t.Logf("status %d body %q err %v", resp.StatusCode, body, err)
					}
				}
				done.Add(1)
			}
		})
	}
	for i := range switches {
		target := (i + 1) * workers * perWorker / (switches + 1)
		for done.Load() < int32(target) && done.Load() < workers*perWorker {
			time.Sleep(time.Millisecond)
		}
		b.SetBackends(sets[(i+1)%2])
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed", n, workers*perWorker)
	}
	if hits[0].Load() == 0 || hits[1].Load() == 0 {
		t.Errorf("hits %d and %d: the switches did not move traffic", hits[0].Load(), hits[1].Load())
	}
}

// TestBalancerBackendStops stops one backend while it is still in the set,
// as an instance that dies does: new clients fail over to the other, and
// the dead one's clients see its end of stream.
func TestBalancerBackendStops(t *testing.T) {
	gone, stop := startEcho(t, "gone")
	up := echoServer(t, "up")
	b := newTestBalancer(t, time.Second)
	b.SetBackends([]string{gone, up})
	held := dialSession(t, b.Addr())
	if reply, err := held.ask("x"); err != nil || reply != "gone:x" {
		t.Fatalf("first request: %q %v", reply, err)
	}
	stop()
	for i := range 10 {
		if reply, err := askOnce(t, b.Addr(), "x"); err != nil || reply != "up:x" {
			t.Fatalf("request %d after the stop: %q %v", i, reply, err)
		}
	}
	// The held client sees the backend's end of stream and hangs up, as an
	// HTTP client does; then nothing is left to drain.
	if line, err := held.r.ReadString('\n'); err != io.EOF {
		t.Fatalf("held connection after the backend stopped: %q %v, want EOF", line, err)
	}
	held.c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := b.Drain(ctx, gone); err != nil {
		t.Fatalf("Drain of a stopped backend: %v", err)
	}
}
