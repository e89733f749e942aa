package supervisor

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSystemdUser(t *testing.T) {
	found := func(string) (string, error) { return "/usr/bin/systemd-run", nil }
	missing := func(string) (string, error) { return "", errors.New("not found") }
	cases := []struct {
		name    string
		runtime string
		paths   []string
		look    func(string) (string, error)
		want    bool
	}{
		{"a user session under systemd", "/run/user/1000", []string{"/run/systemd/system", "/run/user/1000/systemd/private"}, found, true},
		{"no systemd as init (a container, this CI)", "/run/user/1000", []string{"/run/user/1000/systemd/private"}, found, false},
		{"systemd but no user manager (ssh without lingering)", "/run/user/1000", []string{"/run/systemd/system"}, found, false},
		{"no runtime folder", "", []string{"/run/systemd/system", "/systemd/private"}, found, false},
		{"systemd-run not installed", "/run/user/1000", []string{"/run/systemd/system", "/run/user/1000/systemd/private"}, missing, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "XDG_RUNTIME_DIR" {
					return c.runtime
				}
				return ""
			}
			exists := func(p string) bool { return slices.Contains(c.paths, p) }
			if got := SystemdUser(getenv, exists, c.look); got != c.want {
				t.Errorf("SystemdUser = %v, want %v", got, c.want)
			}
		})
	}
}

func TestSystemdRunArgv(t *testing.T) {
	argv := SystemdRunArgv("web", "/usr/local/bin/kiln", "/data/fleets/web/supervisor.log",
		RunnerEnv([]string{"PATH=/usr/bin", "KILN_HOME=/k", "XDG_DATA_HOME=/d", "SSH_AUTH_SOCK=/tmp/agent", "TERM=xterm", RestartReasonEnv + "=by hand"}))
	got := strings.Join(argv, " ")
	for _, want := range []string{
		"systemd-run --user --unit kiln-fleet-web ",
		"-p Restart=on-failure", "-p RestartPreventExitStatus=3", "-p KillMode=process",
		"-p StandardError=append:/data/fleets/web/supervisor.log",
		"--setenv=PATH=/usr/bin", "--setenv=KILN_HOME=/k", "--setenv=XDG_DATA_HOME=/d",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("argv lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "SSH_AUTH_SOCK") || strings.Contains(got, "TERM=") || strings.Contains(got, RestartReasonEnv) {
		t.Errorf("argv passes environment the supervisor does not need:\n%s", got)
	}
	if tail := argv[len(argv)-5:]; !slices.Equal(tail, []string{"--", "/usr/local/bin/kiln", "fleet", "supervise", "web"}) {
		t.Errorf("argv ends %v", tail)
	}
}

func TestMonitor(t *testing.T) {
	killed := Exit{Code: -1, Signal: "killed", Ran: time.Second}
	policy := RestartPolicy{Delay: time.Second, MaxDelay: 4 * time.Second, Burst: 3, Window: time.Hour, Healthy: time.Minute}
	cases := []struct {
		name    string
		exits   []Exit
		delays  []time.Duration
		starts  int
		wantErr string
	}{
		{"a clean stop is not restarted", []Exit{{Code: 0}}, nil, 1, ""},
		{"a fleet that cannot run is not restarted", []Exit{{Code: ExitNoRestart}}, nil, 1, ""},
		{"killed, then stopped cleanly", []Exit{killed, {Code: 0}}, []time.Duration{time.Second}, 2, ""},
		{"backoff doubles up to its cap", []Exit{killed, {Code: 2}, killed, {Code: 0}},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second}, 4, ""},
		{"a supervisor that ran a while resets the backoff", []Exit{killed, {Code: 1, Ran: time.Hour / 2}, {Code: 0}},
			[]time.Duration{time.Second, time.Second}, 3, ""},
		{"too many deaths: give up", []Exit{killed, killed, killed, killed, {Code: 0}},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second}, 4, "died 4 times within 1h0m0s (last: it was killed)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var reasons []string
			var delays []time.Duration
			i := 0
			start := func(reason string) Exit {
				reasons = append(reasons, reason)
				ex := c.exits[i]
				i++
				return ex
			}
			sleep := func(_ context.Context, d time.Duration) error { delays = append(delays, d); return nil }
			err := Monitor(t.Context(), policy, start, sleep)
			if (err == nil) != (c.wantErr == "") || err != nil && !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("Monitor: %v, want %q", err, c.wantErr)
			}
			if i != c.starts || !slices.Equal(delays, c.delays) {
				t.Errorf("%d starts with delays %v, want %d with %v", i, delays, c.starts, c.delays)
			}
			if reasons[0] != "" {
				t.Errorf("the first start has a restart reason: %q", reasons[0])
			}
			if len(reasons) > 1 && !strings.Contains(reasons[1], "after the supervisor was killed") {
				t.Errorf("the restart's reason %q does not say what happened", reasons[1])
			}
		})
	}
	// A monitor told to stop (fleet down) does not restart what dies.
	ctx, cancel := context.WithCancel(t.Context())
	n := 0
	err := Monitor(ctx, policy, func(string) Exit { n++; cancel(); return killed },
		func(ctx context.Context, d time.Duration) error { return ctx.Err() })
	if err != nil || n != 1 {
		t.Errorf("after its ctx ended: %v, %d starts", err, n)
	}
}
