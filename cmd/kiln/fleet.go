package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/instance"
	"github.com/kiln-dev/kiln/internal/proc"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/supervisor"
	"github.com/kiln-dev/kiln/template"
)

func cmdFleet(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{"say what to do: kiln fleet up | ls | status | ssh | exec | logs | down"}
	}
	sub := map[string]func(context.Context, []string) error{
		"up": cmdFleetUp, "ls": cmdFleetList, "list": cmdFleetList, "status": cmdFleetStatus,
		"ssh": cmdFleetSSH, "exec": cmdFleetExec, "logs": cmdFleetLogs, "down": cmdFleetDown,
		"supervise": cmdFleetSupervise, "monitor": cmdFleetMonitor,
	}
	f, ok := sub[args[0]]
	if !ok {
		return usageError{fmt.Sprintf("unknown fleet command %q", args[0])}
	}
	return f(ctx, args[1:])
}

func fleetDirs(name string) supervisor.Dirs {
	return supervisor.FleetDirs(layout.Default().Data, name)
}

// healthFlags are the health-check flags shared by fleet up and rollout.
type healthFlags struct {
	http, exec               string
	tcp, failures, successes int
	interval, timeout, delay time.Duration
}

func (h *healthFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&h.http, "health-http", "", "HTTP check: GET this path on the first guest port")
	fs.IntVar(&h.tcp, "health-tcp", 0, "TCP check: this guest port accepts connections")
	fs.StringVar(&h.exec, "health-exec", "", "exec check: this command exits 0 in the guest (over SSH)")
	fs.DurationVar(&h.interval, "health-interval", 0, "time between probes (default 2s)")
	fs.DurationVar(&h.timeout, "health-timeout", 0, "time a probe may take (default 1s, 10s for --health-exec)")
	fs.IntVar(&h.failures, "health-failures", 0, "consecutive failures that make an instance unhealthy (default 3)")
	fs.IntVar(&h.successes, "health-successes", 0, "consecutive successes that make an instance healthy (default 1)")
	fs.DurationVar(&h.delay, "health-delay", 0, "wait this long after boot before the first probe")
}

// check returns the check the flags describe, or nil when none was given.
func (h *healthFlags) check(ports []supervisor.Port) (*fleet.Check, error) {
	var c fleet.Check
	kinds := 0
	if h.http != "" {
		kinds++
		if len(ports) == 0 {
			return nil, usageError{"--health-http needs a --port: it checks the first guest port"}
		}
		c = fleet.Check{Kind: fleet.CheckHTTP, Path: h.http, Port: ports[0].Guest}
	}
	if h.tcp != 0 {
		kinds++
		c = fleet.Check{Kind: fleet.CheckTCP, Port: h.tcp}
	}
	if h.exec != "" {
		kinds++
		c = fleet.Check{Kind: fleet.CheckExec, Command: h.exec}
	}
	if kinds > 1 {
		return nil, usageError{"give one of --health-http, --health-tcp and --health-exec"}
	}
	if kinds == 0 {
		if h.interval != 0 || h.timeout != 0 || h.failures != 0 || h.successes != 0 || h.delay != 0 {
			return nil, usageError{"health settings need a check: --health-http, --health-tcp or --health-exec"}
		}
		return nil, nil
	}
	c.Interval, c.Timeout, c.FailureThreshold, c.SuccessThreshold, c.InitialDelay = h.interval, h.timeout, h.failures, h.successes, h.delay
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, usageError{err.Error()}
	}
	return &c, nil
}

func parsePorts(specs []string) ([]supervisor.Port, error) {
	fw, err := parseForwards(specs, false)
	if err != nil {
		return nil, err
	}
	var out []supervisor.Port
	for _, f := range fw {
		out = append(out, supervisor.Port{Host: f.HostPort, Guest: f.GuestPort})
	}
	return out, nil
}

func cmdFleetUp(ctx context.Context, args []string) error {
	fs := newFlags("fleet up", "fleet up NAME --image REF [--count N] [--port HOST:GUEST]... [flags]")
	image := fs.String("image", "", "image ref to run, e.g. hello:1.0.0")
	count := fs.Int("count", 1, "number of instances")
	var portSpecs []string
	fs.StringArrayVar(&portSpecs, "port", nil, "serve 127.0.0.1:HOST, balanced over every instance's GUEST port (repeatable)")
	cpus := fs.Int("cpus", 1, "virtual CPUs per instance")
	memory := fs.String("memory", "512M", "memory per instance")
	var hf healthFlags
	hf.add(fs)
	file := fs.StringP("file", "f", "", "read the fleet from an HCL fleet file instead of these flags")
	force := forceFlag(fs, "run a revoked image anyway")
	accel := addAccelFlag(fs)
	front := fs.String("front", "", "front kind: http (a reverse proxy routing each request; the default for the port an --health-http check probes) or tcp")
	var vars, varFiles []string
	fs.StringArrayVar(&vars, "var", nil, "set a fleet file variable: NAME=VALUE (repeatable)")
	fs.StringArrayVar(&varFiles, "var-file", nil, "read fleet file variables from an HCL file (repeatable)")
	cold := fs.Bool("cold", false, "boot every instance (of this fleet and its rollouts) instead of resuming a saved one")
	var hostNames []string
	fs.StringArrayVar(&hostNames, "host", nil, "run the instances on this libvirt host (a name from kiln hosts add; repeatable), spread over them")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usageError{"give one fleet name"}
	}
	name := fs.Arg(0)
	req, err := parseAccel(*accel)
	if err != nil {
		return err
	}
	var spec supervisor.Spec
	if *file != "" {
		tf := templateFlags{vars: vars, varFiles: varFiles}
		opts, err := tf.options()
		if err != nil {
			return err
		}
		ff, err := template.LoadFleet(*file, opts)
		if err != nil {
			return err
		}
		if name != "" && name != ff.Name {
			return usageError{fmt.Sprintf("the fleet file describes fleet %q, not %q", ff.Name, name)}
		}
		name = ff.Name
		spec = specFromFile(ff)
	}
	if name == "" {
		return usageError{"give a fleet name and --image, e.g. kiln fleet up web --image hello:1.0.0 --count 2 --port 8080:8080"}
	}
	if err := needTools(qemuSystem, qemuImg); err != nil {
		return err
	}
	dirs := fleetDirs(name)
	if _, err := os.Stat(dirs.Spec()); err == nil {
		if _, err := supervisor.NewClient(dirs).Status(); err == nil {
			return fmt.Errorf("fleet %s is already up; `kiln fleet down %s` first, or roll it out to a new version", name, name)
		}
		if *image != "" || *file != "" {
			return fmt.Errorf("fleet %s exists but its supervisor is not running: `kiln fleet up %s` (without --image or --file) restarts it, `kiln fleet down %s` removes it", name, name, name)
		}
		// The supervisor died (killed, machine rebooted): start it again on
		// the saved spec and state; it settles any rollout it was running.
		if r, _ := supervisor.ReadRunner(dirs); r.Kind == supervisor.RunnerMonitor && r.Monitor().Alive() {
			return fmt.Errorf("fleet %s: kiln's monitor (pid %d) is restarting its supervisor; wait for it, or `kiln fleet down %s`", name, r.Pid, name)
		}
		say("fleet %s: restarting its supervisor; it adopts the instances still running", name)
		saved, _ := supervisor.ReadState(dirs)
		os.Setenv(supervisor.RestartReasonEnv, fmt.Sprintf("restarted by `kiln fleet up %s`: the previous supervisor (pid %d) was not running", name, saved.Supervisor))
		alive, err := startRunner(dirs, name)
		if err != nil {
			return err
		}
		if err := waitReady(ctx, dirs, alive); err != nil {
			return fmt.Errorf("%w; see %s", err, dirs.Log())
		}
		return nil
	}
	if *file == "" {
		if *image == "" {
			return usageError{"give --image (or --file), e.g. kiln fleet up web --image hello:1.0.0 --count 2 --port 8080:8080"}
		}
		mem, err := parseMemoryFlag(*memory)
		if err != nil {
			return err
		}
		ports, err := parsePorts(portSpecs)
		if err != nil {
			return usageError{err.Error()}
		}
		check, err := hf.check(ports)
		if err != nil {
			return err
		}
		spec = supervisor.Spec{Name: name, Image: *image, Count: *count, Ports: ports,
			CPUs: *cpus, MemoryMiB: mem, Check: check}
	}
	if *front != "" {
		spec.Front = fleet.FrontKind(*front)
	}
	spec.CreatedAt = time.Now().UTC()
	local, err := localRef(ctx, spec.Image)
	if err != nil {
		return err
	}
	spec.Image = local
	spec.Cold = *cold
	if err := setFleetHosts(&spec, hostNames); err != nil {
		return err
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	img, err := store.Use(spec.Image, *force)
	if err != nil {
		return err
	}
	spec.Image = img.Ref().String()
	spec.Accel = req.want
	if err := spec.Validate(); err != nil {
		return usageError{specProblem(err, *file)}
	}
	// Chosen here, so an explicit --accel kvm that cannot run fails at once;
	// the supervisor then finds the probe's verdict cached.
	if _, err := req.choose(ctx); err != nil {
		return err
	}
	ports := spec.Ports
	for _, p := range ports {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p.Host))
		if err != nil {
			return fmt.Errorf("front port 127.0.0.1:%d is already in use; pick another --port", p.Host)
		}
		ln.Close()
	}
	if err := supervisor.WriteSpec(dirs, spec); err != nil {
		return err
	}
	alive, err := startRunner(dirs, spec.Name)
	if err != nil {
		os.RemoveAll(dirs.Root)
		return err
	}
	say("fleet %s: starting %d × %s (supervisor log: %s)", spec.Name, spec.Count, spec.Image, dirs.Log())
	start := time.Now()
	if err := waitReady(ctx, dirs, alive); err != nil {
		// A fleet that never came up leaves nothing behind, so the end of
		// its log goes into the message instead.
		stopRunner(dirs)
		for i := 0; i < 60 && alive(); i++ {
			time.Sleep(500 * time.Millisecond)
		}
		supervisor.KillStale(dirs)
		removeFromHosts(spec)
		tail := logTail(dirs.Log(), 12)
		os.RemoveAll(dirs.Root)
		if tail != "" {
			return fmt.Errorf("%w\nlast lines of the supervisor log:\n  %s", err, tail)
		}
		return err
	}
	say("fleet %s is up in %s", spec.Name, time.Since(start).Round(time.Second))
	for _, p := range ports {
		say("serving http://127.0.0.1:%d (guest port %d)", p.Host, p.Guest)
	}
	return nil
}

// logTail returns the last n lines of a log file, indented for an error
// message, or "" when it cannot be read.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n  ")
}

// specFromFile turns a fleet file into the supervisor's spec.
// specProblem names the flag, or the fleet file, that a spec's problem is
// about: the supervisor speaks of the field, the CLI of what the user wrote.
func specProblem(err error, file string) string {
	var fe *supervisor.FieldError
	if !errors.As(err, &fe) {
		return err.Error()
	}
	if file != "" {
		return fmt.Sprintf("%s: %s", file, fe)
	}
	flag := map[string]string{"name": "fleet name", "count": "--count", "port": "--port", "image": "--image", "front": "--front"}[fe.Field]
	return fmt.Sprintf("%s %s: %s", flag, fe.Value, fe.Problem)
}

func specFromFile(ff *template.FleetFile) supervisor.Spec {
	spec := supervisor.Spec{Name: ff.Name, Image: ff.Image, Count: ff.Count, CPUs: ff.CPUs, MemoryMiB: ff.MemoryMiB,
		Front: fleet.FrontKind(ff.Front)}
	for _, p := range ff.Ports {
		spec.Ports = append(spec.Ports, supervisor.Port{Host: p.Host, Guest: p.Guest})
	}
	if h := ff.Health; h != nil {
		c := fleet.Check{Kind: fleet.CheckKind(h.Kind), Path: h.Path, Port: h.Port, Command: h.Command,
			Interval: h.Interval, Timeout: h.Timeout, InitialDelay: h.Delay,
			FailureThreshold: h.Failures, SuccessThreshold: h.Successes}.WithDefaults()
		spec.Check = &c
	}
	return spec
}

// startRunner starts fleet name's supervisor so that it comes back by
// itself after a crash: as a transient systemd user unit when the user has
// a systemd manager, else under kiln's own monitor (`kiln fleet monitor`),
// in its own session so it outlives this command and the terminal. It
// saves which in the fleet's folder and returns a liveness check.
func startRunner(dirs supervisor.Dirs, name string) (alive func() bool, err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if supervisor.SystemdUser(os.Getenv, fileExists, exec.LookPath) {
		unit := supervisor.SystemdUnit(name)
		// A failed unit of that name from before would block the name.
		exec.Command("systemctl", "--user", "reset-failed", unit).Run()
		argv := supervisor.SystemdRunArgv(name, self, dirs.Log(), supervisor.RunnerEnv(os.Environ()))
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("start the fleet supervisor with systemd-run: %v: %s", err, strings.TrimSpace(string(out)))
		}
		if err := supervisor.WriteRunner(dirs, supervisor.Runner{Kind: supervisor.RunnerSystemd, Unit: unit}); err != nil {
			return nil, err
		}
		return func() bool {
			return exec.Command("systemctl", "--user", "is-active", "--quiet", unit).Run() == nil
		}, nil
	}
	logf, err := os.OpenFile(dirs.Log(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(self, "fleet", "monitor", name)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the fleet supervisor: %w", err)
	}
	pid := cmd.Process.Pid
	// Read before cmd.Wait can reap it: its start time tells it from a
	// later process given the same pid.
	monitor, err := proc.Of(pid)
	if err != nil {
		monitor = proc.Process{Pid: pid}
	}
	// Reap it if it exits while this command still runs, so the liveness
	// check sees it go.
	go cmd.Wait()
	if err := supervisor.WriteRunner(dirs, supervisor.Runner{Kind: supervisor.RunnerMonitor, Pid: pid, Start: monitor.Start}); err != nil {
		syscall.Kill(pid, syscall.SIGTERM)
		return nil, err
	}
	return monitor.Alive, nil
}

// stopRunner stops what restarts the fleet's supervisor, which stops the
// supervisor too (SIGTERM: the same graceful way as `fleet down`).
func stopRunner(dirs supervisor.Dirs) {
	r, _ := supervisor.ReadRunner(dirs)
	switch r.Kind {
	case supervisor.RunnerSystemd:
		exec.Command("systemctl", "--user", "stop", r.Unit).Run()
	case supervisor.RunnerMonitor:
		if r.Monitor().Alive() {
			syscall.Kill(r.Pid, syscall.SIGTERM)
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// waitReady follows the supervisor until the fleet is healthy or it failed.
func waitReady(ctx context.Context, dirs supervisor.Dirs, alive func() bool) error {
	c := supervisor.NewClient(dirs)
	seen := map[string]string{}
	for {
		st, err := c.Status()
		if err != nil {
			// Not answering: starting, or dead; the state file says which.
			if !alive() {
				if saved, _ := supervisor.ReadState(dirs); saved.Error != "" {
					return fmt.Errorf("fleet %s failed to start: %s", filepath.Base(dirs.Root), saved.Error)
				}
				return fmt.Errorf("the fleet supervisor of %s exited without saying why", filepath.Base(dirs.Root))
			}
		} else {
			if st.Error != "" {
				return fmt.Errorf("fleet %s failed to start: %s", filepath.Base(dirs.Root), st.Error)
			}
			for _, in := range st.Instances {
				if seen[in.ID] != in.Health {
					seen[in.ID] = in.Health
					say("%s (%s): %s", in.ID, in.Version, in.Health)
				}
			}
			if st.Ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func cmdFleetSupervise(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usageError{"fleet supervise NAME (started by kiln fleet up)"}
	}
	dirs := fleetDirs(args[0])
	if err := proc.WriteFile(dirs.Pid(), proc.Self()); err != nil {
		return err
	}
	defer os.Remove(dirs.Pid())
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	spec, err := supervisor.ReadSpec(dirs)
	if err != nil {
		return err
	}
	choice, err := accelSelector().Choose(ctx, spec.Accel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kiln fleet supervise: %v\n", err)
		return exitError{supervisor.ExitNoRestart}
	}
	if choice.Note != "" {
		log.Warn(choice.Note)
	}
	if err := supervisor.Run(ctx, layout.Default().Data, args[0], choice, log); err != nil {
		// The fleet cannot run as it is: what restarts supervisors must not.
		fmt.Fprintf(os.Stderr, "kiln fleet supervise: %v\n", err)
		return exitError{supervisor.ExitNoRestart}
	}
	return nil
}

// cmdFleetMonitor keeps a fleet's supervisor running where no systemd user
// manager does: it starts `kiln fleet supervise NAME` and starts it again
// when it dies, with a growing delay and a cap. SIGTERM (fleet down) is
// passed on to the supervisor, which is then not restarted.
func cmdFleetMonitor(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usageError{"fleet monitor NAME (started by kiln fleet up)"}
	}
	name := args[0]
	dirs := fleetDirs(name)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	start := func(reason string) supervisor.Exit {
		cmd := exec.Command(self, "fleet", "supervise", name)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if reason != "" {
			cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool {
				return strings.HasPrefix(e, supervisor.RestartReasonEnv+"=")
			}), supervisor.RestartReasonEnv+"="+reason)
		}
		began := time.Now()
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "kiln fleet monitor: start the supervisor: %v\n", err)
			return supervisor.Exit{Code: supervisor.ExitNoRestart}
		}
		stop := context.AfterFunc(ctx, func() { cmd.Process.Signal(syscall.SIGTERM) })
		defer stop()
		cmd.Wait()
		ex := supervisor.Exit{Code: cmd.ProcessState.ExitCode(), Ran: time.Since(began)}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ex.Signal = "killed by " + unix.SignalName(ws.Signal())
		}
		if ex.Code != 0 && ctx.Err() == nil {
			fmt.Fprintf(os.Stderr, "kiln fleet monitor: the supervisor (pid %d) %s\n", cmd.Process.Pid, ex)
		}
		return ex
	}
	sleep := func(ctx context.Context, d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	if err := supervisor.Monitor(ctx, supervisor.DefaultRestartPolicy, start, sleep); err != nil {
		supervisor.RecordError(dirs, err.Error())
		return err
	}
	return nil
}

// fleetStatus asks the supervisor, falling back to the saved state.
func fleetStatus(name string) (supervisor.State, bool, error) {
	dirs := fleetDirs(name)
	if _, err := supervisor.ReadSpec(dirs); err != nil {
		return supervisor.State{}, false, err
	}
	st, err := supervisor.NewClient(dirs).Status()
	if err == nil {
		return st, true, nil
	}
	saved, rerr := supervisor.ReadState(dirs)
	return saved, false, rerr
}

func cmdFleetList(ctx context.Context, args []string) error {
	fs := newFlags("fleet ls", "fleet ls [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	entries, _ := os.ReadDir(layout.Default().Fleets())
	type row struct {
		Name      string `json:"name"`
		Running   bool   `json:"running"`
		Stable    string `json:"stable"`
		Instances int    `json:"instances"`
		Rollout   string `json:"rollout,omitempty"`
	}
	rows := []row{}
	for _, e := range entries {
		st, running, err := fleetStatus(e.Name())
		if err != nil {
			continue
		}
		r := row{Name: e.Name(), Running: running, Stable: st.Stable, Instances: len(st.Instances)}
		if st.Rollout != nil && !st.Rollout.Phase.Terminal() {
			r.Rollout = fmt.Sprintf("%s → %s", st.Rollout.Phase, st.Rollout.Target)
		}
		rows = append(rows, r)
	}
	if *asJSON {
		return printJSON(rows)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSTATE\tVERSION\tINSTANCES\tROLLOUT")
	for _, r := range rows {
		state := "running"
		if !r.Running {
			state = "stopped"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", r.Name, state, r.Stable, r.Instances, orDash(r.Rollout))
	}
	return w.Flush()
}

func cmdFleetStatus(ctx context.Context, args []string) error {
	fs := newFlags("fleet status", "fleet status NAME [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give a fleet name"}
	}
	st, running, err := fleetStatus(fs.Arg(0))
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(struct {
			supervisor.State
			Running bool `json:"running"`
		}{st, running})
	}
	spec, _ := supervisor.ReadSpec(fleetDirs(fs.Arg(0)))
	state := "running"
	if !running {
		state = "not running"
		if st.Error != "" {
			state += ": " + st.Error
		}
	}
	fmt.Printf("fleet %s (%s), stable version %s, check %s\n", fs.Arg(0), state, st.Stable, supervisor.DefaultCheck(spec))
	for _, p := range spec.Ports {
		fmt.Printf("front 127.0.0.1:%d → guest port %d\n", p.Host, p.Guest)
	}
	if st.Rollout != nil {
		fmt.Printf("rollout %d: %s → %s, %s %s\n", st.Rollout.ID, st.Rollout.PreviousStable, st.Rollout.Target, st.Rollout.Phase, st.Rollout.Reason)
	}
	if lr := st.LastRestart; lr != nil {
		fmt.Printf("supervisor restarted %d times; last %s ago (%s): %s\n", st.Restarts,
			time.Since(lr.At).Round(time.Second), lr.At.Local().Format(time.DateTime), lr.Reason)
		adopted := "none"
		if len(lr.Adopted) > 0 {
			adopted = strings.Join(lr.Adopted, ", ")
		}
		fmt.Printf("  adopted (kept running): %s\n", adopted)
		for _, r := range lr.Replaced {
			fmt.Printf("  replaced %s\n", r)
		}
		if lr.Rollout != "" {
			fmt.Printf("  %s\n", lr.Rollout)
		}
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "INSTANCE\tVERSION\tHEALTH\tSERVING\tPORTS\tUPTIME")
	for _, in := range st.Instances {
		var ports []string
		for g, h := range in.Ports {
			ports = append(ports, fmt.Sprintf("%d→%d", h, g))
		}
		ports = append(ports, fmt.Sprintf("ssh %d", in.SSHPort))
		if in.Host != "" {
			ports = append(ports, "on host "+in.Host)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%s\t%s\n", in.ID, in.Version, in.Health, in.Serving, strings.Join(ports, " "), time.Since(in.Started).Round(time.Second))
	}
	return w.Flush()
}

// findInstance picks one instance of a fleet (the first when id is "").
func findInstance(name, id string) (supervisor.InstanceRecord, error) {
	st, _, err := fleetStatus(name)
	if err != nil {
		return supervisor.InstanceRecord{}, err
	}
	for _, in := range st.Instances {
		if id == "" || in.ID == id {
			return in, nil
		}
	}
	if id == "" {
		return supervisor.InstanceRecord{}, fmt.Errorf("fleet %s has no running instance", name)
	}
	return supervisor.InstanceRecord{}, fmt.Errorf("fleet %s has no instance %q; see `kiln fleet status %s`", name, id, name)
}

func cmdFleetSSH(ctx context.Context, args []string) error {
	fs := newFlags("fleet ssh", "fleet ssh NAME [INSTANCE]")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return usageError{"give a fleet name and optionally an instance"}
	}
	in, err := findInstance(fs.Arg(0), fs.Arg(1))
	if err != nil {
		return err
	}
	sshPath, err := exec.LookPath("ssh")
	if err != nil {
		return errors.New("kiln fleet ssh runs OpenSSH's ssh: apt-get install openssh-client")
	}
	argv := append([]string{"ssh"}, strings.Fields(instance.SSHArgsAt(in.Dir, sshAddr(in), in.SSHPort))...)
	return syscall.Exec(sshPath, argv, os.Environ())
}

func cmdFleetExec(ctx context.Context, args []string) error {
	fs := newFlags("fleet exec", "fleet exec NAME -- CMD...")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dash := fs.ArgsLenAtDash()
	if fs.NArg() < 2 || dash != 1 {
		return usageError{"give a fleet name, then -- and the command, e.g. kiln fleet exec web -- uptime"}
	}
	st, _, err := fleetStatus(fs.Arg(0))
	if err != nil {
		return err
	}
	cmd := shellJoin(fs.Args()[1:])
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := 0
	for _, in := range st.Instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, err := execOn(ctx, in, cmd, &mu)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fmt.Fprintf(os.Stderr, "[%s] %v\n", in.ID, err)
				failed++
			} else if status != 0 {
				fmt.Fprintf(os.Stderr, "[%s] exit status %d\n", in.ID, status)
				failed++
			}
		}()
	}
	wg.Wait()
	if failed > 0 {
		return exitError{1}
	}
	return nil
}

func execOn(ctx context.Context, in supervisor.InstanceRecord, cmd string, mu *sync.Mutex) (int, error) {
	c, err := instance.ConnectAt(ctx, in.Dir, sshAddr(in), in.SSHPort)
	if err != nil {
		return -1, err
	}
	defer c.Close()
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			mu.Lock()
			fmt.Printf("[%s] %s\n", in.ID, sc.Text())
			mu.Unlock()
		}
	}()
	status, err := c.Run(ctx, cmd, nil, pw, pw)
	pw.Close()
	<-done
	return status, err
}

func cmdFleetLogs(ctx context.Context, args []string) error {
	fs := newFlags("fleet logs", "fleet logs NAME [INSTANCE]")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return usageError{"give a fleet name and optionally an instance"}
	}
	dirs := fleetDirs(fs.Arg(0))
	if _, err := supervisor.ReadSpec(dirs); err != nil {
		return err
	}
	path := dirs.Log()
	if fs.NArg() == 2 {
		in, err := findInstance(fs.Arg(0), fs.Arg(1))
		if err != nil {
			return err
		}
		path = layout.VM(in.Dir).Serial()
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(os.Stdout, f)
	return err
}

func cmdFleetDown(ctx context.Context, args []string) error {
	fs := newFlags("fleet down", "fleet down NAME")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give a fleet name"}
	}
	dirs := fleetDirs(fs.Arg(0))
	spec, err := supervisor.ReadSpec(dirs)
	if err != nil {
		return err
	}
	st, _ := supervisor.ReadState(dirs)
	// Only the very process that wrote the state is signalled, never a
	// later one given its pid (after a reboot, say).
	sup := st.SupervisorProcess()
	if sup.Alive() {
		say("fleet %s: stopping %d instances", fs.Arg(0), len(st.Instances))
		// Ask over the socket; a supervisor that does not answer gets
		// SIGTERM, which stops it the same graceful way.
		if err := supervisor.NewClient(dirs).Down(); err != nil {
			syscall.Kill(st.Supervisor, syscall.SIGTERM)
		}
		deadline := time.Now().Add(3 * time.Minute)
		for sup.Alive() && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if sup.Alive() {
			say("fleet %s: the supervisor did not stop in 3m; killing it", fs.Arg(0))
			stopRunner(dirs) // or it would be restarted
			syscall.Kill(st.Supervisor, syscall.SIGKILL)
		}
	}
	// What restarts the supervisor goes too (it may be waiting to restart
	// one that died).
	stopRunner(dirs)
	if r, _ := supervisor.ReadRunner(dirs); r.Kind == supervisor.RunnerMonitor {
		for i := 0; i < 100 && r.Monitor().Alive(); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	supervisor.KillStale(dirs)
	if err := removeFromHosts(spec); err != nil {
		// The fleet's folder stays, so `kiln fleet down` can try again.
		return err
	}
	if err := os.RemoveAll(dirs.Root); err != nil {
		return err
	}
	say("fleet %s is down", fs.Arg(0))
	return nil
}
