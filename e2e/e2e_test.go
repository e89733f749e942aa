// Package e2e boots real VMs with real QEMU, cloud-init and OpenSSH through
// the kiln binary, as a user would. Set KILN_E2E=1 to run (make e2e does).
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/workdir"
)

var (
	kiln    string // the binary under test
	home    string // XDG data and runtime folders for this run
	baseImg string // the base image made by `kiln base debian`
)

func TestMain(m *testing.M) {
	if os.Getenv("KILN_E2E") != "1" {
		fmt.Println("e2e: skipped (set KILN_E2E=1 or run `make e2e`; they boot real VMs)")
		os.Exit(0)
	}
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
	userBase := filepath.Join(images.DefaultPaths().Cache, "base")
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
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kiln, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("kiln %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("kiln %s: still running after %s\nstderr:\n%s", strings.Join(args, " "), timeout, r.stderr)
	}
	t.Logf("kiln %s: exit %d in %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, time.Since(start).Round(time.Second), r.stdout, r.stderr)
	return r
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

// assertNothingLeft checks no QEMU process and no run folder outlive kiln.
func assertNothingLeft(t *testing.T) {
	t.Helper()
	runDir := filepath.Join(home, "run", "kiln")
	if out, err := exec.Command("pgrep", "-af", "qemu-system.*"+runDir).Output(); err == nil {
		t.Errorf("QEMU processes left running:\n%s", out)
	}
	entries, _ := os.ReadDir(runDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "run-") || strings.HasPrefix(e.Name(), "build-") {
			t.Errorf("run folder left behind: %s", filepath.Join(runDir, e.Name()))
		}
	}
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

func processAlive(pid int) bool { return workdir.Running(pid) }
