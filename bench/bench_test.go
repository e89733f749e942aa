package bench

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/proc"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/qemu"
	"github.com/kiln-dev/kiln/supervisor"
)

const helloTemplate = "examples/hello/hello.kiln.hcl" // relative to the repository

// settings are the run counts, from the environment.
type settings struct {
	runs        int      // BENCH_RUNS: cheap figures
	buildRuns   int      // BENCH_BUILD_RUNS: builds
	fleetRuns   int      // BENCH_FLEET_RUNS: fleets and rollouts
	sizes       []int    // BENCH_FLEET_SIZES
	rolloutSize int      // BENCH_ROLLOUT_SIZE: the fleet size a rollout runs on
	parts       partList // BENCH_PARTS; empty: all
	out         string
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a whole number from 1", name, v)
	}
	return n
}

func readSettings(t *testing.T, accel, repo string) settings {
	buildDef := 3
	if accel != "kvm" && accel != "hvf" {
		buildDef = 2
	}
	s := settings{runs: envInt(t, "BENCH_RUNS", 3)}
	s.buildRuns = envInt(t, "BENCH_BUILD_RUNS", buildDef)
	s.fleetRuns = envInt(t, "BENCH_FLEET_RUNS", s.buildRuns)
	sizes := os.Getenv("BENCH_FLEET_SIZES")
	if sizes == "" {
		sizes = "1,2,4"
	}
	for _, f := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 16 {
			t.Fatalf("BENCH_FLEET_SIZES=%q: want sizes from 1 to 16, e.g. 1,2,4", sizes)
		}
		s.sizes = append(s.sizes, n)
	}
	s.rolloutSize = envInt(t, "BENCH_ROLLOUT_SIZE", 2)
	if !slices.Contains(s.sizes, s.rolloutSize) {
		s.rolloutSize = slices.Max(s.sizes)
	}
	if v := os.Getenv("BENCH_PARTS"); v != "" {
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			if !slices.Contains(benchParts, f) {
				t.Fatalf("BENCH_PARTS=%q: %q is not a part; the parts are %s", v, f, strings.Join(benchParts, ","))
			}
			s.parts = append(s.parts, f)
		}
	}
	s.out = os.Getenv("BENCH_OUT")
	if s.out == "" {
		s.out = filepath.Join(repo, "docs", "benchmarks.md")
		if len(s.parts) > 0 {
			// Some parts only: the complete table stays as it is.
			s.out = filepath.Join(repo, "docs", "benchmarks-"+strings.Join(s.parts, "-")+".md")
		}
	}
	return s
}

// benchParts are the parts of the bench BENCH_PARTS may pick; the cold
// builds always run (the other parts use their images and figures).
var benchParts = []string{"micro", "probe", "compaction", "warm", "cache", "dialects", "layered", "sharing", "fleets", "libvirt"}

// partList is BENCH_PARTS: empty means every part.
type partList []string

func (p partList) has(name string) bool { return len(p) == 0 || slices.Contains(p, name) }

func (s settings) String() string {
	parts := ""
	if len(s.parts) > 0 {
		parts = " BENCH_PARTS=" + strings.Join(s.parts, ",")
	}
	return fmt.Sprintf("BENCH_RUNS=%d BENCH_BUILD_RUNS=%d BENCH_FLEET_RUNS=%d BENCH_FLEET_SIZES=%s BENCH_ROLLOUT_SIZE=%d%s",
		s.runs, s.buildRuns, s.fleetRuns, joinInts(s.sizes), s.rolloutSize, parts)
}

func joinInts(ns []int) string {
	var parts []string
	for _, n := range ns {
		parts = append(parts, strconv.Itoa(n))
	}
	return strings.Join(parts, ",")
}

// bencher carries one bench run.
type bencher struct {
	t       *testing.T
	kiln    string // binary under test
	repo    string
	home    string // temporary XDG data and runtime folders
	data    string // $XDG_DATA_HOME/kiln
	runtime string // $XDG_RUNTIME_DIR/kiln
	s       settings
	r       Report
	failed  []string

	coldBuilds  []float64 // hello build walls, booted cold, for the warm comparison
	coldOutside []float64 // the same less their provisioning (buildRun.outsideProvisioning)
}

// TestBench runs every measurement in order and writes the table. It
// asserts no timing: a step that fails is an error, and its figures are
// missing from the table.
func TestBench(t *testing.T) {
	if os.Getenv("KILN_BENCH") != "1" {
		t.Skip("set KILN_BENCH=1 or run `make bench`: it boots real VMs for about half an hour")
	}
	started := time.Now()
	b := setup(t)
	m := b.machine()
	b.s = readSettings(t, m.Accel, b.repo)
	m.Settings = b.s.String()
	t.Logf("machine: %+v", m)

	stopWatch := b.watchOthers()
	on := b.s.parts.has
	if on("micro") {
		b.micro()
	}
	if on("probe") {
		b.accelProbe()
	}
	base := b.baseImage()
	// builds also make hello 1.0.0 and 1.1.0 for the fleets, and the cold
	// figures the warm ones are compared with: never left out.
	work := b.builds()
	if work != "" && on("compaction") {
		b.compaction(work, base)
	}
	if on("warm") {
		b.warmBuilds()
	}
	if on("cache") {
		b.cachedRebuild()
	}
	if on("dialects") {
		b.dialects(base)
	}
	// layered builds hello:1.1.0, which sharing, fleets and warm use.
	if on("layered") || on("sharing") || on("fleets") || on("warm") {
		b.layered()
	}
	if on("sharing") {
		b.sharing()
	}
	if on("fleets") {
		b.fleets()
	}
	if on("warm") {
		b.warmFleets()
	}
	if on("libvirt") {
		b.libvirt()
	}

	m.Duration = time.Since(started)
	m.OtherVMs = stopWatch()
	m.LoadAvgEnd = loadAvg()
	var table bytes.Buffer
	b.r.Table(&table)
	fmt.Printf("\n%s\n", table.String())
	var doc bytes.Buffer
	b.r.Document(&doc, m, method(b.s))
	out := b.s.out
	if len(b.failed) > 0 {
		// A partial table must not replace a complete one.
		out = filepath.Join(os.TempDir(), "kiln-benchmarks-partial.md")
		t.Errorf("failed: %s; the partial results are in %s", strings.Join(b.failed, "; "), out)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, doc.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s in %s", out, m.Duration.Round(time.Second))
}

func setup(t *testing.T) *bencher {
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	kiln := os.Getenv("KILN_BIN")
	if kiln == "" {
		kiln = filepath.Join(repo, "bin", "kiln")
	}
	if kiln, err = filepath.Abs(kiln); err == nil {
		_, err = os.Stat(kiln)
	}
	if err != nil {
		t.Fatalf("build kiln first (make build): %v", err)
	}
	home, err := os.MkdirTemp("", "kiln-bench-")
	if err != nil {
		t.Fatal(err)
	}
	// A fresh store and run folders; the cache (base images, downloads) is
	// shared with the user's so the base is not made again.
	os.Unsetenv("KILN_HOME")
	userBase := layout.Default().BaseImages()
	os.Setenv("XDG_DATA_HOME", filepath.Join(home, "data"))
	os.Setenv("XDG_RUNTIME_DIR", filepath.Join(home, "run"))
	os.Unsetenv("KILN_LOG")
	// Saved guests (warm starts) are this run's own, so the first warm
	// build really saves: a cache of its own sharing the user's base images.
	os.Setenv("XDG_CACHE_HOME", filepath.Join(home, "cache"))
	if err := os.MkdirAll(userBase, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(home, "cache", "kiln"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(userBase, filepath.Join(home, "cache", "kiln", "base")); err != nil {
		t.Fatal(err)
	}
	b := &bencher{t: t, kiln: kiln, repo: repo, home: home,
		data: filepath.Join(home, "data", "kiln"), runtime: filepath.Join(home, "run", "kiln")}
	t.Cleanup(b.cleanup)
	return b
}

// cleanup stops whatever a failed step left: fleets first (gracefully),
// then any QEMU process of this run, then the folders.
func (b *bencher) cleanup() {
	fleets, _ := os.ReadDir(filepath.Join(b.data, "fleets"))
	for _, f := range fleets {
		b.kilnRun(5*time.Minute, nil, "fleet", "down", f.Name())
		if pid := readPid(filepath.Join(b.data, "fleets", f.Name(), "supervisor.pid")); proc.Running(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, pid := range qemuPids(b.home) {
		b.t.Logf("killing QEMU %d left by the bench", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(time.Second)
	os.RemoveAll(b.home)
}

func readPid(path string) int {
	p, _ := proc.ReadFile(path)
	return p.Pid
}

// qemuPids are the QEMU processes whose command line names a path under
// dir: this run's, never anyone else's.
func qemuPids(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cmd, []byte("qemu-system")) && bytes.Contains(cmd, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// fail records a step that went wrong; the run goes on where it can.
func (b *bencher) fail(step string, err error) {
	b.t.Errorf("%s: %v", step, err)
	b.failed = append(b.failed, step)
}

func (b *bencher) add(name string, k Kind, samples []float64, note string) {
	f := b.r.Add(name, k, samples, note)
	m, lo, hi, n := f.Cells()
	b.t.Logf("figure %s / %s: %s (%s–%s, %s runs) %s", f.Section, name, m, lo, hi, n, note)
}

// ---- running kiln ----

type kilnResult struct {
	stdout     string
	stderr     *LineStamper
	code       int
	start, end time.Time
}

func (r kilnResult) wall() time.Duration { return r.end.Sub(r.start) }

// kilnRun runs kiln with a time limit; onLine sees each stderr line as it
// arrives. A non-zero exit is an error that quotes the end of stderr.
func (b *bencher) kilnRun(timeout time.Duration, onLine func(Line), args ...string) (kilnResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.kiln, args...)
	cmd.Dir = b.repo
	var stdout bytes.Buffer
	res := kilnResult{stderr: &LineStamper{OnLine: onLine}}
	cmd.Stdout, cmd.Stderr = &stdout, res.stderr
	cmd.WaitDelay = 10 * time.Second
	res.start = time.Now()
	err := cmd.Run()
	res.end = time.Now()
	res.stdout = stdout.String()
	what := "kiln " + strings.Join(args, " ")
	b.t.Logf("%s: %v in %s", what, errOr(err, "ok"), res.wall().Round(100*time.Millisecond))
	if ctx.Err() != nil {
		return res, fmt.Errorf("%s: still running after %s\n%s", what, timeout, tail(res.stderr.Text(), 20))
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		res.code = ee.ExitCode()
		return res, fmt.Errorf("%s: exit %d\n%s", what, res.code, tail(res.stderr.Text(), 20))
	}
	if err != nil {
		return res, fmt.Errorf("%s: %w", what, err)
	}
	return res, nil
}

func errOr(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

func (b *bencher) manifest(ref string) (images.Manifest, error) {
	var m images.Manifest
	r, err := b.kilnRun(time.Minute, nil, "images", "show", ref, "--json")
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal([]byte(r.stdout), &m)
}

func (b *bencher) blob(m images.Manifest) string {
	return filepath.Join(b.data, "images", "blobs", "sha256", strings.TrimPrefix(m.Digest, "sha256:"))
}

// ---- the machine ----

func (b *bencher) machine() Machine {
	m := Machine{Date: time.Now(), Cores: runtime.NumCPU(), Go: runtime.Version()}
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemoryBytes, _ = ProcKB(string(raw), "MemTotal")
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(raw))
	}
	m.LoadAvg = loadAvg()
	firstLine := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput()
		line, _, _ := strings.Cut(string(out), "\n")
		return strings.TrimSpace(line)
	}
	m.QEMU = firstLine("qemu-system-x86_64", "--version")
	m.QEMUImg = firstLine("qemu-img", "--version")
	doctor, _ := exec.Command(b.kiln, "doctor").Output()
	m.Accel = Accelerator(string(doctor))
	git := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	git.Dir = b.repo
	desc, _ := git.Output()
	m.Kiln = fmt.Sprintf("%s (`kiln version`: %s)", strings.TrimSpace(string(desc)), firstLine(b.kiln, "version"))
	return m
}

func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// watchOthers counts, every 5 s, the QEMU processes that are not this
// run's: other work on the machine skews every figure, so the document
// says how much there was. The returned func stops it and describes it.
func (b *bencher) watchOthers() func() string {
	stop := make(chan struct{})
	done := make(chan string, 1)
	go func() {
		samples, busy, most := 0, 0, 0
		for {
			n := len(qemuPids("")) - len(qemuPids(b.home))
			samples++
			if n > 0 {
				busy++
			}
			most = max(most, n)
			select {
			case <-stop:
				if busy == 0 {
					done <- "none seen (QEMU processes sampled every 5 s)"
				} else {
					done <- fmt.Sprintf("up to %d other QEMU processes at once, in %d%% of samples taken every 5 s", most, 100*busy/samples)
				}
				return
			case <-time.After(5 * time.Second):
			}
		}
	}()
	return func() string {
		close(stop)
		return <-done
	}
}

// ---- micro-benchmarks ----

// micro runs the Go benchmarks of the hot pure-Go paths in a `go test`
// subprocess, before any VM runs, BENCH_RUNS times each.
func (b *bencher) micro() {
	b.r.Section("Go micro-benchmarks (go test -bench, in-process work only)")
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "test", "-run", "^$", "-bench", "^(BenchmarkWriteISO|BenchmarkLoadHello|BenchmarkBalancerHandoff|BenchmarkHTTPFrontRequest)$",
		"-benchmem", "-count", strconv.Itoa(b.s.runs), "./cloudinit", "./template", "./fleet")
	cmd.Dir = b.repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.fail("micro-benchmarks", fmt.Errorf("go test -bench: %v\n%s", err, out))
		return
	}
	results := ParseGoBench(string(out))
	for _, bm := range []struct{ name, figure string }{
		{"BenchmarkWriteISO", "seed ISO generation (cloudinit.WriteISO: user-data merge, YAML, ISO 9660)"},
		{"BenchmarkLoadHello", "template decoding (template.Load of examples/hello, digest included)"},
		{"BenchmarkBalancerHandoff", "load balancer hand-off (fleet.Balancer: accept, dial backend, proxy 31 B both ways, close)"},
		{"BenchmarkHTTPFrontRequest", "HTTP front, one request on a kept-alive connection (fleet.HTTPFront: parse, pick, pooled backend connection, copy back)"},
	} {
		var ns []float64
		var bytesOp, allocs float64
		for _, r := range results {
			if r.Name == bm.name {
				ns = append(ns, r.NsPerOp)
				bytesOp, allocs = r.BytesPerOp, r.AllocsPerOp
			}
		}
		if len(ns) == 0 {
			b.fail("micro-benchmarks", fmt.Errorf("no result for %s in:\n%s", bm.name, out))
			continue
		}
		b.add(bm.figure, PerOp, ns, fmt.Sprintf("%.0f B/op, %.0f allocs/op", bytesOp, allocs))
	}
}

// ---- accelerator probe ----

// accelProbe times the KVM probe as the first command of a host boot pays
// it (every CPU model run at once on the probe guest) and as later commands
// pay it (the verdict read from the cache), plus the probe guest itself
// under TCG, which bounds what a working KVM costs.
func (b *bencher) accelProbe() {
	b.r.Section("Accelerator probe (KVM verdict per host boot, cached)")
	ctx := context.Background()
	sel := qemu.Selector{CacheFile: filepath.Join(b.home, "accel-probe.json")}
	var cold, cached, guest []time.Duration
	var outcome string
	for i := 0; i < b.s.runs; i++ {
		fresh := sel
		fresh.Fresh = true
		start := time.Now()
		rep, err := fresh.ProbeKVM(ctx)
		if err != nil {
			b.fail("accelerator probe", err)
			return
		}
		cold = append(cold, time.Since(start))
		outcome = rep.Finding()
		start = time.Now()
		if _, err := sel.Choose(ctx, qemu.Auto); err != nil {
			b.fail("accelerator probe", err)
			return
		}
		cached = append(cached, time.Since(start))
		a := qemu.Probe(ctx, qemu.Config{Accel: qemu.TCG}, time.Minute)
		if a.Outcome != qemu.ProbeWorks {
			b.fail("accelerator probe", fmt.Errorf("probe guest under TCG: %s", a))
			return
		}
		guest = append(guest, a.Took)
	}
	b.add("KVM probe, cold (first command after a host boot)", Duration, Seconds(cold...), outcome)
	b.add("accelerator choice, verdict cached", Duration, Seconds(cached...), "")
	b.add("probe guest under TCG (firmware, interrupt, protected mode, exit)", Duration, Seconds(guest...), "")
}

// ---- base image ----

// baseImage makes (or takes from the shared cache) the Debian base, which
// also stores it as debian:12 in this run's store. It returns the blob.
func (b *bencher) baseImage() string {
	out := filepath.Join(b.home, "base.qcow2")
	if _, err := b.kilnRun(30*time.Minute, nil, "base", "debian", "-o", out); err != nil {
		b.t.Fatalf("the base image: %v", err)
	}
	m, err := b.manifest("debian:12")
	if err != nil {
		b.t.Fatalf("the base image: %v", err)
	}
	return b.blob(m)
}

// ---- builds ----

// buildRun is what one `kiln build` showed.
type buildRun struct {
	res      kilnResult
	m        images.Manifest
	sshStart time.Time // the "ssh on" line: QEMU has started
	banner   time.Time // sshd's first banner reached the probe
	dialed   time.Time // when the probe that got it connected
	qemuExit time.Time // the build VM's QEMU process was gone
}

// phase is how long the build's step name took, from its manifest.
func (br buildRun) phase(name string) (float64, bool) {
	for _, p := range br.m.Phases {
		if p.Name == name {
			return p.Seconds, true
		}
	}
	return 0, false
}

// outsideProvisioning is the build's wall clock less its provisioning,
// whose time on the network (apt) varies by more than a save costs.
func (br buildRun) outsideProvisioning() float64 {
	p, _ := br.phase("provision")
	return br.res.wall().Seconds() - p
}

// build runs kiln build of examples/hello with a readiness probe and a
// QEMU watcher.
func (b *bencher) build(args ...string) (buildRun, error) {
	return b.buildTemplate(helloTemplate, args...)
}

// buildTemplate is build for another template.
func (b *bencher) buildTemplate(tmpl string, args ...string) (buildRun, error) {
	var br buildRun
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	started := false
	// The probe stops when the boot step ends, answered or not, so it never
	// competes with provisioning for sshd.
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	onLine := func(l Line) {
		if st, ok := ParseStep(l.Text); ok && st.Name == "boot" {
			stopProbe()
		}
		port, ok := SSHPort(l.Text)
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if started {
			return
		}
		started = true
		br.sshStart = l.At
		wg.Go(func() {
			banner, dialed, ok := probeSSH(probeCtx, fmt.Sprintf("127.0.0.1:%d", port))
			if ok {
				mu.Lock()
				br.banner, br.dialed = banner, dialed
				mu.Unlock()
			}
		})
		wg.Go(func() {
			if at, ok := watchQEMU(ctx, filepath.Join(b.runtime, "build-*", "vm", "qemu.pid")); ok {
				mu.Lock()
				br.qemuExit = at
				mu.Unlock()
			}
		})
	}
	res, err := b.kilnRun(30*time.Minute, onLine, append([]string{"build", tmpl, "--json"}, args...)...)
	cancel()
	wg.Wait()
	br.res = res
	if err != nil {
		return br, err
	}
	if err := json.Unmarshal([]byte(res.stdout), &br.m); err != nil {
		return br, fmt.Errorf("kiln build --json: %w\n%s", err, res.stdout)
	}
	return br, nil
}

// probeSSH connects to addr every 20 ms, one connection at a time, until
// one reads sshd's "SSH-2.0-" banner, and returns when the banner arrived
// and when that connection was made. Under QEMU's user networking the
// host-side connect succeeds at once; a guest that does not listen yet
// resets it (EOF), and a guest without network yet leaves it hanging, so
// each attempt waits at most 3 s for the banner (kiln's own handshake
// timeout). Only one connection at a time reaches sshd, so the probe never
// trips its MaxStartups limit.
func probeSSH(ctx context.Context, addr string) (banner, dialed time.Time, ok bool) {
	buf := make([]byte, 8)
	for ctx.Err() == nil {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			at := time.Now()
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, _ := io.ReadFull(c, buf)
			got := time.Now()
			c.Close()
			if n == len(buf) && string(buf) == "SSH-2.0-" {
				return got, at, true
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return time.Time{}, time.Time{}, false
}

// watchQEMU waits for QEMU's pid file to match pattern, then for that
// process to exit, polling every 20 ms; it returns the exit time.
func watchQEMU(ctx context.Context, pattern string) (time.Time, bool) {
	pid := 0
	for ctx.Err() == nil {
		if pid == 0 {
			if files, _ := filepath.Glob(pattern); len(files) == 1 {
				pid = readPid(files[0])
			}
		} else if !proc.Running(pid) {
			return time.Now(), true
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return time.Time{}, false
}

// builds bakes hello:1.0.0 from the base BENCH_BUILD_RUNS times and returns
// the generalised working disk of the first build, for the compaction
// comparison.
func (b *bencher) builds() (workDisk string) {
	var runs []buildRun
	for i := range b.s.buildRuns {
		args := []string{"--cold"} // warm starts are measured on their own (warmBuilds)
		if i == 0 {
			workDisk = filepath.Join(b.home, "work.qcow2")
			args = append(args, "--keep-work-disk", workDisk)
		} else {
			args = append(args, "--no-cache", "--force")
		}
		br, err := b.build(args...)
		if err != nil {
			if i == 0 {
				b.t.Fatalf("build hello:1.0.0: %v", err)
			}
			b.fail("build hello:1.0.0", err)
			continue
		}
		runs = append(runs, br)
	}
	b.r.Section("Build of examples/hello (hello:1.0.0 from debian:12)")
	samples := func(f func(br buildRun) (float64, bool)) []float64 {
		var out []float64
		for _, br := range runs {
			if v, ok := f(br); ok {
				out = append(out, v)
			}
		}
		return out
	}
	phase := func(name string) func(buildRun) (float64, bool) {
		return func(br buildRun) (float64, bool) { return br.phase(name) }
	}
	stamps := func(br buildRun) map[string]time.Time { return StepTimes(br.res.stderr.Lines()) }
	b.coldBuilds = samples(func(br buildRun) (float64, bool) { return br.res.wall().Seconds(), true })
	b.coldOutside = samples(func(br buildRun) (float64, bool) { return br.outsideProvisioning(), true })
	b.add("total (kiln build, wall clock)", Duration, b.coldBuilds, "what the user waits for; --cold (warm starts are measured below)")
	for _, p := range []struct{ step, name, note string }{
		{"source", "source (resolve the base)", ""},
		{"boot", "boot to SSH", "overlay, seed, QEMU start, until kiln's SSH login works"},
		{"cloud-init", "cloud-init wait", "until cloud-init's result.json appears"},
		{"provision", "provisioning", "upload app/, apt-get install jq, setup.sh"},
		{"generalize", "generalise", "cloud-init state, keys and logs removed, fstrim"},
		{"shutdown", "shutdown (ACPI power button → QEMU exit)", ""},
		{"compact", "compaction (qemu-img convert, zstd, thin overlay)", ""},
	} {
		b.add(p.name, Duration, samples(phase(p.step)), p.note)
	}
	b.add("store (blob digest, manifest, rename)", Duration, samples(func(br buildRun) (float64, bool) {
		st := stamps(br)
		if st["compact"].IsZero() || st["store"].IsZero() {
			return 0, false
		}
		return st["store"].Sub(st["compact"]).Seconds(), true
	}), "between the compact and store progress lines")
	b.add("kiln's own time outside the steps", Duration, samples(func(br buildRun) (float64, bool) {
		sum := 0.0
		for _, p := range br.m.Phases {
			sum += p.Seconds
		}
		st := stamps(br)
		if st["compact"].IsZero() || st["store"].IsZero() {
			return 0, false
		}
		sum += st["store"].Sub(st["compact"]).Seconds()
		return br.res.wall().Seconds() - sum, true
	}), "wall clock minus every step: process start, template load, cleanup")

	b.r.Section("Readiness (builds above; probe every 20 ms)")
	b.add("guest: QEMU started → sshd answers", Duration, samples(func(br buildRun) (float64, bool) {
		return br.banner.Sub(br.sshStart).Seconds(), !br.banner.IsZero()
	}), "the guest's own work: firmware, kernel, systemd, cloud-init-local, sshd")
	b.add("kiln's readiness overhead: sshd answers → boot step done", Duration, samples(func(br buildRun) (float64, bool) {
		done := stamps(br)["boot"]
		return done.Sub(br.banner).Seconds(), !br.banner.IsZero() && !done.IsZero()
	}), "kiln polls every 250 ms and needs a full SSH handshake and login")
	b.add("probe: connect → banner, on the first connection sshd answered", Duration, samples(func(br buildRun) (float64, bool) {
		return br.banner.Sub(br.dialed).Seconds(), !br.banner.IsZero()
	}), "sshd's first fork, re-exec and host keys while the guest still boots; kiln's own connection pays the same")

	b.r.Section("Shutdown (builds above)")
	b.add("end of provisioning → QEMU exit", Duration, samples(func(br buildRun) (float64, bool) {
		prov := stamps(br)["provision"]
		return br.qemuExit.Sub(prov).Seconds(), !prov.IsZero() && !br.qemuExit.IsZero()
	}), "generalise, then ACPI power-off; QEMU's pid watched every 20 ms")

	b.r.Section("Image size (builds above)")
	b.add("hello:1.0.0 blob (zstd, thin overlay on debian:12)", Bytes, samples(func(br buildRun) (float64, bool) {
		return float64(br.m.FileSize), br.m.FileSize > 0
	}), "")
	b.add("guest's used blocks (df / after generalising)", Bytes, samples(func(br buildRun) (float64, bool) {
		return float64(br.m.GuestUsedBytes), br.m.GuestUsedBytes > 0
	}), "the whole root filesystem, base included")
	if len(runs) > 0 {
		b.add("virtual size", Bytes, []float64{float64(runs[0].m.VirtualSize)}, "disk_size = 3G")
	}
	return workDisk
}

// cachedRebuild builds identical inputs again: the build cache answers.
func (b *bencher) cachedRebuild() {
	b.r.Section("Rebuild")
	var s []float64
	for range b.s.runs {
		res, err := b.kilnRun(5*time.Minute, nil, "build", helloTemplate)
		if err == nil && !strings.Contains(res.stderr.Text(), "reusing it") {
			err = fmt.Errorf("a build with identical inputs did not reuse the stored image:\n%s", res.stderr.Text())
		}
		if err != nil {
			b.fail("cached rebuild", err)
			return
		}
		s = append(s, res.wall().Seconds())
	}
	b.add("identical inputs (build cache hit)", Duration, s, "template digest and base checked, nothing booted")
}

// layered bakes hello:1.1.0 on hello:1.0.0, which the rollout also needs.
func (b *bencher) layered() {
	var wall, size, prov []float64
	for i := range b.s.buildRuns {
		args := []string{"--var", "version=1.1.0", "--var", "base=hello:1.0.0", "--cold"}
		if i > 0 {
			args = append(args, "--no-cache", "--force")
		}
		br, err := b.build(args...)
		if err != nil {
			b.fail("layered build hello:1.1.0", err)
			continue
		}
		wall = append(wall, br.res.wall().Seconds())
		size = append(size, float64(br.m.FileSize))
		for _, p := range br.m.Phases {
			if p.Name == "provision" {
				prov = append(prov, p.Seconds)
			}
		}
	}
	b.r.Section("Rebuild")
	b.add("layered: hello:1.1.0 on hello:1.0.0, total", Duration, wall, "boots hello:1.0.0 and provisions again")
	b.add("layered: provisioning", Duration, prov, "jq is already installed")
	b.add("layered: hello:1.1.0 blob (thin overlay on hello:1.0.0)", Bytes, size, "")
}

// ---- compaction ----

// compaction converts the kept working disk the way kiln does and the
// plain way, with each compression, BENCH_RUNS times.
func (b *bencher) compaction(work, base string) {
	b.r.Section("Compaction (the first build's generalised working disk)")
	ctx := context.Background()
	mapJSON, err := exec.Command("qemu-img", "map", "--output=json", work).Output()
	if err != nil {
		b.fail("compaction", fmt.Errorf("qemu-img map %s: %v", work, err))
		return
	}
	top, chain, err := DataBytes(mapJSON)
	if err != nil {
		b.fail("compaction", err)
		return
	}
	b.add("working disk: data in the top layer (what the build wrote)", Bytes, []float64{float64(top)}, "qemu-img map")
	b.add("working disk: data in the whole chain (base included)", Bytes, []float64{float64(chain)}, "qemu-img map")
	if fi, err := os.Stat(base); err == nil {
		b.add("debian:12 base blob (zstd)", Bytes, []float64{float64(fi.Size())}, "shared by every image built on it")
	}
	// Read both once so every timed run finds them in the page cache.
	for _, f := range []string{work, base} {
		if fh, err := os.Open(f); err == nil {
			io.Copy(io.Discard, fh)
			fh.Close()
		}
	}
	out := filepath.Join(b.home, "compact.qcow2")
	type method struct {
		name, compression string
		thin, plain       bool
	}
	for _, m := range []method{
		{"kiln's way, zstd (thin overlay on the base)", "zstd", true, false},
		{"kiln's way, zlib", "zlib", true, false},
		{"kiln's way, no compression", "none", true, false},
		{"plain `qemu-img convert -O qcow2 -c` (flattened, zlib)", "zlib", false, true},
		{"flattened, zstd", "zstd", false, false},
		{"flattened, no compression", "none", false, false},
	} {
		var times []float64
		var size int64
		for range b.s.runs {
			os.Remove(out)
			start := time.Now()
			var err error
			if m.plain {
				var o []byte
				o, err = exec.CommandContext(ctx, "qemu-img", "convert", "-O", "qcow2", "-c", work, out).CombinedOutput()
				if err != nil {
					err = fmt.Errorf("%v: %s", err, o)
				}
			} else {
				o := disk.ConvertOptions{Format: "qcow2", Compression: m.compression}
				if m.thin {
					o.BackingFile, o.BackingFormat = base, "qcow2"
				}
				err = disk.Convert(ctx, work, out, o)
			}
			took := time.Since(start)
			if err != nil {
				b.fail("compaction "+m.name, err)
				break
			}
			times = append(times, took.Seconds())
			if fi, err := os.Stat(out); err == nil {
				size = fi.Size()
			}
		}
		if len(times) == 0 {
			continue
		}
		data := chain
		if m.thin {
			data = top
		}
		rate := float64(data) / 1e6 / Median(times)
		b.add(m.name, Duration, times, fmt.Sprintf("→ %s; %.0f MB/s of data read", FormatBytes(float64(size)), rate))
	}
	os.Remove(out)
	os.Remove(work)
}

// ---- fleets ----

// fleets brings up fleets of each size BENCH_FLEET_RUNS times and rolls
// one size out to hello:1.1.0.
func (b *bencher) fleets() {
	hello, err := b.manifest("hello:1.0.0")
	if err != nil {
		b.fail("fleets", err)
		return
	}
	_, err11 := b.manifest("hello:1.1.0")

	b.r.Section("Fleet (hello:1.0.0, --memory 512M, --health-http /healthz, --cold)")
	// Disk per instance before boot: an overlay made exactly as the
	// instance package makes it.
	var overlay []float64
	for i := range b.s.runs {
		p := filepath.Join(b.home, fmt.Sprintf("overlay-%d.qcow2", i))
		if err := disk.CreateOverlay(context.Background(), b.blob(hello), "qcow2", p, 0); err != nil {
			b.fail("overlay", err)
			break
		}
		overlay = append(overlay, float64(allocated(p)))
		os.Remove(p)
	}
	b.add("disk per instance before boot (qcow2 overlay on the image blob)", Bytes, overlay, "disk.CreateOverlay, allocated blocks")

	type perSize struct{ up, down, ready, supRSS []float64 }
	stats := map[int]*perSize{}
	var firstSight, healthyDisk, qemuRSS []float64
	var ro rolloutStats
	for run := range b.s.fleetRuns {
		for _, n := range b.s.sizes {
			if stats[n] == nil {
				stats[n] = &perSize{}
			}
			rollout := n == b.s.rolloutSize && err11 == nil
			f, err := b.fleetOnce(fmt.Sprintf("bench%d-%d", n, run), "hello:1.0.0", n, rollout, true, &ro)
			if err != nil {
				b.fail(fmt.Sprintf("fleet of %d", n), err)
			}
			st := stats[n]
			if f.healthy > 0 {
				st.ready = append(st.ready, f.healthy.Seconds())
			}
			if f.up > 0 {
				st.up = append(st.up, f.up.Seconds())
			}
			if f.down > 0 {
				st.down = append(st.down, f.down.Seconds())
			}
			if f.supRSS > 0 {
				st.supRSS = append(st.supRSS, float64(f.supRSS))
			}
			firstSight = append(firstSight, f.firstSight...)
			healthyDisk = append(healthyDisk, f.healthyDisk...)
			qemuRSS = append(qemuRSS, f.qemuRSS...)
		}
	}
	b.add("disk per instance at launch (overlay as fleet up made it)", Bytes, firstSight,
		"read when the instance folder is complete, before QEMU runs; one sample per instance")
	for _, n := range b.s.sizes {
		st := stats[n]
		note := "from the start of `kiln fleet up`"
		if len(st.up) > 0 {
			note += fmt.Sprintf("; the command returned after %s (median)", FormatSeconds(Median(st.up)))
		}
		b.add(fmt.Sprintf("N=%d: until all healthy", n), Duration, st.ready, note)
	}
	for _, n := range b.s.sizes {
		b.add(fmt.Sprintf("N=%d: supervisor memory (VmRSS)", n), Bytes, stats[n].supRSS, "once all are healthy")
	}
	var down []float64
	for _, n := range b.s.sizes {
		down = append(down, stats[n].down...)
	}
	b.add("fleet down", Duration, down, "N = "+joinInts(b.s.sizes)+": graceful stop of every instance")
	b.add("QEMU memory per instance (VmRSS)", Bytes, qemuRSS, "--memory 512M, once healthy and settled (no move over 4 MiB in 3 s): guest RAM touched plus QEMU's own (under TCG, its translated-code cache)")
	b.add("disk per instance once healthy (instance folder)", Bytes, healthyDisk, "overlay after boot, seed, keys, logs")

	if err11 != nil {
		b.fail("rollout", fmt.Errorf("hello:1.1.0 was not built: %v", err11))
		return
	}
	b.r.Section(fmt.Sprintf("Rollout (N=%d, hello:1.0.0 → hello:1.1.0, --bake 5s --drain 2s, --cold)", b.s.rolloutSize))
	b.add("front port, steady: request latency", Duration, ro.steady, "one GET per new connection, before the rollout; runs = requests")
	b.add("rollout total (kiln rollout)", Duration, ro.total, "green boots beside blue, checks, switch, bake, drain")
	b.add("longest request during the switch", Duration, ro.switchMax, "requests overlapping the switching phase ± 1 s; one sample per rollout")
	b.add("longest request during the whole rollout", Duration, ro.wholeMax, "it started in: "+strings.Join(ro.wholeMaxPhase, ", "))
	b.add("failed requests during the rollout", Count, ro.failures, fmt.Sprintf("of %s requests (median); 10 s client timeout", number(Median(ro.requests))))
	b.add(fmt.Sprintf("keep-alive (%d connections): longest request during the rollout", keepAliveConns), Duration, ro.kaLongest,
		fmt.Sprintf("the same rollout, persistent connections, %s between requests on each", keepAlivePause))
	b.add(fmt.Sprintf("keep-alive (%d connections): failed requests during the rollout", keepAliveConns), Count, ro.kaFailures,
		fmt.Sprintf("of %s requests (median)", number(Median(ro.kaRequests))))

	b.r.Section(fmt.Sprintf("Supervisor killed (N=%d, kill -9, restarted by kiln's monitor)", b.s.rolloutSize))
	b.add("gap: supervisor killed → first successful request", Duration, ro.gap, "GETs every 20 ms on new connections; restart delay 1 s plus adoption")
	b.add("failed requests during the gap (one connection per request)", Count, ro.gapFailures, "")
	b.add(fmt.Sprintf("failed requests during the gap (keep-alive, %d connections)", keepAliveConns), Count, ro.gapKAFailures, "")
	b.add("instances rebooted by the restart", Count, ro.rebooted, "QEMU pids changed; 0 = every instance adopted")
}

// allocated is a file's allocated size (blocks × 512).
func allocated(path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	return st.Blocks * 512
}

// dirAllocated sums allocated sizes under dir.
func dirAllocated(dir string) int64 {
	var sum int64
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			sum += allocated(p)
		}
		return nil
	})
	return sum
}

type fleetRun struct {
	up, healthy, down time.Duration
	supRSS            int64
	firstSight        []float64
	healthyDisk       []float64
	qemuRSS           []float64
}

type rolloutStats struct {
	steady, total, switchMax, wholeMax, failures, requests []float64
	wholeMaxPhase                                          []string // the phase each longest request started in
	kaLongest, kaFailures, kaRequests                      []float64
	// After kill -9 of the supervisor: until the front served again, the
	// failed requests meanwhile, and instances whose QEMU pid changed.
	gap, gapFailures, gapKAFailures, rebooted []float64
}

// longestAndFailed is the longest request and the number that failed.
func longestAndFailed(reqs []request) (longest time.Duration, failed int) {
	for _, r := range reqs {
		longest = max(longest, r.end.Sub(r.start))
		if r.err != nil {
			failed++
		}
	}
	return longest, failed
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// fleetOnce brings up one fleet of n, measures it, rolls it out when asked,
// and takes it down.
func (b *bencher) fleetOnce(name, image string, n int, rollout, cold bool, ro *rolloutStats) (fleetRun, error) {
	var f fleetRun
	port, err := freePort()
	if err != nil {
		return f, err
	}
	dirs := supervisor.FleetDirs(b.data, name)
	client := supervisor.NewClient(dirs)
	downed := false
	b.t.Cleanup(func() {
		if !downed {
			b.kilnRun(5*time.Minute, nil, "fleet", "down", name)
		}
	})

	// Watch instance folders for overlays, and the supervisor for health.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		seen := map[string]bool{}
		for ctx.Err() == nil && len(seen) < n {
			dirsNow, _ := os.ReadDir(dirs.Instances())
			for _, d := range dirsNow {
				p := filepath.Join(dirs.Instances(), d.Name())
				if seen[p] {
					continue
				}
				// known_hosts is the last file written before QEMU starts,
				// so the overlay is complete and not yet booted.
				if _, err := os.Stat(filepath.Join(p, "known_hosts")); err == nil {
					seen[p] = true
					mu.Lock()
					f.firstSight = append(f.firstSight, float64(allocated(filepath.Join(p, "disk.qcow2"))))
					mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	healthy := make(chan supervisor.State, 1)
	wg.Go(func() {
		for ctx.Err() == nil {
			if st, err := client.Status(); err == nil {
				ok := 0
				for _, in := range st.Instances {
					if in.Health == string(fleet.Healthy) {
						ok++
					}
				}
				if ok >= n {
					mu.Lock()
					f.healthy = time.Since(start)
					mu.Unlock()
					healthy <- st
					return
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	args := []string{"fleet", "up", name, "--image", image, "--count", strconv.Itoa(n),
		"--port", fmt.Sprintf("%d:8080", port), "--memory", "512M", "--health-http", "/healthz"}
	if cold {
		args = append(args, "--cold")
	}
	res, err := b.kilnRun(20*time.Minute, nil, args...)
	if err != nil {
		cancel()
		wg.Wait()
		return f, err
	}
	f.up = res.wall()
	var st supervisor.State
	select {
	case st = <-healthy:
	case <-time.After(time.Minute):
		cancel()
		wg.Wait()
		return f, fmt.Errorf("fleet up returned but the supervisor never showed %d healthy instances", n)
	}
	cancel()
	wg.Wait()

	if rss, ok := vmRSS(st.Supervisor); ok {
		f.supRSS = rss
	}
	var pids []int
	for _, in := range st.Instances {
		pids = append(pids, in.Pid)
		f.healthyDisk = append(f.healthyDisk, float64(dirAllocated(in.Dir)))
	}
	for _, rss := range settledRSS(pids) {
		f.qemuRSS = append(f.qemuRSS, float64(rss))
	}

	if rollout {
		if err := b.rollout(name, port, client, ro); err != nil {
			b.fail("rollout", err)
		} else if err := b.killSupervisor(port, client, ro); err != nil {
			b.fail("supervisor kill", err)
		}
	}

	res, err = b.kilnRun(10*time.Minute, nil, "fleet", "down", name)
	if err != nil {
		return f, err
	}
	downed = true
	f.down = res.wall()
	return f, nil
}

// settledRSS samples the processes' VmRSS every second until none moved
// by more than 4 MiB over the last 3 s, for at most 30 s, and returns the
// last samples: a resumed instance gives its free memory back in the
// seconds after it is healthy, and that is what it costs the host from
// then on.
func settledRSS(pids []int) []int64 {
	const window, moved, bound = 3, 4 << 20, 30
	sample := func() []int64 {
		out := make([]int64, len(pids))
		for i, pid := range pids {
			out[i], _ = vmRSS(pid) // 0 for a process that is gone
		}
		return out
	}
	history := [][]int64{sample()}
	for len(history) < bound {
		time.Sleep(time.Second)
		now := sample()
		history = append(history, now)
		if len(history) <= window {
			continue
		}
		then := history[len(history)-1-window]
		settled := true
		for i := range now {
			settled = settled && abs(now[i]-then[i]) <= moved
		}
		if settled {
			break
		}
	}
	var last []int64
	for _, rss := range history[len(history)-1] {
		if rss > 0 {
			last = append(last, rss)
		}
	}
	return last
}

func abs(n int64) int64 { return max(n, -n) }

func vmRSS(pid int) (int64, bool) {
	if pid <= 0 {
		return 0, false
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	return ProcKB(string(raw), "VmRSS")
}

// request is one GET on the front port.
type request struct {
	start, end time.Time
	err        error
}

// hammer GETs url on a new connection each time, one at a time with 20 ms
// between, until ctx ends.
func hammer(ctx context.Context, url string, max int) []request {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return hammerWith(ctx, client, url, max, 20*time.Millisecond)
}

// keepAliveConns is how many persistent connections the keep-alive client
// holds, as a browser or an HTTP client library's pool does, and
// keepAlivePause the time between two requests on one. Together with the
// one-connection-per-request client they offer about 40 requests a second,
// which two TCG instances of hello serve while two more boot beside them on
// two cores; 16 connections every 100 ms (160 a second) overloaded them,
// and the figures measured the overload (seconds-long queues, timeouts)
// rather than the rollout.
const (
	keepAliveConns = 4
	keepAlivePause = 250 * time.Millisecond
)

// keepAliveHammer runs keepAliveConns clients on one pool of as many
// persistent connections, each GETting url with keepAlivePause between,
// until ctx ends. The requests come back in one list.
func keepAliveHammer(ctx context.Context, url string) []request {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxConnsPerHost: keepAliveConns, MaxIdleConnsPerHost: keepAliveConns}}
	var mu sync.Mutex
	var all []request
	var wg sync.WaitGroup
	for range keepAliveConns {
		wg.Go(func() {
			reqs := hammerWith(ctx, client, url, 0, keepAlivePause)
			mu.Lock()
			all = append(all, reqs...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return all
}

func hammerWith(ctx context.Context, client *http.Client, url string, max int, pause time.Duration) []request {
	var out []request
	for i := 0; ctx.Err() == nil && (max == 0 || i < max); i++ {
		r := request{start: time.Now()}
		resp, err := client.Get(url)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
		}
		r.end, r.err = time.Now(), err
		out = append(out, r)
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
	return out
}

// rollout rolls fleet name to hello:1.1.0 while a client hammers the front
// port, and finds the longest request around the switch.
func (b *bencher) rollout(name string, port int, client *supervisor.Client, ro *rolloutStats) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for _, r := range hammer(context.Background(), url, 50) {
		if r.err == nil {
			ro.steady = append(ro.steady, r.end.Sub(r.start).Seconds())
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []request, 1)
	kaDone := make(chan []request, 1)
	go func() { done <- hammer(ctx, url, 0) }()
	go func() { kaDone <- keepAliveHammer(ctx, url) }()
	res, err := b.kilnRun(20*time.Minute, nil, "rollout", name, "--to", "hello:1.1.0", "--bake", "5s", "--drain", "2s")
	// A moment more, so requests right after the rollout count too.
	time.Sleep(time.Second)
	cancel()
	reqs, kaReqs := <-done, <-kaDone
	if err != nil {
		return err
	}
	kaLongest, kaFailed := longestAndFailed(kaReqs)
	ro.kaLongest = append(ro.kaLongest, kaLongest.Seconds())
	ro.kaFailures = append(ro.kaFailures, float64(kaFailed))
	ro.kaRequests = append(ro.kaRequests, float64(len(kaReqs)))
	b.t.Logf("rollout, keep-alive client: %d requests, %d failed, longest %s", len(kaReqs), kaFailed, kaLongest)
	st, err := client.Status()
	if err != nil {
		return err
	}
	if st.Rollout == nil {
		return errors.New("the supervisor shows no rollout after kiln rollout succeeded")
	}
	var from, to time.Time
	for _, tr := range st.Rollout.History {
		if tr.To == fleet.PhaseSwitching && from.IsZero() {
			from = tr.At
		}
		if tr.From == fleet.PhaseSwitching && to.IsZero() {
			to = tr.At
		}
	}
	if from.IsZero() || to.IsZero() {
		return fmt.Errorf("no switching phase in the rollout's history: %+v", st.Rollout.History)
	}
	from, to = from.Add(-time.Second), to.Add(time.Second)
	var switchMax, wholeMax time.Duration
	var wholeMaxAt time.Time
	failures := 0
	for _, r := range reqs {
		d := r.end.Sub(r.start)
		if d > wholeMax {
			wholeMax, wholeMaxAt = d, r.start
		}
		if r.err != nil {
			failures++
			b.t.Logf("request failed during the rollout at %s: %v", r.start.Format("15:04:05.000"), r.err)
		}
		if r.end.After(from) && r.start.Before(to) {
			switchMax = max(switchMax, d)
		}
	}
	ro.total = append(ro.total, res.wall().Seconds())
	ro.switchMax = append(ro.switchMax, switchMax.Seconds())
	ro.wholeMax = append(ro.wholeMax, wholeMax.Seconds())
	ro.wholeMaxPhase = append(ro.wholeMaxPhase, string(phaseAt(st.Rollout.History, wholeMaxAt)))
	ro.failures = append(ro.failures, float64(failures))
	ro.requests = append(ro.requests, float64(len(reqs)))
	b.t.Logf("rollout: %d requests, %d failed, longest %s (at %s, %s), longest around the switch (%s–%s) %s",
		len(reqs), failures, wholeMax, wholeMaxAt.Format("15:04:05.000"), phaseAt(st.Rollout.History, wholeMaxAt),
		from.Format("15:04:05.000"), to.Format("15:04:05.000"), switchMax)
	return nil
}

// phaseAt is the rollout phase at t, from its history.
func phaseAt(history []fleet.Transition, t time.Time) fleet.Phase {
	phase := fleet.PhaseIdle
	for _, tr := range history {
		if tr.At.After(t) {
			break
		}
		phase = tr.To
	}
	return phase
}

// method is the "how measured" section of docs/benchmarks.md, from
// method.md with the run's settings filled in.
func method(s settings) string {
	return strings.NewReplacer("{{settings}}", s.String(), "{{rollout}}", strconv.Itoa(s.rolloutSize)).Replace(methodText)
}

//go:embed method.md
var methodText string

// killSupervisor kills the fleet's supervisor with SIGKILL while both
// clients run and measures the gap until the front port serves again,
// with nobody running a command: kiln's monitor restarts the supervisor,
// which adopts the instances.
func (b *bencher) killSupervisor(port int, client *supervisor.Client, ro *rolloutStats) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	before, err := client.Status()
	if err != nil {
		return err
	}
	pids := map[string]int{}
	for _, in := range before.Instances {
		pids[in.ID] = in.Pid
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, kaDone := make(chan []request, 1), make(chan []request, 1)
	go func() { done <- hammer(ctx, url, 0) }()
	go func() { kaDone <- keepAliveHammer(ctx, url) }()
	time.Sleep(2 * time.Second) // both clients in their stride
	killed := time.Now()
	if err := syscall.Kill(before.Supervisor, syscall.SIGKILL); err != nil {
		cancel()
		<-done
		<-kaDone
		return err
	}
	// Ready again: a new supervisor answers and says so.
	var after supervisor.State
	deadline := time.Now().Add(5 * time.Minute)
	for {
		st, err := client.Status()
		if err == nil && st.Ready && st.Supervisor != before.Supervisor {
			after = st
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			<-kaDone
			return fmt.Errorf("no supervisor was ready again within 5m of kill -9: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	cancel()
	reqs, kaReqs := <-done, <-kaDone
	var back time.Time
	for _, r := range reqs {
		if r.err == nil && r.start.After(killed) && (back.IsZero() || r.end.Before(back)) {
			back = r.end
		}
	}
	if back.IsZero() {
		return errors.New("no request succeeded after the supervisor was killed")
	}
	failedIn := func(rs []request) (n int) {
		for _, r := range rs {
			if r.err != nil && !r.start.Before(killed.Add(-time.Second)) && !r.start.After(back) {
				n++
			}
		}
		return n
	}
	rebooted := 0
	for _, in := range after.Instances {
		if pids[in.ID] != in.Pid {
			rebooted++
		}
	}
	rebooted += max(len(pids)-len(after.Instances), 0)
	ro.gap = append(ro.gap, back.Sub(killed).Seconds())
	ro.gapFailures = append(ro.gapFailures, float64(failedIn(reqs)))
	ro.gapKAFailures = append(ro.gapKAFailures, float64(failedIn(kaReqs)))
	ro.rebooted = append(ro.rebooted, float64(rebooted))
	b.t.Logf("supervisor pid %d killed: front back after %s, %d + %d (keep-alive) failed requests, %d instances rebooted",
		before.Supervisor, back.Sub(killed), failedIn(reqs), failedIn(kaReqs), rebooted)
	return nil
}
