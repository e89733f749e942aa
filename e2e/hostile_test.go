//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBuildRefusesJSONBacking: a base image that would boot perfectly well
// — an overlay on the real Debian base — but names its backing file with a
// json: filename (which could as well describe /etc/shadow or an NBD
// server) is refused by the image gate before anything boots, and nothing
// reaches the store.
func TestBuildRefusesJSONBacking(t *testing.T) {
	dir := t.TempDir()
	evil := filepath.Join(dir, "evil.qcow2")
	backing := `json:{"driver":"qcow2","file":{"driver":"file","filename":"` + baseImg + `"}}`
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", backing, evil, "4G").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	tmpl := filepath.Join(dir, "evil.kiln.hcl")
	if err := os.WriteFile(tmpl, []byte(`image "evil" {
  version = "1.0.0"
  base { file = "evil.qcow2" }
  provision "shell" { inline = ["true"] }
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	before := kilnOK(t, "images", "ls", "--json").stdout

	r := kilnCmd(t, 2*time.Minute, "build", tmpl)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	for _, want := range []string{"kiln build: source: base file: image " + evil, "qcow2 backing file points at json:{… " + baseImg + " …}"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not say %q", want)
		}
	}
	if strings.Contains(r.stderr, "==> boot") {
		t.Error("the build reached its boot step")
	}
	if after := kilnOK(t, "images", "ls", "--json").stdout; after != before {
		t.Errorf("the store changed:\n%s", after)
	}
	assertNothingLeft(t)
}
