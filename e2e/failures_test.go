//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/proc"
)

// These tests interrupt kiln, kill it, crash its QEMU and race it with
// itself, and check each time that it says what happened and leaves
// nothing behind. docs/failures.md lists them.

// running is a kiln command in the background whose stderr can be waited on.
type running struct {
	cmd  *exec.Cmd
	args string
	mu   sync.Mutex
	errb bytes.Buffer
	outb bytes.Buffer
	done chan struct{}
	code int
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func startKiln(t *testing.T, args ...string) *running {
	t.Helper()
	r := &running{cmd: exec.Command(kiln, args...), args: strings.Join(args, " "), done: make(chan struct{})}
	r.cmd.Stdout = lockedWriter{&r.mu, &r.outb}
	r.cmd.Stderr = lockedWriter{&r.mu, &r.errb}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := r.cmd.Wait()
		r.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.code = 128 + int(ws.Signal())
			}
		}
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

func (r *running) stderr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errb.String()
}

// waitFor waits until stderr matches re, and returns the match.
func (r *running) waitFor(t *testing.T, re string, timeout time.Duration) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := rx.FindStringSubmatch(r.stderr()); m != nil {
			return m
		}
		select {
		case <-r.done:
			if m := rx.FindStringSubmatch(r.stderr()); m != nil {
				return m
			}
			t.Fatalf("kiln %s exited %d before printing %q:\n%s", r.args, r.code, re, r.stderr())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("kiln %s did not print %q within %s:\n%s", r.args, re, timeout, r.stderr())
	return nil
}

// wait waits for the command to end and returns its result.
func (r *running) wait(t *testing.T, timeout time.Duration) result {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		t.Fatalf("kiln %s still running after %s:\n%s", r.args, timeout, r.stderr())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Logf("kiln %s: exit %d\nstderr:\n%s", r.args, r.code, r.errb.String())
	return result{stdout: r.outb.String(), stderr: r.errb.String(), code: r.code}
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for proc.Running(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still runs", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// qemuOf returns the pid of the QEMU whose command line names dir.
func qemuOf(t *testing.T, dir string) int {
	t.Helper()
	procs, err := qemuProcesses(dir)
	if err != nil {
		t.Fatalf("cannot look for QEMU processes: %v", err)
	}
	if len(procs) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(strings.Fields(procs[0])[0])
	return pid
}

// assertPrivate checks a VM folder: 0700, with its private key and serial
// log 0600.
func assertPrivate(t *testing.T, dir string) {
	t.Helper()
	var keys, logs int
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		mode := fi.Mode().Perm()
		switch {
		case fi.IsDir() && mode != 0o700:
			t.Errorf("%s is %o, want 0700", path, mode)
		case fi.Name() == "id_ed25519" || fi.Name() == "serial.log":
			if fi.Name() == "id_ed25519" {
				keys++
			} else {
				logs++
			}
			if mode != 0o600 {
				t.Errorf("%s is %o, want 0600", path, mode)
			}
		}
		return nil
	})
	if keys == 0 || logs == 0 {
		t.Errorf("no private key (%d) or serial log (%d) found under %s", keys, logs, dir)
	}
}

// assertLoopbackOnly checks that every TCP port pid listens on is bound to
// 127.0.0.1.
func assertLoopbackOnly(t *testing.T, pid int) {
	t.Helper()
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	listening := 0
	for _, table := range []string{"tcp", "tcp6"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] { // 0A: LISTEN
				continue
			}
			listening++
			if addr := strings.Split(f[1], ":")[0]; addr != "0100007F" { // 127.0.0.1, little-endian hex
				t.Errorf("pid %d listens on %s (%s), not on loopback", pid, f[1], table)
			}
		}
	}
	if listening == 0 {
		t.Errorf("pid %d listens on no TCP port; expected its SSH forward", pid)
	}
}

// TestInterruptRun: Ctrl-C or SIGTERM while `kiln run` boots stops QEMU and
// removes the run folder.
func TestInterruptRun(t *testing.T) {
	t.Run("signals", func(t *testing.T) {
		for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
			t.Run(sig.String(), func(t *testing.T) {
				t.Parallel()
				r := startKiln(t, "run", baseImg, "--memory", "512M", "--", "true")
				r.waitFor(t, `boot \(`, 2*time.Minute)
				time.Sleep(2 * time.Second) // QEMU is up and booting
				r.cmd.Process.Signal(sig)
				res := r.wait(t, time.Minute)
				if res.code != 130 || !strings.Contains(res.stderr, "interrupted") {
					t.Errorf("exit %d, want 130 with a word that it was interrupted", res.code)
				}
			})
		}
	})
	assertNothingLeft(t)
}

// TestInterruptFleetUp: Ctrl-C while a fleet starts leaves no fleet.
func TestInterruptFleetUp(t *testing.T) {
	r := startKiln(t, "fleet", "up", "intr", "--image", "debian:12", "--count", "1", "--memory", "512M")
	r.waitFor(t, `starting 1`, time.Minute)
	time.Sleep(5 * time.Second)
	r.cmd.Process.Signal(syscall.SIGINT)
	res := r.wait(t, 2*time.Minute)
	if res.code != 130 {
		t.Errorf("exit %d, want 130", res.code)
	}
	if _, err := os.Stat(filepath.Join(home, "data", "kiln", "fleets", "intr")); err == nil {
		t.Error("the interrupted fleet's folder remains")
	}
	if procs, err := qemuProcesses(filepath.Join(home, "data", "kiln", "fleets", "intr")); err != nil || len(procs) > 0 {
		t.Errorf("the interrupted fleet's QEMU still runs (%v):\n%s", err, strings.Join(procs, "\n"))
	}
	if ls := kilnCmd(t, time.Minute, "fleet", "ls"); strings.Contains(ls.stdout, "intr") {
		t.Errorf("fleet ls still lists the interrupted fleet:\n%s", ls.stdout)
	}
}

// TestBuildRacesAndInterruptions runs one build to its provisioning and
// interrupts it there; while it runs, a second build of the same version
// is refused, gc leaves its base alone, one build is killed with -9 (the
// next command removes its work) and one loses its QEMU.
func TestBuildRacesAndInterruptions(t *testing.T) {
	before := listImages(t)
	// A base only this build uses (its own blob: the same disk with another
	// cluster size), so gc has something to be wrong about.
	scratch := filepath.Join(t.TempDir(), "scratch.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-O", "qcow2", "-o", "cluster_size=128k", baseImg, scratch).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	kilnOK(t, "images", "import", scratch, "--name", "scratch", "--version", "1")
	scratchBlob := filepath.Join(home, "data", "kiln", "images", "blobs", "sha256",
		strings.TrimPrefix(showImage(t, "scratch:1").Digest, "sha256:"))

	a := startKiln(t, "build", helloTemplate, "--var", "version=8.0.0", "--var", "base=scratch:1")
	a.waitFor(t, `boot \(`, 2*time.Minute)

	t.Run("same version refused", func(t *testing.T) {
		r := kilnCmd(t, time.Minute, "build", helloTemplate, "--var", "version=8.0.0", "--var", "base=scratch:1")
		want := fmt.Sprintf("hello:8.0.0 is already being built (kiln pid %d)", a.cmd.Process.Pid)
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("exit %d, want 1 and %q", r.code, want)
		}
	})

	t.Run("rm and gc keep a building base", func(t *testing.T) {
		r := kilnCmd(t, time.Minute, "images", "rm", "scratch:1")
		if r.code == 0 || !strings.Contains(r.stderr, "kiln work in progress") {
			t.Errorf("rm of a base a build runs on: exit %d, want a refusal naming the build", r.code)
		}
		kilnOK(t, "images", "rm", "scratch:1", "--force")
		kilnOK(t, "images", "gc")
		if _, err := os.Stat(scratchBlob); err != nil {
			t.Errorf("gc removed the blob a running build uses: %v", err)
		}
	})

	t.Run("kill -9 then the next command cleans up", func(t *testing.T) {
		c := startKiln(t, "build", helloTemplate, "--var", "version=8.0.1", "--cold")
		c.waitFor(t, `boot \(`, 2*time.Minute)
		dirs, _ := filepath.Glob(filepath.Join(home, "run", "kiln", "build-hello-*"))
		var dir string
		for _, d := range dirs {
			if b, _ := os.ReadFile(filepath.Join(d, "kiln.owner")); strings.HasPrefix(string(b), strconv.Itoa(c.cmd.Process.Pid)+" ") {
				dir = d
			}
		}
		if dir == "" {
			t.Fatalf("no work folder owned by pid %d among %v", c.cmd.Process.Pid, dirs)
		}
		c.cmd.Process.Signal(syscall.SIGKILL)
		c.wait(t, time.Minute)
		q := qemuOf(t, dir)
		if q == 0 {
			t.Fatal("expected the killed build's QEMU to outlive it")
		}
		r := kilnCmd(t, time.Minute, "images", "ls")
		if !strings.Contains(r.stderr, "removed stale work of an interrupted kiln: "+filepath.Base(dir)) ||
			!strings.Contains(r.stderr, fmt.Sprintf("stopped QEMU pid %d", q)) {
			t.Errorf("the next command did not report removing the stale build")
		}
		if proc.Running(q) {
			t.Errorf("the stale build's QEMU (pid %d) still runs", q)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("the stale build's folder remains")
		}
		// Its claim on hello:8.0.1 died with it: building it again starts.
		again := startKiln(t, "build", helloTemplate, "--var", "version=8.0.1", "--cold")
		again.waitFor(t, `boot \(`, 2*time.Minute)
		again.cmd.Process.Signal(syscall.SIGINT)
		if res := again.wait(t, time.Minute); res.code != 130 {
			t.Errorf("interrupted rebuild: exit %d, want 130", res.code)
		}
	})

	t.Run("QEMU crash", func(t *testing.T) {
		d := startKiln(t, "build", helloTemplate, "--var", "version=8.0.2", "--cold")
		d.waitFor(t, `boot \(`, 2*time.Minute)
		time.Sleep(time.Second)
		dirs, _ := filepath.Glob(filepath.Join(home, "run", "kiln", "build-hello-*"))
		killed := false
		for _, dir := range dirs {
			if b, _ := os.ReadFile(filepath.Join(dir, "kiln.owner")); strings.HasPrefix(string(b), strconv.Itoa(d.cmd.Process.Pid)+" ") {
				if q := qemuOf(t, dir); q > 0 {
					syscall.Kill(q, syscall.SIGKILL)
					killed = true
				}
			}
		}
		if !killed {
			t.Fatal("found no QEMU to crash")
		}
		res := d.wait(t, 2*time.Minute)
		if res.code != 1 || !strings.Contains(res.stderr, "the VM stopped before SSH answered") {
			t.Errorf("exit %d, want 1 and a message that the VM stopped", res.code)
		}
	})

	// Interrupt the first build while it provisions.
	a.waitFor(t, `\[3/8\] cloud-init done`, 10*time.Minute)
	time.Sleep(3 * time.Second)
	a.cmd.Process.Signal(syscall.SIGINT)
	res := a.wait(t, 2*time.Minute)
	if res.code != 130 || !strings.Contains(res.stderr, "interrupted") {
		t.Errorf("build interrupted while provisioning: exit %d, want 130", res.code)
	}
	if after := listImages(t); after != before {
		t.Errorf("the store changed:\nbefore %s\nafter %s", before, after)
	}
	// With the build gone, nothing holds the removed base any more.
	kilnOK(t, "images", "gc")
	if _, err := os.Stat(scratchBlob); err == nil {
		t.Error("gc kept the removed base after the build that used it ended")
	}
	assertNothingLeft(t)
}

// TestCloudInitErrors: a cloud-config that fails is reported with
// cloud-init's own error, and kiln run exits non-zero.
func TestCloudInitErrors(t *testing.T) {
	ud := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(ud, []byte("#cloud-config\nruncmd:\n  - [sh, -c, 'echo failing on purpose; exit 7']\n"), 0o600)
	r := kilnCmd(t, 10*time.Minute, "run", baseImg, "--memory", "512M", "--user-data", ud, "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "cloud-init finished with status error") || !strings.Contains(r.stderr, "runcmd") {
		t.Errorf("exit %d; want non-zero with cloud-init's error naming runcmd", r.code)
	}
	assertNothingLeft(t)
}
