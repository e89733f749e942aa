package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kiln-dev/kiln/template"
)

// TestSizesAgree: a size a flag accepts, a template accepts, and the other
// way round (one parser, disk.ParseSize, and one unit rule).
func TestSizesAgree(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "64M").CombinedOutput(); err != nil {
		t.Skipf("qemu-img: %v %s", err, out)
	}
	for _, size := range []string{"4G", "4Gi", "4GiB", "4GB", "1.5G", "0.3K", "8", "4X", ".5G", "2048M"} {
		_, flagErr := parseSizeFlag("--disk-size", size, "8G")
		tpl := filepath.Join(dir, "t.kiln.hcl")
		os.WriteFile(tpl, []byte(fmt.Sprintf("image \"t\" {\n  version = \"1\"\n  base { file = \"base.qcow2\" }\n  disk_size = %q\n}\n", size)), 0o644)
		_, tplErr := template.Load(tpl, template.Options{})
		if (flagErr == nil) != (tplErr == nil) {
			t.Errorf("size %q: flag says %v, template says %v", size, flagErr, tplErr)
		}
	}
}
