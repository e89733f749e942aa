package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/packer"
	"github.com/kiln-dev/kiln/template"
)

// The same trivial build (one shell command on debian:12's blob after
// cloud-init is done, no generalising, ACPI power-off) from a kiln template
// and from a Packer template, which logs in through its own cd_content seed,
// waits for cloud-init itself and also writes its output_directory image.
const trivialKiln = `
image "trivial-kiln" {
  version = "1.0.0"
  base { file = %q }
  generalize = false
  provision "shell" { inline = ["echo trivial"] }
}
`

const trivialPacker = `
source "qemu" "trivial" {
  iso_url          = %q
  iso_checksum     = "none"
  disk_image       = true
  skip_resize_disk = true
  cd_label         = "cidata"
  cd_content = {
    "meta-data" = "instance-id: trivial\n"
    "user-data" = <<-EOT
      #cloud-config
      users:
        - name: packer
          sudo: "ALL=(ALL) NOPASSWD:ALL"
          ssh_authorized_keys: ["${trimspace(file(%q))}"]
    EOT
  }
  ssh_username         = "packer"
  ssh_private_key_file = %q
  output_directory     = %q
  vm_name              = "trivial-packer.qcow2"
}
build {
  sources = ["source.qemu.trivial"]
  # kiln waits for cloud-init before a kiln template's provisioners; a
  # Packer template that needs it waits itself, as this one does.
  provisioner "shell" { inline = ["cloud-init status --wait >/dev/null", "echo trivial"] }
}
`

// dialects times both builds, b.s.buildRuns times each.
func (b *bencher) dialects(base string) {
	dir := filepath.Join(b.home, "dialects")
	os.MkdirAll(dir, 0o755)
	key := filepath.Join(dir, "key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		b.fail("dialects", fmt.Errorf("ssh-keygen: %v: %s", err, out))
		return
	}
	kilnT := filepath.Join(dir, "trivial.kiln.hcl")
	packerT := filepath.Join(dir, "trivial.pkr.hcl")
	os.WriteFile(kilnT, []byte(fmt.Sprintf(trivialKiln, base)), 0o644)
	os.WriteFile(packerT, []byte(fmt.Sprintf(trivialPacker, base, key+".pub", key, filepath.Join(dir, "output"))), 0o644)
	b.r.Section("Template dialects (the same trivial build)")
	for _, c := range []struct {
		name string
		args []string
	}{
		{"kiln template", []string{"build", kilnT}},
		{"Packer template", []string{"build", packerT, "--version", "1.0.0"}},
	} {
		var wall, boot []float64
		for i := range b.s.buildRuns {
			args := c.args
			if i > 0 {
				args = append(args, "--no-cache", "--force")
			}
			res, err := b.kilnRun(30*time.Minute, nil, args...)
			if err != nil {
				b.fail("dialects: "+c.name, err)
				break
			}
			wall = append(wall, res.wall().Seconds())
			for _, l := range strings.Split(res.stderr.Text(), "\n") {
				var s float64
				if _, err := fmt.Sscanf(strings.TrimSpace(l), "==> ssh ready in %fs", &s); err == nil {
					boot = append(boot, s)
				}
			}
		}
		b.add(c.name+": total", Duration, wall, "")
		b.add(c.name+": boot to SSH", Duration, boot, "")
	}
}

// TestDialectTemplatesLoad keeps the two bench templates valid without
// booting anything: both load, to the same trivial build.
func TestDialectTemplatesLoad(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	key := filepath.Join(dir, "key")
	for _, f := range []string{base, key, key + ".pub"} {
		os.WriteFile(f, []byte("x\n"), 0o600)
	}
	kilnT := filepath.Join(dir, "trivial.kiln.hcl")
	packerT := filepath.Join(dir, "trivial.pkr.hcl")
	os.WriteFile(kilnT, []byte(fmt.Sprintf(trivialKiln, base)), 0o644)
	os.WriteFile(packerT, []byte(fmt.Sprintf(trivialPacker, base, key+".pub", key, filepath.Join(dir, "output"))), 0o644)
	ks, err := template.Load(kilnT, template.Options{Env: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := packer.Load(packerT, packer.Options{Env: []string{}, Dir: dir, Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if ks.Base.File != base || ps.Base.File != base || ks.Generalize || ps.Generalize ||
		len(ks.Provisioners) != 1 || len(ps.Provisioners) != 1 || ps.DiskSize != 0 || ks.DiskSize != 0 {
		t.Errorf("the two builds differ:\nkiln   %+v\npacker %+v", ks, ps)
	}
}
