package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// CheckKind says how a health check probes an instance.
type CheckKind string

// The kinds of check, as in Kubernetes probes.
const (
	CheckHTTP CheckKind = "http" // GET a path; a status in [StatusMin, StatusMax] passes
	CheckTCP  CheckKind = "tcp"  // a TCP connection opens
	CheckExec CheckKind = "exec" // a command in the guest exits 0
)

// Default check settings, the same as Kubernetes' except a shorter interval:
// local fleets are small and rollouts should not wait 10s per probe.
const (
	DefaultInterval = 2 * time.Second
	DefaultTimeout  = 1 * time.Second
	// DefaultExecTimeout is longer: an exec check opens an SSH session and
	// starts a shell in a guest that may still be busy booting under TCG.
	DefaultExecTimeout      = 10 * time.Second
	DefaultSuccessThreshold = 1
	DefaultFailureThreshold = 3
	DefaultStatusMin        = 200
	DefaultStatusMax        = 399
)

// Check describes how to tell whether an instance is healthy. Zero fields
// take the defaults (see WithDefaults).
type Check struct {
	Kind    CheckKind `json:"kind"`
	Path    string    `json:"path,omitempty"`    // http; default "/"
	Port    int       `json:"port,omitempty"`    // guest port, http and tcp
	Command string    `json:"command,omitempty"` // exec, run by the guest's shell

	StatusMin int `json:"status_min,omitempty"` // http; default 200
	StatusMax int `json:"status_max,omitempty"` // http; default 399

	Interval     time.Duration `json:"interval,omitempty"`      // between probe starts; default 2s
	Timeout      time.Duration `json:"timeout,omitempty"`       // per probe; default 1s
	InitialDelay time.Duration `json:"initial_delay,omitempty"` // before the first probe; default 0

	SuccessThreshold int `json:"success_threshold,omitempty"` // consecutive passes to become healthy; default 1
	FailureThreshold int `json:"failure_threshold,omitempty"` // consecutive failures to become unhealthy; default 3
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Check) WithDefaults() Check {
	if c.Kind == CheckHTTP {
		if c.Path == "" {
			c.Path = "/"
		}
		if c.StatusMin == 0 && c.StatusMax == 0 {
			c.StatusMin, c.StatusMax = DefaultStatusMin, DefaultStatusMax
		}
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
		if c.Kind == CheckExec {
			c.Timeout = DefaultExecTimeout
		}
	}
	if c.SuccessThreshold == 0 {
		c.SuccessThreshold = DefaultSuccessThreshold
	}
	if c.FailureThreshold == 0 {
		c.FailureThreshold = DefaultFailureThreshold
	}
	return c
}

// Validate reports the first thing wrong with c (after defaults), in words
// a user can act on.
func (c Check) Validate() error {
	c = c.WithDefaults()
	switch c.Kind {
	case CheckHTTP, CheckTCP:
		if c.Port < 1 || c.Port > 65535 {
			return fmt.Errorf("health check: %s needs a guest port between 1 and 65535, got %d", c.Kind, c.Port)
		}
	case CheckExec:
		if strings.TrimSpace(c.Command) == "" {
			return errors.New("health check: exec needs a command")
		}
	case "":
		return errors.New("health check: kind is missing (http, tcp or exec)")
	default:
		return fmt.Errorf("health check: unknown kind %q (http, tcp or exec)", c.Kind)
	}
	if c.Kind == CheckHTTP {
		if !strings.HasPrefix(c.Path, "/") {
			return fmt.Errorf("health check: http path %q must start with /", c.Path)
		}
		if c.StatusMin < 100 || c.StatusMax > 599 || c.StatusMin > c.StatusMax {
			return fmt.Errorf("health check: http status range %d-%d must lie within 100-599, low to high", c.StatusMin, c.StatusMax)
		}
	}
	switch {
	case c.Interval < 0, c.Timeout < 0, c.InitialDelay < 0:
		return errors.New("health check: interval, timeout and initial delay cannot be negative")
	case c.SuccessThreshold < 1 || c.FailureThreshold < 1:
		return fmt.Errorf("health check: thresholds must be at least 1, got success %d and failure %d", c.SuccessThreshold, c.FailureThreshold)
	}
	return nil
}

// String describes c on one line, in the style of kubectl describe.
func (c Check) String() string {
	c = c.WithDefaults()
	var what string
	switch c.Kind {
	case CheckHTTP:
		what = fmt.Sprintf("http-get :%d%s [%d-%d]", c.Port, c.Path, c.StatusMin, c.StatusMax)
	case CheckTCP:
		what = fmt.Sprintf("tcp-socket :%d", c.Port)
	case CheckExec:
		what = fmt.Sprintf("exec [%s]", c.Command)
	default:
		what = string(c.Kind)
	}
	return fmt.Sprintf("%s delay=%s timeout=%s period=%s #success=%d #failure=%d",
		what, c.InitialDelay, c.Timeout, c.Interval, c.SuccessThreshold, c.FailureThreshold)
}

// HealthState is what the checks have concluded about an instance.
type HealthState string

// Health states. A new instance is Unknown until enough probes agree.
const (
	Unknown   HealthState = "unknown"
	Healthy   HealthState = "healthy"
	Unhealthy HealthState = "unhealthy"
)

// Status is a snapshot of one instance's health.
type Status struct {
	Instance        string      `json:"instance"`
	State           HealthState `json:"state"`
	ConsecutiveOK   int         `json:"consecutive_ok"`
	ConsecutiveFail int         `json:"consecutive_fail"`
	LastDetail      string      `json:"last_detail,omitempty"`
	LastProbe       time.Time   `json:"last_probe,omitzero"`
}

// Prober tracks the health of one instance. Thresholds debounce flapping:
// one failed probe does not take a healthy instance out, and one pass does
// not put an unhealthy one back.
type Prober struct {
	check Check
	inst  Instance
	now   func() time.Time

	mu     sync.Mutex
	status Status
}

// NewProber returns a Prober for inst, in state Unknown. c gets its defaults.
func NewProber(c Check, inst Instance) *Prober {
	return &Prober{
		check:  c.WithDefaults(),
		inst:   inst,
		now:    time.Now,
		status: Status{Instance: inst.ID(), State: Unknown},
	}
}

// Status returns the current health snapshot.
func (p *Prober) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Observe records one probe result and reports whether the state changed.
// The state becomes Healthy after SuccessThreshold consecutive passes and
// Unhealthy after FailureThreshold consecutive failures, from any state.
func (p *Prober) Observe(ok bool, detail string) (changed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &p.status
	s.LastDetail, s.LastProbe = detail, p.now()
	if ok {
		s.ConsecutiveOK++
		s.ConsecutiveFail = 0
		if s.State != Healthy && s.ConsecutiveOK >= p.check.SuccessThreshold {
			s.State = Healthy
			return true
		}
		return false
	}
	s.ConsecutiveFail++
	s.ConsecutiveOK = 0
	if s.State != Unhealthy && s.ConsecutiveFail >= p.check.FailureThreshold {
		s.State = Unhealthy
		return true
	}
	return false
}

// markDead makes the instance Unhealthy at once: a dead instance never
// comes back, so waiting for FailureThreshold probes would only delay the
// verdict.
func (p *Prober) markDead() (changed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &p.status
	s.LastDetail, s.LastProbe = "instance exited", p.now()
	s.ConsecutiveOK = 0
	s.ConsecutiveFail = max(s.ConsecutiveFail+1, p.check.FailureThreshold)
	if s.State == Unhealthy {
		return false
	}
	s.State = Unhealthy
	return true
}

// Run probes the instance every Interval (after InitialDelay) until ctx
// ends or the instance dies, calling onChange (if not nil) on every state
// change. A dead instance turns Unhealthy at once and Run returns.
func (p *Prober) Run(ctx context.Context, onChange func(Status)) {
	report := func(changed bool) {
		if changed && onChange != nil {
			onChange(p.Status())
		}
	}
	wait := p.check.InitialDelay
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-p.inst.Done():
			t.Stop()
			report(p.markDead())
			return
		case <-t.C:
		}
		start := time.Now()
		ok, detail := probeOnce(ctx, p.check, p.inst)
		if ctx.Err() != nil {
			return // a probe cut short by shutdown says nothing about the instance
		}
		if isDone(p.inst) {
			report(p.markDead())
			return
		}
		report(p.Observe(ok, detail))
		wait = max(p.check.Interval-time.Since(start), 0)
	}
}

// probeClient is shared by HTTP probes. It never uses a proxy (the target
// is a loopback port forward), never reuses connections (each probe should
// prove a fresh connection works, as in Kubernetes) and does not follow
// redirects, so a 3xx counts as a response in the default range.
var probeClient = &http.Client{
	Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{}).DialContext,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// probeOnce runs c once against inst, bounded by c.Timeout, and says
// whether it passed and why.
func probeOnce(ctx context.Context, c Check, inst Instance) (ok bool, detail string) {
	c = c.WithDefaults()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	timedOut := func(err error) string {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Sprintf("timed out after %s", c.Timeout)
		}
		return err.Error()
	}
	switch c.Kind {
	case CheckHTTP:
		addr := inst.Addr(c.Port)
		if addr == "" {
			return false, fmt.Sprintf("guest port %d is not forwarded", c.Port)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+c.Path, nil)
		if err != nil {
			return false, err.Error()
		}
		req.Header.Set("User-Agent", "kiln-probe")
		resp, err := probeClient.Do(req)
		if err != nil {
			return false, "GET " + c.Path + ": " + timedOut(err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		ok := resp.StatusCode >= c.StatusMin && resp.StatusCode <= c.StatusMax
		return ok, fmt.Sprintf("GET %s: %s", c.Path, resp.Status)
	case CheckTCP:
		addr := inst.Addr(c.Port)
		if addr == "" {
			return false, fmt.Sprintf("guest port %d is not forwarded", c.Port)
		}
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return false, fmt.Sprintf("connect to guest port %d: %s", c.Port, timedOut(err))
		}
		conn.Close()
		return true, fmt.Sprintf("guest port %d accepts connections", c.Port)
	case CheckExec:
		status, err := inst.Exec(ctx, c.Command)
		if err != nil {
			return false, "exec: " + timedOut(err)
		}
		if status != 0 {
			return false, fmt.Sprintf("exec: exit status %d", status)
		}
		return true, "exec: exit status 0"
	}
	return false, fmt.Sprintf("unknown check kind %q", c.Kind)
}

// WaitHealthy probes every instance with c until all are Healthy (nil), any
// turns Unhealthy or dies (an error naming it), or ctx ends (ctx's error).
// It is the pre-promotion gate a rollout runs on green.
func WaitHealthy(ctx context.Context, c Check, insts []Instance) error {
	return watch(ctx, c, insts, true)
}

// WatchHealthy probes every instance with c for d and returns an error as
// soon as any turns Unhealthy or dies. It is the bake watcher a rollout
// runs on green after the switch. ctx ending early returns ctx's error.
func WatchHealthy(ctx context.Context, c Check, insts []Instance, d time.Duration) error {
	bake, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := watch(bake, c, insts, false)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return nil // the bake ran its full length
	}
	return err
}

// watch runs one Prober per instance. With untilHealthy it returns nil
// once all are Healthy; otherwise it runs until ctx ends.
func watch(ctx context.Context, c Check, insts []Instance, untilHealthy bool) error {
	if untilHealthy && len(insts) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	changes := make(chan Status, len(insts))
	var wg sync.WaitGroup
	// Cancel before waiting: the probers run until ctx ends.
	defer wg.Wait()
	defer cancel()
	for _, in := range insts {
		p := NewProber(c, in)
		wg.Go(func() {
			p.Run(ctx, func(s Status) {
				select {
				case changes <- s:
				case <-ctx.Done():
				}
			})
		})
	}
	healthy := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case s := <-changes:
			switch s.State {
			case Unhealthy:
				return fmt.Errorf("%s is unhealthy: %s", s.Instance, s.LastDetail)
			case Healthy:
				healthy[s.Instance] = true
				if untilHealthy && len(healthy) == len(insts) {
					return nil
				}
			}
		}
	}
}
