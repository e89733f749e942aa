package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/proc"
)

// ExitNoRestart is the supervisor's exit status when the fleet cannot run
// (a front port taken, an image missing): starting it again would fail
// again, so neither kiln's monitor nor systemd restarts it.
const ExitNoRestart = 3

// Runner is how `kiln fleet up` keeps a fleet's supervisor running: under
// the user's systemd (a transient unit with Restart=on-failure) or under
// kiln's own monitor process. It is saved in the fleet's folder so
// `kiln fleet down` can stop what restarts the supervisor.
type Runner struct {
	Kind RunnerKind `json:"kind"`
	Unit string     `json:"unit,omitempty"` // systemd
	Pid  int        `json:"pid,omitempty"`  // monitor
	// Start is the monitor's start time (proc.Process), so that a pid the
	// kernel has given to another process since is not taken for it.
	Start string `json:"start,omitempty"`
}

// Monitor is the monitor process this names (Pid 0 for systemd).
func (r Runner) Monitor() proc.Process { return proc.Process{Pid: r.Pid, Start: r.Start} }

// RunnerKind names a Runner.
type RunnerKind string

const (
	RunnerSystemd RunnerKind = "systemd"
	RunnerMonitor RunnerKind = "monitor"
)

// WriteRunner saves how the fleet's supervisor is kept running.
func WriteRunner(d Dirs, r Runner) error { return writeJSON(d.Runner(), r) }

// ReadRunner loads it; a fleet from before runners has none (zero Runner).
func ReadRunner(d Dirs) (Runner, error) {
	var r Runner
	b, err := os.ReadFile(d.Runner())
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(b, &r)
}

// SystemdUser says whether a systemd user manager runs for this user, so
// `systemd-run --user` can start a transient unit: the machine booted with
// systemd, the user's manager has its private socket in the runtime folder,
// and systemd-run is installed. Containers and CI runners without a user
// session have none of that, and get kiln's monitor instead.
func SystemdUser(getenv func(string) string, exists func(string) bool, lookPath func(string) (string, error)) bool {
	if !exists("/run/systemd/system") {
		return false
	}
	rt := getenv("XDG_RUNTIME_DIR")
	if rt == "" || !exists(filepath.Join(rt, "systemd", "private")) {
		return false
	}
	_, err := lookPath("systemd-run")
	return err == nil
}

// SystemdUnit is the transient unit's name for fleet name.
func SystemdUnit(name string) string { return "kiln-fleet-" + name }

// SystemdRunArgv is the systemd-run command that starts fleet name's
// supervisor (self fleet supervise name) as a transient user unit. The
// unit restarts the supervisor when it dies (not when it stops cleanly or
// with ExitNoRestart), at most 5 times in 10 minutes; KillMode=process
// lets the QEMU processes outlive a supervisor that died, so the next one
// adopts them. The user manager does not inherit this shell's environment,
// so env (KILN_HOME, XDG folders, PATH…) is passed on.
func SystemdRunArgv(name, self, logPath string, env []string) []string {
	argv := []string{"systemd-run", "--user", "--unit", SystemdUnit(name), "--collect",
		"--description", "kiln fleet " + name + " supervisor",
		"-p", "Restart=on-failure", "-p", "RestartSec=1s",
		"-p", fmt.Sprintf("RestartPreventExitStatus=%d", ExitNoRestart),
		"-p", "StartLimitIntervalSec=10min", "-p", "StartLimitBurst=5",
		"-p", "KillMode=process",
		"-p", "StandardOutput=append:" + logPath, "-p", "StandardError=append:" + logPath,
	}
	for _, e := range env {
		argv = append(argv, "--setenv="+e)
	}
	return append(argv, "--", self, "fleet", "supervise", name)
}

// RunnerEnv picks what of environ a supervisor started elsewhere (by
// systemd) needs to find the same folders and tools as this command. A
// restart reason is left out: the unit keeps its environment for every
// restart, where it would be stale.
func RunnerEnv(environ []string) []string {
	var out []string
	for _, e := range environ {
		k, _, _ := strings.Cut(e, "=")
		switch {
		case k == RestartReasonEnv:
		case k == "PATH", k == "HOME", strings.HasPrefix(k, "XDG_"), strings.HasPrefix(k, "KILN_"):
			out = append(out, e)
		}
	}
	return out
}

// RestartPolicy bounds kiln's own restarts of a supervisor.
type RestartPolicy struct {
	Delay    time.Duration // before the first restart; doubled each time, up to MaxDelay
	MaxDelay time.Duration
	Burst    int           // at most this many restarts within Window
	Window   time.Duration //
	Healthy  time.Duration // a supervisor that ran this long resets the delay
}

// DefaultRestartPolicy restarts after 1s, 2s, 4s… up to 30s, at most 5
// times in 10 minutes, as the systemd unit does.
var DefaultRestartPolicy = RestartPolicy{Delay: time.Second, MaxDelay: 30 * time.Second,
	Burst: 5, Window: 10 * time.Minute, Healthy: time.Minute}

// Exit is how one supervisor process ended.
type Exit struct {
	Code   int    // exit status, -1 when killed by a signal
	Signal string // e.g. "killed", when it was one
	Ran    time.Duration
}

func (e Exit) String() string {
	if e.Signal != "" {
		return "was " + e.Signal
	}
	return fmt.Sprintf("exited with status %d", e.Code)
}

// Monitor runs a supervisor with start and starts it again when it dies,
// within policy: a clean exit (0), ExitNoRestart or ctx's end stops it. Each
// restart gets why in reason ("" for the first start). It returns an error
// when the supervisor died more often than the policy allows.
func Monitor(ctx context.Context, p RestartPolicy, start func(reason string) Exit, sleep func(context.Context, time.Duration) error) error {
	reason := ""
	delay := p.Delay
	var restarts []time.Time
	for {
		ex := start(reason)
		if ctx.Err() != nil || ex.Code == 0 || ex.Code == ExitNoRestart {
			return nil
		}
		now := time.Now()
		if ex.Ran >= p.Healthy {
			delay = p.Delay
		}
		restarts = append(restarts, now)
		for len(restarts) > 0 && now.Sub(restarts[0]) > p.Window {
			restarts = restarts[1:]
		}
		if len(restarts) > p.Burst {
			return fmt.Errorf("the supervisor died %d times within %s (last: it %s); not restarting it again", len(restarts), p.Window, ex)
		}
		if err := sleep(ctx, delay); err != nil {
			return nil
		}
		reason = fmt.Sprintf("restarted by kiln's monitor %s after the supervisor %s (restart %d within %s)",
			delay, ex, len(restarts), p.Window)
		delay = min(2*delay, p.MaxDelay)
	}
}

// RecordError saves why the fleet stopped in its state when no supervisor
// is left to do it (kiln's monitor gave up restarting it).
func RecordError(d Dirs, msg string) error {
	st, err := ReadState(d)
	if err != nil {
		return err
	}
	st.Error = msg
	st.UpdatedAt = time.Now().UTC()
	return writeJSON(d.State(), st)
}
