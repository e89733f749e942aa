package packer

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/bake"
	"github.com/kiln-dev/kiln/template"
)

// workdir is a working directory with an SSH key, as a Packer user has.
func workdir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "key"), []byte("not parsed at load time\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "key.pub"), []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake packer@test\n"), 0o644)
	return dir
}

func load(t *testing.T, path string, opts Options) *bake.Spec {
	t.Helper()
	spec, err := Load(path, opts)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	return spec
}

const e2eTemplates = "../e2e/testdata/packer"

// TestCDFilesTemplate maps the folder template of the e2e test.
func TestCDFilesTemplate(t *testing.T) {
	dir := workdir(t)
	abs, _ := filepath.Abs(filepath.Join(e2eTemplates, "cdfiles"))
	spec := load(t, abs, Options{Dir: dir, Env: []string{}, Vars: []VarArg{
		{Name: "image_url", Value: "http://mirror.test/images/bookworm/debian-12-genericcloud-amd64.qcow2"},
		{Name: "ssh_private_key_file", Value: "key"},
	}})
	if spec.Name != "debian-app" || spec.Version != "1.0.0" || spec.BuildName != "debian" {
		t.Errorf("name %q version %q build %q", spec.Name, spec.Version, spec.BuildName)
	}
	if spec.Base.URL != "http://mirror.test/images/bookworm/debian-12-genericcloud-amd64.qcow2" ||
		spec.Base.Checksum != "file:http://mirror.test/images/bookworm/SHA256SUMS" {
		t.Errorf("base = %+v", spec.Base)
	}
	if spec.DiskSize != 3<<30 || spec.CPUs != 2 || spec.MemoryMiB != 768 || spec.Accel != "kvm" {
		t.Errorf("disk %d cpus %d memory %d (the auto.pkrvars.hcl file sets 768) accel %q", spec.DiskSize, spec.CPUs, spec.MemoryMiB, spec.Accel)
	}
	if spec.Seed == nil || spec.Seed.ISOLabel != "cidata" || string(spec.Seed.ISOFiles["meta-data"]) != "instance-id: packer-debian\nlocal-hostname: packer-debian\n" {
		t.Fatalf("seed = %+v", spec.Seed)
	}
	if ud := string(spec.Seed.ISOFiles["user-data"]); !strings.Contains(ud, "- ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake packer@test\n") {
		t.Errorf("templatefile did not put the key into user-data:\n%s", ud)
	}
	if spec.Login == nil || spec.Login.User != "packer" || spec.Login.PrivateKeyFile != filepath.Join(dir, "key") || spec.BootTimeout != 30*time.Minute {
		t.Errorf("login = %+v, boot timeout %s", spec.Login, spec.BootTimeout)
	}
	if spec.ShutdownCommand != "sudo shutdown -P now" || spec.Generalize || !spec.SkipCloudInitWait {
		t.Errorf("shutdown %q generalize %v skip wait %v", spec.ShutdownCommand, spec.Generalize, spec.SkipCloudInitWait)
	}
	if o := spec.Output; o == nil || o.Dir != "output-debian-app" || o.Name != "debian-app.qcow2" || o.Format != "qcow2" {
		t.Errorf("output = %+v", spec.Output)
	}
	if len(spec.Provisioners) != 4 {
		t.Fatalf("%d provisioners", len(spec.Provisioners))
	}
	p0, p1, p2 := spec.Provisioners[0], spec.Provisioners[1], spec.Provisioners[2]
	if p0.Inline[1] != "echo 'build=app source=debian team=platform' | sudo tee /etc/packer-build" || p0.ExecuteCommand != defaultExecute {
		t.Errorf("shell 1 = %+v", p0)
	}
	if p1.Type != "file" || p1.Source != filepath.Join(abs, "files", "motd") || p1.Destination != "/tmp/motd" {
		t.Errorf("file = %+v", p1)
	}
	if p2.Env["APP_VERSION"] != "1.0.0" || len(p2.Env["BUILT"]) != len("20060102-1504") || p2.ExecuteCommand != "chmod +x {{ .Path }}; sudo -E sh -c '{{ .Vars }} {{ .Path }}'" ||
		p2.Scripts[0] != filepath.Join(abs, "scripts", "setup.sh") {
		t.Errorf("shell 2 = %+v", p2)
	}
	if spec.Provisioners[3].Type != "breakpoint" {
		t.Errorf("provisioner 4 = %+v", spec.Provisioners[3])
	}
	if len(spec.PostProcessors) != 2 || spec.PostProcessors[0].Type != "manifest" || spec.PostProcessors[0].CustomData["version"] != "1.0.0" ||
		spec.PostProcessors[1].ChecksumTypes[0] != "sha256" || spec.PostProcessors[0].Chain == spec.PostProcessors[1].Chain {
		t.Errorf("post-processors = %+v", spec.PostProcessors)
	}
	if !strings.HasPrefix(spec.TemplateDigest, "sha256:") {
		t.Errorf("digest %q", spec.TemplateDigest)
	}
}

func TestHTTPTemplate(t *testing.T) {
	dir := workdir(t)
	path, _ := filepath.Abs(filepath.Join(e2eTemplates, "http", "debian-http.pkr.hcl"))
	sum := "sha256:" + strings.Repeat("ab", 32)
	spec := load(t, path, Options{Dir: dir, Env: []string{}, Version: "2.0.0", Vars: []VarArg{
		{Name: "image_url", Value: "http://mirror.test/x.qcow2"}, {Name: "image_checksum", Value: sum},
	}})
	if spec.Name != "debian-http" || spec.Version != "2.0.0" || spec.BuildName != "cloud" || spec.Base.Checksum != sum {
		t.Errorf("name %q version %q build %q checksum %q", spec.Name, spec.Version, spec.BuildName, spec.Base.Checksum)
	}
	if spec.DiskSize != 0 {
		t.Errorf("skip_resize_disk: disk size %d", spec.DiskSize)
	}
	if spec.Seed == nil || spec.Seed.HTTPDir != filepath.Join(filepath.Dir(path), "http") || spec.Seed.ISOLabel != "" {
		t.Errorf("seed = %+v", spec.Seed)
	}
	if strings.Join(spec.QEMUArgs, " ") != "-smbios type=1,serial=ds=nocloud-net;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/" {
		t.Errorf("qemuargs = %q", spec.QEMUArgs)
	}
	if spec.Login.Password != "packer" || !spec.Output.Compress || spec.ShutdownTimeout != 3*time.Minute {
		t.Errorf("login %+v output %+v", spec.Login, spec.Output)
	}
	// only = ["qemu.other"] leaves the second provisioner out.
	if len(spec.Provisioners) != 1 {
		t.Errorf("provisioners = %+v", spec.Provisioners)
	}
	if got := spec.Provisioners[0].ValidExitCodes; len(got) != 2 || got[1] != 3 {
		t.Errorf("valid_exit_codes = %v", got)
	}
	var sensitive bool
	for _, v := range spec.Variables {
		sensitive = sensitive || (v.Name == "ssh_password" && v.Sensitive)
	}
	if !sensitive {
		t.Errorf("ssh_password not sensitive: %+v", spec.Variables)
	}
	if pp := spec.PostProcessors; len(pp) != 1 || !pp[0].StripPath || pp[0].Output != "build/packer-manifest.json" {
		t.Errorf("post-processors = %+v", pp)
	}
}

// writeTemplate writes files (name → content) into a fresh folder.
func writeTemplate(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const minimalSource = `
source "qemu" "x" {
  iso_url      = "http://mirror.test/x.qcow2"
  iso_checksum = "sha256:` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `"
  disk_image   = true
  ssh_username = "packer"
  ssh_password = "packer"
  vm_name      = "x"
%s
}
build {
  sources = ["source.qemu.x"]
%s
}
`

func TestVariablePrecedence(t *testing.T) {
	dir := writeTemplate(t, map[string]string{
		"t.pkr.hcl": `
variable "version" { default = "default" }
variable "a" { default = "default" }
variable "b" { default = "default" }
variable "c" { default = "default" }
variable "n" {
  type    = number
  default = 1
}
locals { all = "${var.version}/${var.a}/${var.b}/${var.c}/${var.n}" }
` + strings.Replace(minimalSource, "%s", `  output_directory = local.all`, 1),
		"1.auto.pkrvars.hcl": "version = \"auto1\"\na = \"auto1\"\nb = \"auto1\"\n",
		"2.auto.pkrvars.hcl": "a = \"auto2\"\n",
		"f1.pkrvars.hcl":     "b = \"file1\"\nc = \"file1\"\n",
		"f2.pkrvars.hcl":     "c = \"file2\"\n",
	})
	os.WriteFile(filepath.Join(dir, "t.pkr.hcl"), []byte(strings.Replace(mustRead(t, filepath.Join(dir, "t.pkr.hcl")), "%s", "", 1)), 0o644)
	tests := []struct {
		name string
		env  []string
		vars []VarArg
		want string
	}{
		{"auto files over defaults, later auto file wins", nil, nil, "auto1/auto2/auto1/default/1"},
		{"PKR_VAR_ below auto files", []string{"PKR_VAR_c=env", "PKR_VAR_a=env", "PKR_VAR_n=7"}, nil, "auto1/auto2/auto1/env/7"},
		{"-var-file over auto files", nil, []VarArg{{File: filepath.Join(dir, "f1.pkrvars.hcl")}}, "auto1/auto2/file1/file1/1"},
		{"-var and -var-file in command-line order",
			nil, []VarArg{{Name: "c", Value: "flag"}, {File: filepath.Join(dir, "f2.pkrvars.hcl")}, {Name: "b", Value: "flag"}},
			"auto1/auto2/flag/file2/1"},
		{"a later -var wins", nil, []VarArg{{File: filepath.Join(dir, "f2.pkrvars.hcl")}, {Name: "c", Value: "flag"}, {Name: "n", Value: "3"}}, "auto1/auto2/auto1/flag/3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := load(t, dir, Options{Dir: t.TempDir(), Env: tt.env, Vars: tt.vars, Version: "1"})
			if spec.Output.Dir != tt.want {
				t.Errorf("values = %s, want %s", spec.Output.Dir, tt.want)
			}
		})
	}
}

func mustRead(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRefused: every field kiln does not run is refused at its position
// with why.
func TestRefused(t *testing.T) {
	tests := []struct {
		name, source, build, want string
	}{
		{"boot_command", `boot_command = ["<enter>"]`, "", `t.pkr.hcl:10:3: Not run by kiln: boot_command: kiln does not type boot_command over VNC`},
		{"vnc", `vnc_port_min = 5900`, "", `t.pkr.hcl:10:3: Not run by kiln: vnc_port_min: kiln runs QEMU without a display or VNC server`},
		{"floppy", `floppy_files = ["a"]`, "", `t.pkr.hcl:10:3: Not run by kiln: floppy_files: kiln attaches no floppy`},
		{"vtpm", `vtpm = true`, "", `t.pkr.hcl:10:3: Not run by kiln: vtpm: kiln attaches no TPM`},
		{"unknown field", `disk_sise = "3G"`, "", `t.pkr.hcl:10:3: Unsupported argument: kiln does not run the qemu field "disk_sise". Did you mean "disk_size"?`},
		{"iso install", `disk_image = false`, "", `t.pkr.hcl:9:16: Not a cloud image build: kiln boots cloud images (disk_image = true)`},
		{"checksum none", `iso_checksum = "none"`, "", `t.pkr.hcl:9:18: Checksum required: kiln verifies every download`},
		{"md5", `iso_checksum = "md5:0123456789abcdef0123456789abcdef"`, "", `Weak checksum: kiln verifies downloads with sha256 or sha512, not md5`},
		{"winrm", `communicator = "winrm"`, "", `Unsupported communicator: kiln provisions over SSH`},
		{"accelerator", `accelerator = "whpx"`, "", `Unsupported accelerator: kiln runs QEMU with kvm, hvf or tcg`},
		{"ssh_port", `ssh_port = 2222`, "", `Unsupported ssh_port: kiln forwards the guest's port 22, not 2222`},
		{"format", `format = "vmdk"`, "", `Unsupported format: kiln writes qcow2 or raw, not "vmdk"`},
		{"ansible", "", `provisioner "ansible" { playbook_file = "x" }`, `t.pkr.hcl:14:15: Provisioner not run by kiln: kiln runs the shell, file and breakpoint provisioners, not "ansible".`},
		{"shell field", "", `provisioner "shell" {
    inline = ["true"]
    binary = true
  }`, `t.pkr.hcl:16:5: Unsupported argument: kiln does not run the shell provisioner field "binary".`},
		{"post-processor", "", `post-processor "vagrant" {}`, `Post-processor not run by kiln: kiln runs the manifest, checksum, compress and shell-local post-processors, not "vagrant"`},
		{"compress lz4", "", `post-processor "compress" { output = "x.lz4" }`, `Unsupported archive: kiln compresses to .tar.gz, .tgz, .tar, .gz or .zip`},
		{"cleanup provisioner", "", `error-cleanup-provisioner "shell" { inline = ["x"] }`, `Not run by kiln: kiln does not run error-cleanup-provisioner`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.source
			if src == "" {
				src = "headless = true"
			}
			body := "variable \"version\" { default = \"1\" }\n" + strings.Replace(minimalSource, "%s", "  "+src, 1)
			body = strings.Replace(body, "%s", "  "+tt.build, 1)
			body = strings.Replace(body, "  disk_image   = true\n", "", strings.Count(src, "disk_image"))
			body = strings.Replace(body, "  iso_checksum = \"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n", "", strings.Count(src, "iso_checksum"))
			dir := writeTemplate(t, map[string]string{"t.pkr.hcl": body})
			_, err := Load(filepath.Join(dir, "t.pkr.hcl"), Options{Dir: dir, Env: []string{}})
			if err == nil {
				t.Fatalf("accepted:\n%s", body)
			}
			if _, ok := err.(template.Diagnostics); !ok {
				t.Errorf("error is a %T, not Diagnostics", err)
			}
			if got := strings.ReplaceAll(err.Error(), dir+"/", ""); !strings.Contains(got, tt.want) {
				t.Errorf("error:\n%s\nwant it to contain:\n%s\ntemplate:\n%s", got, tt.want, body)
			}
		})
	}
}

func TestValidationAndBuildSelection(t *testing.T) {
	body := `
variable "version" {
  type = string
  default = "1.0.0"
  validation {
    condition     = can(regex("^[0-9.]+$", var.version))
    error_message = "The version must be digits and dots."
  }
}
source "qemu" "b" {
  iso_url = "http://mirror.test/x.qcow2"
  iso_checksum = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  disk_image = true
  ssh_username = "u"
  ssh_password = "p"
}
` + strings.Replace(strings.Replace(minimalSource, "%s", "", 2), "sources = [\"source.qemu.x\"]", "sources = [\"source.qemu.x\", \"source.qemu.b\"]", 1)
	dir := writeTemplate(t, map[string]string{"t.pkr.hcl": body})
	p := filepath.Join(dir, "t.pkr.hcl")
	_, err := Load(p, Options{Dir: dir, Env: []string{}})
	if err == nil || !strings.Contains(err.Error(), "this template has 2 builds (qemu.x, qemu.b): choose one with -only=NAME") {
		t.Errorf("two builds: %v", err)
	}
	spec, err := Load(p, Options{Dir: dir, Env: []string{}, Only: []string{"qemu.b"}})
	if err != nil || spec.BuildName != "b" || spec.Output.Name != "packer-b" || spec.Output.Dir != "output-b" {
		t.Errorf("-only=qemu.b: %+v, %v", spec, err)
	}
	if spec, err := Load(p, Options{Dir: dir, Env: []string{}, Except: []string{"qemu.b"}}); err != nil || spec.BuildName != "x" {
		t.Errorf("-except=qemu.b: %v", err)
	}
	_, err = Load(p, Options{Dir: dir, Env: []string{"PKR_VAR_version=v1"}, Only: []string{"qemu.x"}})
	if err == nil || !strings.Contains(err.Error(), "Invalid value for variable: The version must be digits and dots (var.version, from the environment variable PKR_VAR_version; checked by the validation rule at") {
		t.Errorf("validation: %v", err)
	}
	_, err = Load(p, Options{Dir: dir, Env: []string{}, Only: []string{"qemu.x"}, Vars: []VarArg{{Name: "nope", Value: "1"}}})
	if err == nil || !strings.Contains(err.Error(), `Undefined -var variable: A value was given with -var for "nope"`) {
		t.Errorf("undeclared -var: %v", err)
	}
}

func TestIsTemplate(t *testing.T) {
	dir := writeTemplate(t, map[string]string{"a.pkr.hcl": "", "sub/x.kiln.hcl": ""})
	for p, want := range map[string]bool{
		filepath.Join(dir, "a.pkr.hcl"): true, dir: true, filepath.Join(dir, "sub"): false,
		filepath.Join(dir, "sub", "x.kiln.hcl"): false, "x.pkr.json": true,
	} {
		if got := IsTemplate(p); got != want {
			t.Errorf("IsTemplate(%s) = %v", p, got)
		}
	}
}

// TestHostileTemplateFilesAreBounded: a Packer template gets the limits kiln
// templates have, so deep nesting is one diagnostic, not a stack overflow,
// and a FIFO is refused instead of waited on.
func TestHostileTemplateFilesAreBounded(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, "deep.pkr.hcl")
	os.WriteFile(deep, []byte("locals { x = "+strings.Repeat("[", 100000)+strings.Repeat("]", 100000)+" }\n"), 0o644)
	if _, err := Load(deep, Options{}); err == nil || !strings.Contains(err.Error(), "deep") {
		t.Errorf("deeply nested template: %v", err)
	}
	fifo := filepath.Join(dir, "fifo.pkr.hcl")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := Load(fifo, Options{}); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("FIFO template: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("loading a FIFO template hangs")
	}
}
