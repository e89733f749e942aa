//go:build e2e

// Package e2e boots real VMs with real QEMU, cloud-init and OpenSSH through
// the kiln binary, as a user would. Its files build only with -tags e2e
// (make e2e), so `go test ./...` lists the package as having no tests
// instead of passing it without running anything.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/proc"
	"github.com/kiln-dev/kiln/layout"
)

var (
	kiln    string // the binary under test
	home    string // XDG data and runtime folders for this run
	baseImg string // the base image made by `kiln base debian`
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	kiln, err = filepath.Abs("../bin/kiln")
	if err == nil {
		_, err = os.Stat(kiln)
	}
	if err != nil {
		fmt.Println("e2e: build kiln first (make build):", err)
		return 1
	}
	home, err = os.MkdirTemp("", "kiln-e2e-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(home)
	// Fresh store and run folders; the cache (base images) is shared with
	// the user's so a second run does not rebuild the base.
	os.Setenv("XDG_DATA_HOME", filepath.Join(home, "data"))
	os.Setenv("XDG_RUNTIME_DIR", filepath.Join(home, "run"))
	os.Unsetenv("KILN_HOME")
	// Saved guests (warm starts) are this run's own, so which builds boot
	// and which resume does not depend on earlier runs: a cache of its own
	// that shares only the user's base images.
	userBase := layout.Default().BaseImages()
	os.Setenv("XDG_CACHE_HOME", filepath.Join(home, "cache"))
	err = os.MkdirAll(userBase, 0o755)
	if err == nil {
		err = os.MkdirAll(filepath.Join(home, "cache", "kiln"), 0o700)
	}
	if err == nil {
		err = os.Symlink(userBase, filepath.Join(home, "cache", "kiln", "base"))
	}
	if err != nil {
		fmt.Println("e2e: cache folder:", err)
		return 1
	}

	baseImg = filepath.Join(home, "base.qcow2")
	start := time.Now()
	out, err := exec.Command(kiln, "base", "debian", "-o", baseImg).CombinedOutput()
	if err != nil {
		fmt.Printf("e2e: kiln base debian failed: %v\n%s", err, out)
		return 1
	}
	fmt.Printf("e2e: base image ready in %s\n%s", time.Since(start).Round(time.Second), out)
	return m.Run()
}

// result is what one kiln invocation did.
type result struct {
	stdout, stderr string
	code           int
}

// kilnCmd runs kiln with a time limit and returns its output and status.
func kilnCmd(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	return kilnIn(t, "", timeout, args...)
}

// kilnOK runs kiln and fails the test unless it exits 0.
func kilnOK(t *testing.T, args ...string) result {
	t.Helper()
	r := kilnCmd(t, 5*time.Minute, args...)
	if r.code != 0 {
		t.Fatalf("kiln %s: exit %d", strings.Join(args, " "), r.code)
	}
	return r
}

// assertNothingLeft checks no QEMU process (of a run, a build or a fleet of
// this test run) and no run folder outlive kiln. It reads /proc itself, so
// it cannot pass for want of a tool to look with.
func assertNothingLeft(t *testing.T) {
	t.Helper()
	runDir := filepath.Join(home, "run", "kiln")
	left, err := qemuProcesses(home)
	if err != nil {
		t.Errorf("cannot look for QEMU processes: %v", err)
	}
	for _, p := range left {
		t.Errorf("QEMU process left running: %s", p)
	}
	entries, _ := os.ReadDir(runDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "run-") || strings.HasPrefix(e.Name(), "build-") {
			t.Errorf("run folder left behind: %s", filepath.Join(runDir, e.Name()))
		}
	}
}

// qemuProcesses lists the QEMU processes whose command line names a path
// under dir, as "PID ARGV".
func qemuProcesses(dir string) ([]string, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range procs {
		if p.Name()[0] < '0' || p.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue // gone since the listing
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if strings.HasPrefix(filepath.Base(argv[0]), "qemu-system") && strings.Contains(string(b), dir) {
			out = append(out, p.Name()+" "+strings.Join(argv, " "))
		}
	}
	return out, nil
}

var instanceIDLine = regexp.MustCompile(`instance (i-[0-9a-f]+)`)

// TestRunBaseImage boots the base image once, on a disk grown to 5G. (UEFI
// is checked on a built image's boot in TestBuildHello, and two `kiln run`
// at once there too.)
func TestRunBaseImage(t *testing.T) {
	t.Run("os-release", func(t *testing.T) {
		r := kilnCmd(t, 10*time.Minute, "run", baseImg, "--memory", "512M", "--disk-size", "5G", "--",
			"cat /etc/os-release; echo instance-id=$(cat /var/lib/cloud/data/instance-id); "+
				"sudo cloud-init schema --system >/dev/null 2>&1 && echo schema-valid || sudo cloud-init schema --system; "+
				"echo root-bytes=$(df -B1 --output=size / | tail -1); exit 7")
		if r.code != 7 {
			t.Fatalf("kiln run exited %d, want the guest command's 7", r.code)
		}
		if !strings.Contains(r.stdout, `VERSION_ID="12"`) || !strings.Contains(r.stdout, "Debian") {
			t.Errorf("guest is not Debian 12:\n%s", r.stdout)
		}
		var size int64
		fmt.Sscan(field(r.stdout, "root-bytes"), &size)
		if size < 4<<30 {
			t.Errorf("root filesystem is %d bytes after --disk-size 5G; growpart did not grow it", size)
		}
		// cloud-init accepts kiln's user-data without a schema warning.
		if !strings.Contains(r.stdout, "schema-valid") {
			t.Errorf("cloud-init's schema check fails on kiln's user-data:\n%s", r.stdout)
		}
		m := instanceIDLine.FindStringSubmatch(r.stderr)
		if m == nil {
			t.Fatalf("kiln did not print the instance id")
		}
		if !strings.Contains(r.stdout, "instance-id="+m[1]+"\n") {
			t.Errorf("guest's instance-id differs from kiln's %s:\n%s", m[1], r.stdout)
		}
	})
	assertNothingLeftAfter(t)
}

// assertNothingLeftAfter checks after all of t's subtests have ended.
func assertNothingLeftAfter(t *testing.T) {
	t.Cleanup(func() { assertNothingLeft(t) })
}

func TestSSHTimeoutNamesSerialLog(t *testing.T) {
	blank := filepath.Join(t.TempDir(), "blank.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", blank, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	r := kilnCmd(t, 3*time.Minute, "run", blank, "--memory", "256M", "--boot-timeout", "15s", "--", "true")
	if r.code == 0 {
		t.Fatal("kiln run of an unbootable disk succeeded")
	}
	if !strings.Contains(r.stderr, "serial.log") || !strings.Contains(r.stderr, "did not answer SSH") {
		t.Errorf("the error does not say SSH timed out and name the serial log:\n%s", r.stderr)
	}
	assertNothingLeft(t)
}

func processAlive(pid int) bool { return proc.Running(pid) }

// TestAccelKVMExplicit: `--accel kvm` either runs the guest under KVM
// (where the probe says KVM runs a guest) or fails within seconds with the
// probe's finding, instead of waiting for SSH. On a host whose /dev/kvm
// cannot run a guest (or has none), the rest of the e2e runs under TCG
// because the probe chose it.
func TestAccelKVMExplicit(t *testing.T) {
	doctor := kilnCmd(t, time.Minute, "doctor")
	usable := strings.Contains(doctor.stdout, "accelerator: kvm")
	start := time.Now()
	r := kilnCmd(t, 10*time.Minute, "run", baseImg, "--accel", "kvm", "--memory", "512M", "--", "true")
	took := time.Since(start)
	if usable {
		if r.code != 0 {
			t.Errorf("doctor says KVM works, but kiln run --accel kvm exited %d", r.code)
		}
		if !strings.Contains(r.stderr, "boot (kvm)") {
			t.Errorf("the guest did not boot under KVM:\n%s", r.stderr)
		}
	} else {
		if r.code != 1 {
			t.Errorf("kiln run --accel kvm on a host without a usable KVM exited %d, want 1", r.code)
		}
		if !strings.Contains(r.stderr, "--accel kvm: ") || !(strings.Contains(r.stderr, "cannot run a guest") || strings.Contains(r.stderr, "KVM is not usable")) {
			t.Errorf("the error does not give the probe's finding:\n%s", r.stderr)
		}
		if took > time.Minute { // a boot timeout is minutes; the probe is bounded by seconds
			t.Errorf("refusing --accel kvm took %s: it should take seconds, not a boot timeout", took.Round(time.Second))
		}
		if !strings.Contains(doctor.stdout, "accelerator: tcg") {
			t.Errorf("doctor does not say TCG is used:\n%s", doctor.stdout)
		}
	}
	assertNothingLeft(t)
}
