package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadPackerInput: Packer templates' mistakes and what kiln does not run
// are refused by validate and build alike, through the real binary, with
// nothing left behind (docs/failures.md).
func TestBadPackerInput(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed (apt-get install qemu-utils)")
	}
	bin, err := kilnBinary()
	if err != nil {
		t.Fatal(err)
	}
	env := setupBadInput(t, bin)
	src := func(extra string) string {
		return "variable \"version\" { default = \"1.0\" }\n" +
			"source \"qemu\" \"x\" {\n  iso_url = \"tiny.qcow2\"\n  iso_checksum = \"none\"\n  disk_image = true\n" +
			"  ssh_username = \"packer\"\n  ssh_password = \"packer\"\n  vm_name = \"x.qcow2\"\n" + extra + "}\n" +
			"build {\n  sources = [\"source.qemu.x\"]\n}\n"
	}
	env.write(t, map[string]string{
		"vnc.pkr.hcl":     src("  boot_command = [\"<enter>\"]\n  vnc_bind_address = \"0.0.0.0\"\n"),
		"outdir.pkr.hcl":  src("  output_directory = \"taken\"\n"),
		"ok.pkr.hcl":      src(""),
		"novalue.pkr.hcl": strings.Replace(src(""), "variable \"version\" { default = \"1.0\" }\n", "variable \"version\" {}\n", 1),
	})
	os.MkdirAll(filepath.Join(env.dir, "taken"), 0o755)
	env.write(t, map[string]string{"taken/x.qcow2": "an earlier build's image\n"})
	for _, cmd := range []string{"validate", "build"} {
		t.Run(cmd, func(t *testing.T) {
			for _, c := range []badInputCase{
				{name: "boot_command_and_vnc", args: []string{cmd, "vnc.pkr.hcl"}, code: 1, diags: true,
					want: []string{"vnc.pkr.hcl:9:3: Not run by kiln: boot_command: kiln does not type boot_command over VNC",
						"vnc.pkr.hcl:10:3: Not run by kiln: vnc_bind_address: kiln runs QEMU without a display or VNC server"}},
				{name: "unset_variable", args: []string{cmd, "novalue.pkr.hcl", "-var-file=nope.pkrvars.hcl"}, code: 1, diags: true,
					want: []string{"nope.pkrvars.hcl: Cannot read file: no such file or directory",
						`novalue.pkr.hcl:1:1: Unset variable: Variable "version" has no default and no value was given: use -var version=VALUE`}},
				{name: "undefined_var_flag", args: []string{cmd, "ok.pkr.hcl", "-var", "nope=1"}, code: 1,
					want: []string{"kiln " + cmd + `: Undefined -var variable: A value was given with -var for "nope"`}},
				{name: "on_error_ask", args: []string{cmd, "outdir.pkr.hcl", "-on-error=ask"}, code: 2,
					want: []string{`--on-error "ask": use cleanup or abort`}},
			} {
				if cmd == "validate" && c.name == "on_error_ask" {
					continue
				}
				t.Run(c.name, func(t *testing.T) { env.check(t, c) })
			}
		})
	}
	t.Run("build/output_directory_exists", func(t *testing.T) {
		env.check(t, badInputCase{args: []string{"build", "outdir.pkr.hcl"}, code: 1, diags: true,
			want: []string{"Output directory exists: output_directory taken already exists, as Packer would refuse too: remove it or pass -force."}})
		if data, _ := os.ReadFile(filepath.Join(env.dir, "taken", "x.qcow2")); string(data) != "an earlier build's image\n" {
			t.Errorf("the earlier image was touched")
		}
	})
}
