//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/images"
)

const helloTemplate = "../examples/hello/hello.kiln.hcl"

// deployToken is the sensitive variable hello:1.0.0 is built with.
const deployToken = "s3cr3t-e2e-7f3a91"

func showImage(t *testing.T, ref string) images.Manifest {
	t.Helper()
	r := kilnCmd(t, time.Minute, "images", "show", ref, "--json")
	if r.code != 0 {
		t.Fatalf("kiln images show %s: exit %d", ref, r.code)
	}
	var m images.Manifest
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("images show --json: %v\n%s", err, r.stdout)
	}
	return m
}

// needHello makes sure hello:1.0.0 and hello:1.1.0 are in the store, as
// TestBuildHello leaves them, building whichever is missing (with the same
// inputs, so TestRegistry's cache check still holds): a test that needs
// them runs alone as well as after TestBuildHello, and fails rather than
// skips when they cannot be built.
func needHello(t *testing.T) {
	t.Helper()
	builds := []struct {
		ref  string
		args []string
	}{
		{"hello:1.0.0", []string{"build", helloTemplate, "--var", "deploy_token=" + deployToken}},
		{"hello:1.1.0", []string{"build", helloTemplate, "--var", "version=1.1.0", "--var", "base=hello:1.0.0"}},
	}
	for _, b := range builds {
		if kilnCmd(t, time.Minute, "images", "show", b.ref).code == 0 {
			continue
		}
		t.Logf("%s is not in the store (TestBuildHello did not run or failed): building it", b.ref)
		if r := kilnCmd(t, 20*time.Minute, b.args...); r.code != 0 {
			t.Fatalf("building %s, which this test needs: exit %d", b.ref, r.code)
		}
	}
}

func listImages(t *testing.T) string {
	t.Helper()
	r := kilnCmd(t, time.Minute, "images", "ls", "--json")
	if r.code != 0 {
		t.Fatalf("kiln images ls: exit %d", r.code)
	}
	return r.stdout
}

// TestBuildHello is the main job: bake hello 1.0.0 from the base, check it
// from inside two boots, then layer 1.1.0 on it.
func TestBuildHello(t *testing.T) {
	// token is also passed by TestRegistry, whose rebuild must hit the cache.
	const token = deployToken
	packer := filepath.Join(t.TempDir(), "packer-manifest.json")
	r := kilnCmd(t, 20*time.Minute, "build", helloTemplate, "--var", "deploy_token="+token, "--manifest", packer)
	if r.code != 0 {
		t.Fatalf("kiln build: exit %d", r.code)
	}
	// The sensitive variable reached the guest (the script echoes it) but
	// none of kiln's output, logs or manifests.
	if !strings.Contains(r.stderr, "deploy token installed: ") {
		t.Error("the setup script's token line is missing from the output")
	}
	// The last provisioner runs as nobody; the app answers with its version.
	if !strings.Contains(r.stderr, "nobody sees: hello from hello 1.0.0") {
		t.Error("the smoke test run as nobody is missing from the output")
	}
	secretIn := map[string]string{"stdout": r.stdout, "stderr": r.stderr}
	for _, f := range []string{packer, filepath.Join(home, "data", "kiln", "images", "logs", "hello", "1.0.0", "build.log")} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Errorf("read %s: %v", f, err)
		}
		secretIn[f] = string(b)
	}
	secretIn["images show --json"] = kilnCmd(t, time.Minute, "images", "show", "hello:1.0.0", "--json").stdout
	for where, text := range secretIn {
		if strings.Contains(text, token) {
			t.Errorf("the sensitive variable's value appears in %s", where)
		}
	}
	if !strings.HasPrefix(r.stdout, "hello:1.0.0\nsha256:") {
		t.Errorf("build output does not start with the ref and digest:\n%s", r.stdout)
	}
	buildInstance := instanceIDLine.FindStringSubmatch(r.stderr)
	if buildInstance == nil {
		t.Fatal("the build did not print its instance id")
	}

	m := showImage(t, "hello:1.0.0")
	// The first build of a base saves the booted guest, before any
	// provisioner ran: privately, and with no trace of the secret.
	if m.Boot != "saved" || m.SavedState == "" || !strings.Contains(r.stderr, "saved the booted guest as "+m.SavedState) {
		t.Errorf("the first build did not save its booted guest: boot %q, saved state %q", m.Boot, m.SavedState)
	}
	stateDir := filepath.Join(home, "cache", "kiln", "saved-states", m.SavedState)
	assertNotIn(t, stateDir, token)

	blob := filepath.Join(home, "data", "kiln", "images", "blobs", "sha256", strings.TrimPrefix(m.Digest, "sha256:"))
	if d, err := images.FileDigest(blob); err != nil || d != m.Digest {
		t.Errorf("blob digest %s (%v) differs from the manifest's %s", d, err, m.Digest)
	}
	if out, err := exec.Command("qemu-img", "check", blob).CombinedOutput(); err != nil {
		t.Errorf("qemu-img check: %v\n%s", err, out)
	}
	if m.Parent == nil || m.Parent.Ref != "debian:12" || m.BackingDigest == "" {
		t.Errorf("manifest does not record the base as parent: %+v", m)
	}
	if len(m.Provisioners) != 4 || m.Variables["version"] != "1.0.0" || m.TemplateDigest == "" {
		t.Errorf("manifest lacks provisioners, variables or template digest: %+v", m)
	}

	// Two boots of the same image: the app answers, the package and config
	// are there, nothing of the build remains, and each boot is unique. The
	// second boots through UEFI on a disk grown to 5G: the built image
	// keeps the base's ESP, and growpart grows its root.
	type boot struct{ machineID, hostKey string }
	boots := make([]boot, 2)
	t.Run("boots", func(t *testing.T) {
		for i := range boots {
			t.Run("boot", func(t *testing.T) {
				t.Parallel()
				args := []string{"run", "hello:1.0.0", "--memory", "512M"}
				if i == 1 {
					args = append(args, "--firmware", "uefi", "--disk-size", "5G")
				}
				r := kilnCmd(t, 10*time.Minute, append(args, "--", strings.Join([]string{
					"curl -s localhost:8080",
					"jq --version",
					"cat /etc/hello/hello.env",
					"echo machine-id=$(cat /etc/machine-id)",
					"echo host-key=$(sudo cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub)",
					"echo cloud-instances=$(sudo ls /var/lib/cloud/instances | tr '\\n' ' ')",
					"echo kiln-users=$(grep -c '^kiln:' /etc/passwd)",
					"echo build-key=$(sudo grep -rl 'kiln@hello-build' /home /root /etc 2>/dev/null | wc -l)",
					// Accounts with a usable password (not locked, not empty).
					"echo passwords=$(sudo awk -F: '$2 != \"\" && $2 !~ /^[!*]/' /etc/shadow | wc -l)",
					"echo token=$(sudo cat /etc/hello/token) mode=$(stat -c %a /etc/hello/token)",
					"echo uefi=$(test -d /sys/firmware/efi && echo yes || echo no)",
					"echo root-bytes=$(df -B1 --output=size / | tail -1)",
				}, "; "))...)
				if r.code != 0 {
					t.Fatalf("exit %d", r.code)
				}
				out := r.stdout
				if i == 1 {
					var size int64
					fmt.Sscan(field(out, "root-bytes"), &size)
					if field(out, "uefi") != "yes" || size < 4<<30 {
						t.Errorf("--firmware uefi --disk-size 5G: uefi=%s, root filesystem %d bytes; want UEFI and a root grown past 4 GiB", field(out, "uefi"), size)
					}
				}
				for _, want := range []string{"hello from hello 1.0.0", "jq-1.6", "APP_VERSION=1.0.0", "kiln-users=1\n", "build-key=0\n", "passwords=0\n", "token=" + token + " mode=600\n"} {
					if !strings.Contains(out, want) {
						t.Errorf("guest output lacks %q:\n%s", want, out)
					}
				}
				if strings.Contains(out, buildInstance[1]) {
					t.Errorf("the build's cloud-init instance %s is still in the image:\n%s", buildInstance[1], out)
				}
				boots[i] = boot{field(out, "machine-id"), field(out, "host-key")}
			})
		}
	})
	if boots[0].machineID == "" || boots[0].machineID == boots[1].machineID {
		t.Errorf("machine-id must be set and differ between boots: %q, %q", boots[0].machineID, boots[1].machineID)
	}
	if boots[0].hostKey == "" || boots[0].hostKey == boots[1].hostKey {
		t.Errorf("SSH host keys must differ between boots: %q, %q", boots[0].hostKey, boots[1].hostKey)
	}

	// A warm build of the same template resumes that guest and bakes the
	// same files, generalised the same way (only the image version differs).
	r = kilnCmd(t, 20*time.Minute, "build", helloTemplate, "--var", "deploy_token="+token, "--version", "1.0.0-warm")
	if r.code != 0 {
		t.Fatalf("warm kiln build: exit %d", r.code)
	}
	mw := showImage(t, "hello:1.0.0-warm")
	if mw.Boot != "resumed" || mw.SavedState != m.SavedState || !strings.Contains(r.stderr, "resume (") {
		t.Errorf("the second build did not resume the saved guest %s: boot %q, saved state %q", m.SavedState, mw.Boot, mw.SavedState)
	}
	if d := diffTrees(rootFiles(t, "hello:1.0.0"), rootFiles(t, "hello:1.0.0-warm")); len(d) > 0 {
		t.Errorf("the warm build's root filesystem differs from the cold build's:\n%s", strings.Join(d, "\n"))
	}
	// A build whose only provisioner echoes resumes too, with the guest's
	// clock set to the host's.
	r = kilnCmd(t, 10*time.Minute, "build", "testdata/warm/warm.kiln.hcl", "--var", "clock_url="+startClockServer(t))
	if r.code != 0 {
		t.Fatalf("kiln build of the echo template: exit %d", r.code)
	}
	if me := showImage(t, "hello:0.0.0-echo"); me.Boot != "resumed" || me.SavedState != m.SavedState {
		t.Errorf("the echo build did not resume %s: boot %q, saved state %q", m.SavedState, me.Boot, me.SavedState)
	}
	if off := clockOffset(t, r.stderr); off > 2*time.Second {
		t.Errorf("the resumed guest's clock is %s off the host's", off)
	}
	ls := kilnCmd(t, time.Minute, "cache", "ls", "--json")
	if !strings.Contains(ls.stdout, `"key": "`+m.SavedState+`"`) || !strings.Contains(ls.stdout, `"base": "debian:12"`) {
		t.Errorf("kiln cache ls does not list the saved state:\n%s", ls.stdout)
	}

	// 1.1.0 layered on 1.0.0.
	r = kilnCmd(t, 20*time.Minute, "build", helloTemplate, "--var", "version=1.1.0", "--var", "base=hello:1.0.0")
	if r.code != 0 {
		t.Fatalf("kiln build 1.1.0: exit %d", r.code)
	}
	m2 := showImage(t, "hello:1.1.0")
	if m2.Parent == nil || m2.Parent.Ref != "hello:1.0.0" || m2.Parent.Digest != m.Digest {
		t.Errorf("hello:1.1.0's parent is not hello:1.0.0: %+v", m2.Parent)
	}
	ls = kilnCmd(t, time.Minute, "images", "ls")
	for _, want := range []string{"hello:1.0.0", "hello:1.1.0", "debian:12"} {
		if !strings.Contains(ls.stdout, want) {
			t.Errorf("kiln images ls lacks %s:\n%s", want, ls.stdout)
		}
	}
	assertNothingLeft(t)
}

func field(out, name string) string {
	m := regexp.MustCompile(`(?m)^` + name + `=(.*)$`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(m[1])
}

// TestBuildFailingProvisioner fills the guest's disk in a provisioner with
// --on-error=abort: kiln names the provisioner, shows its last lines, says
// the disk is full, exits 3, stores nothing and keeps the VM reachable with
// the command it prints; once that VM is stopped, the next kiln command
// removes its folder.
func TestBuildFailingProvisioner(t *testing.T) {
	before := listImages(t)
	r := kilnCmd(t, 15*time.Minute, "build", "testdata/fail/fail.kiln.hcl", "--on-error=abort")
	if r.code != 3 {
		t.Errorf("kiln build exited %d, want 3 (a provisioner failed)", r.code)
	}
	for _, want := range []string{"provisioner 2 (shell) failed with exit status 1", "about to fill the disk",
		"No space left on device", "the guest's disk is full: raise disk_size", "still running for debugging"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if after := listImages(t); after != before {
		t.Errorf("the store changed:\nbefore %s\nafter %s", before, after)
	}
	tmp, _ := os.ReadDir(filepath.Join(home, "data", "kiln", "images", "tmp"))
	if len(tmp) != 0 {
		t.Errorf("files left in the store's tmp folder: %v", tmp)
	}

	sshLine := regexp.MustCompile(`(?m)^\s+ssh (.+)$`).FindStringSubmatch(r.stderr)
	removeLine := regexp.MustCompile(`remove it with: kill (\d+); rm -rf (\S+)`).FindStringSubmatch(r.stderr)
	if sshLine == nil || removeLine == nil {
		t.Fatalf("kiln did not say how to reach and remove the kept VM:\n%s", r.stderr)
	}
	pid, _ := strconv.Atoi(removeLine[1])
	dir := removeLine[2]
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL); os.RemoveAll(dir) })

	// The kept VM answers on the printed command, with its host key verified.
	args := append([]string{"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"}, strings.Fields(sshLine[1])...)
	out, err := exec.Command("ssh", append(args, "df --output=avail -B1M / | tail -n 1")...).CombinedOutput()
	if err != nil {
		t.Errorf("the printed ssh command does not reach the kept VM: %v\n%s", err, out)
	} else if avail, _ := strconv.Atoi(strings.TrimSpace(string(out))); avail > 1 {
		t.Errorf("the kept VM's disk has %d MiB free; the provisioner should have filled it", avail)
	}
	assertPrivate(t, dir)
	assertLoopbackOnly(t, pid)

	// A kept VM is not stale work while it runs...
	kilnCmd(t, time.Minute, "images", "ls")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the next command removed the kept VM's folder while it ran: %v", err)
	}
	// ...and is once it has been stopped as the message says.
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(t, pid)
	ls := kilnCmd(t, time.Minute, "images", "ls")
	if !strings.Contains(ls.stderr, "removed stale work") {
		t.Errorf("the next command did not report removing the stopped VM's folder:\n%s", ls.stderr)
	}
	assertNothingLeft(t)
}
