package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/images"
)

const helloTemplate = "../examples/hello/hello.kiln.hcl"

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
	r := kilnCmd(t, 20*time.Minute, "build", helloTemplate)
	if r.code != 0 {
		t.Fatalf("kiln build: exit %d", r.code)
	}
	if !strings.HasPrefix(r.stdout, "hello:1.0.0\nsha256:") {
		t.Errorf("build output does not start with the ref and digest:\n%s", r.stdout)
	}
	buildInstance := instanceIDLine.FindStringSubmatch(r.stderr)
	if buildInstance == nil {
		t.Fatal("the build did not print its instance id")
	}

	m := showImage(t, "hello:1.0.0")
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
	if len(m.Provisioners) != 3 || m.Variables["version"] != "1.0.0" || m.TemplateDigest == "" {
		t.Errorf("manifest lacks provisioners, variables or template digest: %+v", m)
	}

	// Two boots of the same image: the app answers, the package and config
	// are there, nothing of the build remains, and each boot is unique.
	type boot struct{ machineID, hostKey string }
	boots := make([]boot, 2)
	t.Run("boots", func(t *testing.T) {
		for i := range boots {
			t.Run("boot", func(t *testing.T) {
				t.Parallel()
				r := kilnCmd(t, 10*time.Minute, "run", "hello:1.0.0", "--memory", "512M", "--", strings.Join([]string{
					"curl -s localhost:8080",
					"jq --version",
					"cat /etc/hello/hello.env",
					"echo machine-id=$(cat /etc/machine-id)",
					"echo host-key=$(sudo cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub)",
					"echo cloud-instances=$(sudo ls /var/lib/cloud/instances | tr '\\n' ' ')",
					"echo kiln-users=$(grep -c '^kiln:' /etc/passwd)",
					"echo build-key=$(sudo grep -rl 'kiln@hello-build' /home /root /etc 2>/dev/null | wc -l)",
				}, "; "))
				if r.code != 0 {
					t.Fatalf("exit %d", r.code)
				}
				out := r.stdout
				for _, want := range []string{"hello from hello 1.0.0", "jq-1.6", "APP_VERSION=1.0.0", "kiln-users=1\n", "build-key=0\n"} {
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

	// 1.1.0 layered on 1.0.0.
	r = kilnCmd(t, 20*time.Minute, "build", helloTemplate, "--var", "version=1.1.0", "--var", "base=hello:1.0.0")
	if r.code != 0 {
		t.Fatalf("kiln build 1.1.0: exit %d", r.code)
	}
	m2 := showImage(t, "hello:1.1.0")
	if m2.Parent == nil || m2.Parent.Ref != "hello:1.0.0" || m2.Parent.Digest != m.Digest {
		t.Errorf("hello:1.1.0's parent is not hello:1.0.0: %+v", m2.Parent)
	}
	ls := kilnCmd(t, time.Minute, "images", "ls")
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

func TestBuildFailingProvisioner(t *testing.T) {
	before := listImages(t)
	r := kilnCmd(t, 15*time.Minute, "build", "testdata/fail/fail.kiln.hcl")
	if r.code != 3 {
		t.Errorf("kiln build exited %d, want 3 (a provisioner failed)", r.code)
	}
	for _, want := range []string{"provisioner 2 (shell) failed with exit status 3", "about to fail"} {
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
	assertNothingLeft(t)
}
