package fleet

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckWithDefaults(t *testing.T) {
	tests := []struct {
		in, want Check
	}{
		{Check{Kind: CheckHTTP, Port: 80}, Check{Kind: CheckHTTP, Port: 80, Path: "/", StatusMin: 200, StatusMax: 399,
			Interval: 2 * time.Second, Timeout: time.Second, SuccessThreshold: 1, FailureThreshold: 3}},
		{Check{Kind: CheckTCP, Port: 22}, Check{Kind: CheckTCP, Port: 22,
			Interval: 2 * time.Second, Timeout: time.Second, SuccessThreshold: 1, FailureThreshold: 3}},
		{Check{Kind: CheckHTTP, Port: 80, Path: "/healthz", StatusMin: 200, StatusMax: 204, Interval: time.Second, Timeout: 3 * time.Second, InitialDelay: 5 * time.Second, SuccessThreshold: 2, FailureThreshold: 1},
			Check{Kind: CheckHTTP, Port: 80, Path: "/healthz", StatusMin: 200, StatusMax: 204, Interval: time.Second, Timeout: 3 * time.Second, InitialDelay: 5 * time.Second, SuccessThreshold: 2, FailureThreshold: 1}},
	}
	for _, tc := range tests {
		if got := tc.in.WithDefaults(); got != tc.want {
			t.Errorf("WithDefaults(%+v)\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

func TestCheckValidate(t *testing.T) {
	tests := []struct {
		c    Check
		want string // "" = valid
	}{
		{Check{Kind: CheckHTTP, Port: 8080, Path: "/healthz"}, ""},
		{Check{Kind: CheckTCP, Port: 22}, ""},
		{Check{Kind: CheckExec, Command: "systemctl is-active app"}, ""},
		{Check{}, "kind is missing"},
		{Check{Kind: "grpc", Port: 1}, `unknown kind "grpc"`},
		{Check{Kind: CheckHTTP}, "http needs a guest port between 1 and 65535, got 0"},
		{Check{Kind: CheckTCP, Port: 70000}, "got 70000"},
		{Check{Kind: CheckExec, Command: "  "}, "exec needs a command"},
		{Check{Kind: CheckHTTP, Port: 80, Path: "healthz"}, "must start with /"},
		{Check{Kind: CheckHTTP, Port: 80, StatusMin: 300, StatusMax: 200}, "status range 300-200"},
		{Check{Kind: CheckHTTP, Port: 80, StatusMin: 200, StatusMax: 700}, "within 100-599"},
		{Check{Kind: CheckTCP, Port: 80, Interval: -time.Second}, "cannot be negative"},
		{Check{Kind: CheckTCP, Port: 80, FailureThreshold: -1}, "thresholds must be at least 1"},
	}
	for _, tc := range tests {
		err := tc.c.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.c, err, tc.want)
		}
	}
}

func TestCheckString(t *testing.T) {
	tests := []struct {
		c    Check
		want string
	}{
		{Check{Kind: CheckHTTP, Port: 8080, Path: "/healthz"}, "http-get :8080/healthz [200-399] delay=0s timeout=1s period=2s #success=1 #failure=3"},
		{Check{Kind: CheckTCP, Port: 22, InitialDelay: 10 * time.Second}, "tcp-socket :22 delay=10s timeout=1s period=2s #success=1 #failure=3"},
		{Check{Kind: CheckExec, Command: "test -f /run/ready", SuccessThreshold: 2}, "exec [test -f /run/ready] delay=0s timeout=10s period=2s #success=2 #failure=3"},
	}
	for _, tc := range tests {
		if got := tc.c.String(); got != tc.want {
			t.Errorf("String()\n got %q\nwant %q", got, tc.want)
		}
	}
}

// TestObserve walks the threshold logic through every transition. seq is
// the probe results (+ pass, - fail); states is the state after each
// (? unknown, H healthy, U unhealthy); changes marks where it changed.
func TestObserve(t *testing.T) {
	tests := []struct {
		name             string
		success, failure int
		seq, states      string
		changes          string
	}{
		{"unknown to healthy at once", 1, 3, "+", "H", "1"},
		{"unknown to healthy after 3", 3, 3, "+++", "??H", "001"},
		{"a failure resets the success count", 2, 3, "+-+", "???", "000"},
		{"unknown to unhealthy", 1, 3, "---", "??U", "001"},
		{"unknown to unhealthy at once", 1, 1, "-", "U", "1"},
		{"a pass resets the failure count", 2, 3, "--+--", "?????", "00000"},
		{"healthy stays healthy", 1, 3, "+++", "HHH", "100"},
		{"healthy survives fewer failures", 1, 3, "+--+--", "HHHHHH", "100000"},
		{"healthy to unhealthy", 1, 3, "+---", "HHHU", "1001"},
		{"unhealthy stays unhealthy", 1, 2, "----", "?UUU", "0100"},
		{"unhealthy needs success threshold", 3, 1, "-++-+++", "UUUUUUH", "1000001"},
		{"flapping", 1, 1, "+-+-", "HUHU", "1111"},
		{"healthy to unhealthy and back", 2, 2, "++--++", "?HHUUH", "010101"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewProber(Check{Kind: CheckExec, Command: "x", SuccessThreshold: tc.success, FailureThreshold: tc.failure}, newFakeInstance("web-1", v1, nil))
			if s := p.Status(); s.State != Unknown || s.Instance != "web-1" {
				t.Fatalf("new prober: %+v", s)
			}
			okRun, failRun := 0, 0
			for i, r := range tc.seq {
				ok := r == '+'
				if ok {
					okRun, failRun = okRun+1, 0
				} else {
					okRun, failRun = 0, failRun+1
				}
				changed := p.Observe(ok, "probe "+string(r))
				s := p.Status()
				want := map[byte]HealthState{'?': Unknown, 'H': Healthy, 'U': Unhealthy}[tc.states[i]]
				if s.State != want || changed != (tc.changes[i] == '1') {
					t.Fatalf("after %q: state %s changed %v, want %s %v", tc.seq[:i+1], s.State, changed, want, tc.changes[i] == '1')
				}
				if s.ConsecutiveOK != okRun || s.ConsecutiveFail != failRun || s.LastDetail != "probe "+string(r) || s.LastProbe.IsZero() {
					t.Fatalf("after %q: status %+v", tc.seq[:i+1], s)
				}
			}
		})
	}
}

func TestProbeHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(200)
		case "/nocontent":
			w.WriteHeader(204)
		case "/redirect":
			http.Redirect(w, r, "/missing", http.StatusFound)
		case "/fail":
			w.WriteHeader(500)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		default:
			w.WriteHeader(404)
		}
	}))
	defer srv.Close()
	in := newFakeInstance("web-1", v1, map[int]string{8080: srv.Listener.Addr().String()})
	tests := []struct {
		name   string
		c      Check
		ok     bool
		detail string
	}{
		{"200", Check{Path: "/ok"}, true, "GET /ok: 200 OK"},
		{"302 is in the default range and not followed", Check{Path: "/redirect"}, true, "302 Found"},
		{"404", Check{Path: "/missing"}, false, "404 Not Found"},
		{"500", Check{Path: "/fail"}, false, "500 Internal Server Error"},
		{"204 outside 200-200", Check{Path: "/nocontent", StatusMin: 200, StatusMax: 200}, false, "204 No Content"},
		{"500 inside 500-599", Check{Path: "/fail", StatusMin: 500, StatusMax: 599}, true, "500"},
		{"timeout", Check{Path: "/slow", Timeout: 50 * time.Millisecond}, false, "GET /slow: timed out after 50ms"},
		{"port not forwarded", Check{Path: "/ok", Port: 9090}, false, "guest port 9090 is not forwarded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			c.Kind = CheckHTTP
			if c.Port == 0 {
				c.Port = 8080
			}
			ok, detail := probeOnce(t.Context(), c, in)
			if ok != tc.ok || !strings.Contains(detail, tc.detail) {
				t.Errorf("probe = %v %q, want %v %q", ok, detail, tc.ok, tc.detail)
			}
		})
	}
}

func TestProbeTCP(t *testing.T) {
	open, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	go func() {
		for {
			c, err := open.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed := closedAddr(t)
	in := newFakeInstance("web-1", v1, map[int]string{80: open.Addr().String(), 81: closed})
	tests := []struct {
		port   int
		ok     bool
		detail string
	}{
		{80, true, "guest port 80 accepts connections"},
		{81, false, "connect to guest port 81: "},
		{82, false, "guest port 82 is not forwarded"},
	}
	for _, tc := range tests {
		ok, detail := probeOnce(t.Context(), Check{Kind: CheckTCP, Port: tc.port}, in)
		if ok != tc.ok || !strings.Contains(detail, tc.detail) {
			t.Errorf("port %d: probe = %v %q, want %v %q", tc.port, ok, detail, tc.ok, tc.detail)
		}
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestProbeExec(t *testing.T) {
	tests := []struct {
		name   string
		exec   func(ctx context.Context, cmd string) (int, error)
		ok     bool
		detail string
	}{
		{"exit 0", func(context.Context, string) (int, error) { return 0, nil }, true, "exit status 0"},
		{"exit 1", func(context.Context, string) (int, error) { return 1, nil }, false, "exec: exit status 1"},
		{"ssh error", func(context.Context, string) (int, error) { return 0, errors.New("ssh: handshake failed") }, false, "exec: ssh: handshake failed"},
		{"timeout", func(ctx context.Context, _ string) (int, error) { <-ctx.Done(); return -1, ctx.Err() }, false, "exec: timed out after 20ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			in := newFakeInstance("web-1", v1, nil)
			in.exec = func(ctx context.Context, cmd string) (int, error) { got = cmd; return tc.exec(ctx, cmd) }
			ok, detail := probeOnce(t.Context(), Check{Kind: CheckExec, Command: "curl -fsS localhost/healthz", Timeout: 20 * time.Millisecond}, in)
			if ok != tc.ok || !strings.Contains(detail, tc.detail) {
				t.Errorf("probe = %v %q, want %v %q", ok, detail, tc.ok, tc.detail)
			}
			if got != "curl -fsS localhost/healthz" {
				t.Errorf("ran %q", got)
			}
		})
	}
}

// scriptedInstance answers exec probes from a script of exit statuses and
// then keeps repeating the last one.
func scriptedInstance(id string, statuses ...int) (*fakeInstance, *atomic.Int32) {
	var calls atomic.Int32
	in := newFakeInstance(id, v1, nil)
	in.exec = func(context.Context, string) (int, error) {
		n := int(calls.Add(1)) - 1
		return statuses[min(n, len(statuses)-1)], nil
	}
	return in, &calls
}

func TestProberRun(t *testing.T) {
	fastCheck := Check{Kind: CheckExec, Command: "x", Interval: 2 * time.Millisecond, FailureThreshold: 3}
	tests := []struct {
		name     string
		statuses []int
		kill     bool
		want     []HealthState
	}{
		{"two failures then healthy", []int{1, 1, 0}, false, []HealthState{Healthy}},
		{"unhealthy then healthy", []int{1, 1, 1, 0}, false, []HealthState{Unhealthy, Healthy}},
		{"healthy then unhealthy", []int{0, 1, 1, 1}, false, []HealthState{Healthy, Unhealthy}},
		{"dies while healthy", []int{0}, true, []HealthState{Healthy, Unhealthy}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, _ := scriptedInstance("web-1", tc.statuses...)
			p := NewProber(fastCheck, in)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			var mu sync.Mutex
			var seen []HealthState
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				p.Run(ctx, func(s Status) {
					mu.Lock()
					defer mu.Unlock()
					seen = append(seen, s.State)
					if len(seen) == len(tc.want) {
						close(stop)
					}
					if tc.kill && s.State == Healthy {
						in.kill()
					}
				})
			}()
			select {
			case <-stop:
			case <-ctx.Done():
				t.Fatal("timed out waiting for state changes")
			}
			cancel()
			<-done
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != len(tc.want) || !equalStates(seen, tc.want) {
				t.Errorf("changes %v, want %v", seen, tc.want)
			}
		})
	}
}

func equalStates(a, b []HealthState) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

func TestProberRunInitialDelay(t *testing.T) {
	in, calls := scriptedInstance("web-1", 0)
	p := NewProber(Check{Kind: CheckExec, Command: "x", InitialDelay: time.Hour}, in)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	p.Run(ctx, nil)
	if calls.Load() != 0 || p.Status().State != Unknown {
		t.Errorf("probed %d times during the initial delay; state %s", calls.Load(), p.Status().State)
	}
}

func TestProberRunDeadInstance(t *testing.T) {
	in, _ := scriptedInstance("web-1", 0)
	in.kill()
	p := NewProber(Check{Kind: CheckExec, Command: "x"}, in)
	var got Status
	p.Run(t.Context(), func(s Status) { got = s }) // returns at once
	if got.State != Unhealthy || got.LastDetail != "instance exited" {
		t.Errorf("dead instance: %+v", got)
	}
}

func TestWaitHealthy(t *testing.T) {
	c := Check{Kind: CheckExec, Command: "x", Interval: 2 * time.Millisecond, FailureThreshold: 2, SuccessThreshold: 2}
	healthy := func(id string) Instance { in, _ := scriptedInstance(id, 1, 0); return in }
	broken := func(id string) Instance { in, _ := scriptedInstance(id, 1); return in }
	slow := func(id string) Instance {
		in := newFakeInstance(id, v1, nil)
		in.exec = func(ctx context.Context, _ string) (int, error) { <-ctx.Done(); return -1, ctx.Err() }
		return in
	}
	dead := func(id string) Instance { in, _ := scriptedInstance(id, 0); in.kill(); return in }
	tests := []struct {
		name  string
		insts []Instance
		limit time.Duration
		want  string // "" = nil
	}{
		{"none", nil, time.Second, ""},
		{"all healthy", []Instance{healthy("web-3"), healthy("web-4")}, 10 * time.Second, ""},
		{"one unhealthy", []Instance{healthy("web-3"), broken("web-4")}, 10 * time.Second, "web-4 is unhealthy: exec: exit status 1"},
		{"one dead", []Instance{healthy("web-3"), dead("web-4")}, 10 * time.Second, "web-4 is unhealthy: instance exited"},
		{"deadline", []Instance{slow("web-3")}, 50 * time.Millisecond, "context deadline exceeded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), tc.limit)
			defer cancel()
			err := WaitHealthy(ctx, c.WithDefaults(), tc.insts)
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("WaitHealthy = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestWatchHealthy(t *testing.T) {
	c := Check{Kind: CheckExec, Command: "x", Interval: 2 * time.Millisecond, FailureThreshold: 2}
	tests := []struct {
		name     string
		statuses []int
		kill     bool
		parent   time.Duration // parent ctx timeout
		bake     time.Duration
		want     string
	}{
		{"stays healthy", []int{0}, false, 10 * time.Second, 50 * time.Millisecond, ""},
		{"turns unhealthy", []int{0, 0, 1}, false, 10 * time.Second, 10 * time.Second, "web-3 is unhealthy: exec: exit status 1"},
		{"dies", []int{0}, true, 10 * time.Second, 10 * time.Second, "web-3 is unhealthy: instance exited"},
		{"parent deadline first", []int{0}, false, 10 * time.Millisecond, 10 * time.Second, "context deadline exceeded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, _ := scriptedInstance("web-3", tc.statuses...)
			if tc.kill {
				time.AfterFunc(10*time.Millisecond, in.kill)
			}
			ctx, cancel := context.WithTimeout(t.Context(), tc.parent)
			defer cancel()
			err := WatchHealthy(ctx, c, []Instance{in}, tc.bake)
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("WatchHealthy = %v, want %q", err, tc.want)
			}
		})
	}
}
