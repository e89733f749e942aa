//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/testregistry"
)

// TestRegistry exercises the store as a registry on the hello images
// (needHello): build cache and Packer manifest, channels, lineage,
// revocation, verify, protected rm, export to every format (booting the
// raw and vmdk exports), import, and gc after a fleet goes down.
func TestRegistry(t *testing.T) {
	needHello(t)
	tmp := t.TempDir()

	// Identical inputs: the cache answers at once, and --manifest writes
	// Packer's manifest.
	pm := filepath.Join(tmp, "packer-manifest.json")
	r := kilnOK(t, "build", helloTemplate, "--var", "deploy_token="+deployToken, "--manifest", pm)
	if !strings.Contains(r.stderr, "identical inputs") || strings.Contains(r.stderr, "[2/8] boot") {
		t.Errorf("a rebuild of identical inputs was not answered from the cache:\n%s", r.stderr)
	}
	var packer struct {
		Builds []struct {
			Name        string
			BuilderType string `json:"builder_type"`
			ArtifactID  string `json:"artifact_id"`
			Files       []struct{ Name string }
		}
		LastRunUUID string `json:"last_run_uuid"`
	}
	if b, err := os.ReadFile(pm); err != nil || json.Unmarshal(b, &packer) != nil || len(packer.Builds) != 1 ||
		packer.Builds[0].BuilderType != "kiln" || len(packer.Builds[0].Files) != 1 || packer.LastRunUUID == "" {
		t.Errorf("packer manifest: %v %+v", err, packer)
	}

	// Channels.
	kilnOK(t, "images", "tag", "hello:1.1.0", "stable")
	kilnOK(t, "images", "tag", "hello:1.0.0", "stable")
	if m := showImage(t, "hello@stable"); m.Version != "1.0.0" {
		t.Errorf("hello@stable = %s, want 1.0.0", m.Version)
	}
	kilnOK(t, "images", "tag", "hello@stable", "--undo")
	if m := showImage(t, "hello@stable"); m.Version != "1.1.0" {
		t.Errorf("after --undo hello@stable = %s, want 1.1.0", m.Version)
	}
	if m := showImage(t, "hello@latest"); m.Version == "1.0.0" {
		t.Errorf("hello@latest is the oldest version")
	}

	// Lineage.
	tree := kilnOK(t, "images", "tree").stdout
	if !strings.Contains(tree, "\n  hello:1.0.0") || !strings.Contains(tree, "\n    hello:1.1.0") {
		t.Errorf("images tree does not nest hello:1.1.0 under hello:1.0.0 under debian:12:\n%s", tree)
	}

	// Revocation: refused without a VM being started, with the reason.
	kilnOK(t, "images", "revoke", "hello:1.0.0", "--reason", "e2e says no")
	r = kilnCmd(t, time.Minute, "run", "hello:1.0.0", "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "e2e says no") {
		t.Errorf("a revoked image was not refused with its reason: exit %d\n%s", r.code, r.stderr)
	}
	kilnOK(t, "images", "unrevoke", "hello:1.0.0")

	// Verify, and rm refusing to take a parent.
	kilnOK(t, "images", "verify")
	r = kilnCmd(t, time.Minute, "images", "rm", "hello:1.0.0")
	if r.code == 0 || !strings.Contains(r.stderr, "hello:1.1.0") {
		t.Errorf("rm of a parent was not refused naming its child: exit %d\n%s", r.code, r.stderr)
	}

	// Export to every format; check each as the clouds would.
	for _, f := range []string{"qcow2", "raw", "vmdk", "vhd", "vhdx"} {
		out := filepath.Join(tmp, "hello."+f)
		kilnOK(t, "images", "export", "hello:1.1.0", "--format", f, "-o", out)
		qf := map[string]string{"vhd": "vpc"}[f]
		if qf == "" {
			qf = f
		}
		info, err := exec.Command("qemu-img", "info", "--output=json", "-f", qf, out).Output()
		if err != nil {
			t.Errorf("qemu-img info %s: %v", out, err)
			continue
		}
		var i struct {
			VirtualSize     int64  `json:"virtual-size"`
			BackingFilename string `json:"backing-filename"`
		}
		json.Unmarshal(info, &i)
		if i.BackingFilename != "" {
			t.Errorf("%s export still has a backing file", f)
		}
		if f == "vhd" && i.VirtualSize%(1<<20) != 0 {
			t.Errorf("vhd virtual size %d is not a whole MiB", i.VirtualSize)
		}
		if f == "qcow2" || f == "vmdk" || f == "vhdx" {
			if out, err := exec.Command("qemu-img", "check", "-f", qf, filepath.Join(tmp, "hello."+f)).CombinedOutput(); err != nil {
				t.Errorf("qemu-img check %s: %v\n%s", f, err, out)
			}
		}
		if d, err := images.FileDigest(out); err != nil {
			t.Error(err)
		} else if sum, _ := os.ReadFile(out + ".sha256"); !strings.HasPrefix(string(sum), strings.TrimPrefix(d, "sha256:")) {
			t.Errorf("%s.sha256 does not match the file", f)
		}
	}

	// Boot the raw and vmdk exports, and meanwhile run a fleet from an
	// imported copy to see gc respect it and then free it.
	kilnOK(t, "images", "import", filepath.Join(tmp, "hello.qcow2"), "--name", "gctest", "--version", "1")
	gcBlob := func() string {
		m := showImage(t, "gctest:1")
		return filepath.Join(home, "data", "kiln", "images", "blobs", "sha256", strings.TrimPrefix(m.Digest, "sha256:"))
	}()
	var wg sync.WaitGroup
	for _, f := range []string{"raw", "vmdk"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := kilnCmd(t, 10*time.Minute, "run", filepath.Join(tmp, "hello."+f), "--memory", "512M", "--", "curl -s localhost:8080")
			if r.code != 0 || !strings.Contains(r.stdout, "hello 1.1.0") {
				t.Errorf("booting the %s export: exit %d, %q", f, r.code, r.stdout)
			}
		}()
	}
	t.Cleanup(func() { kilnCmd(t, 5*time.Minute, "fleet", "down", "gcf") })
	kilnOK(t, "fleet", "up", "gcf", "--image", "gctest:1", "--count", "1")
	r = kilnCmd(t, time.Minute, "images", "rm", "gctest:1")
	if r.code == 0 || !strings.Contains(r.stderr, "fleet gcf") {
		t.Errorf("rm of an image a fleet runs was not refused naming the fleet: exit %d\n%s", r.code, r.stderr)
	}
	kilnOK(t, "images", "rm", "gctest:1", "--force")
	kilnOK(t, "images", "gc")
	if _, err := os.Stat(gcBlob); err != nil {
		t.Errorf("gc removed the blob a running fleet uses: %v", err)
	}
	kilnOK(t, "fleet", "down", "gcf")
	gc := kilnOK(t, "images", "gc")
	if _, err := os.Stat(gcBlob); err == nil {
		t.Errorf("gc after the fleet went down kept its blob:\n%s", gc.stderr)
	}
	wg.Wait()
	assertNothingLeft(t)

	// Share through a real OCI registry: push hello@stable, then boot it
	// straight from the registry on another store, which pulls the chain
	// on first use with its lineage and channel.
	reg := testregistry.Start(t, testregistry.Options{})
	kilnOK(t, "images", "push", "hello@stable", reg.Host+"/kiln/hello")
	want := showImage(t, "hello:1.1.0").Digest
	t.Setenv("KILN_HOME", filepath.Join(tmp, "other")) // from here on, another machine's store
	r = kilnCmd(t, 10*time.Minute, "run", reg.Host+"/kiln/hello:stable", "--memory", "512M", "--", "curl -s localhost:8080")
	if r.code != 0 || !strings.Contains(r.stdout, "hello 1.1.0") || !strings.Contains(r.stderr, "pulled "+reg.Host) {
		t.Errorf("booting hello from the registry: exit %d, %q", r.code, r.stdout)
	}
	tree = kilnOK(t, "images", "tree").stdout
	if !strings.Contains(tree, "\n  hello:1.0.0") || !strings.Contains(tree, "\n    hello:1.1.0") {
		t.Errorf("the pulled chain lost its lineage:\n%s", tree)
	}
	if m := showImage(t, "hello@stable"); m.Digest != want {
		t.Errorf("the pulled hello@stable is %s, not %s", m.Digest, want)
	}
}
