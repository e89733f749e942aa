package template

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSecretsNotInDiagnostics: a sensitive variable, a file's contents and
// anything computed from them are named in diagnostics, never shown.
func TestSecretsNotInDiagnostics(t *testing.T) {
	const secret = "hunter2-s3cret"
	const fileSecret = "db-password-from-file"
	vars := `variable "pw" {
  default   = "` + secret + `"
  sensitive = true
}
variable "short" {
  default   = "x9"
  sensitive = true
}
variable "num" {
  type      = number
  default   = 7.5
  sensitive = true
}
`
	cases := []struct{ name, body, label string }{
		{"size", `disk_size = var.pw`, "disk_size: invalid size <sensitive var.pw>"},
		{"memory", `memory = "${var.pw}M"`, "memory: invalid size <value from sensitive var.pw>"},
		{"duration", `boot_timeout = var.pw`, "boot_timeout must be a duration"},
		{"choice", `compression = var.pw`, "<sensitive var.pw> is not a valid compression"},
		{"number", `cpus = var.num`, "cpus must be a whole number"},
		{"derived", `disk_size = upper(var.pw)`, "<value from sensitive var.pw>"},
		{"conditional", `disk_size = var.pw != "" ? "${var.pw}-x" : "4G"`, "<value from sensitive var.pw>"},
		{"short", `disk_size = var.short`, "disk_size needs a unit: <sensitive var.short>"},
		{"path", "provision \"file\" {\n    source = var.pw\n    destination = \"/x\"\n  }", "No file exists at <sensitive var.pw>"},
		{"function error", `cloud_init { user_data = file(var.pw) }`, "no file exists at <sensitive var.pw>"},
		{"tonumber", `cpus = tonumber(var.pw)`, ""},
		{"file contents", `disk_size = file("secret.txt")`, "<the contents of secret.txt>"},
		{"file as path", `provision "shell" { script = trimspace(file("secret.txt")) }`, "<value from the contents of secret.txt>"},
		{"file as number", `cpus = tonumber(file("secret.txt"))`, ""},
		{"templatefile", `disk_size = templatefile("tmpl.txt", { v = "x" })`, "<value from the contents of tmpl.txt>"},
		{"base ref", `base { image = "${var.pw} bad" }`, "<value from sensitive var.pw>"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := c.body
			if !strings.Contains(body, "base {") {
				body = "base { image = \"debian:12\" }\n  " + body
			}
			tmpl := vars + "image \"x\" {\n  version = \"1.0\"\n  " + body + "\n}\n"
			_, _, err := load(t, tmpl, map[string]string{
				"secret.txt": fileSecret + "\n",
				"tmpl.txt":   "templated " + fileSecret + " ${v}",
			}, Options{})
			if err == nil {
				t.Fatal("want a diagnostic")
			}
			msg := err.Error()
			t.Log(msg)
			for _, s := range []string{secret, fileSecret, `"x9"`, "7.5"} {
				if strings.Contains(msg, s) {
					t.Errorf("the diagnostic shows %q", s)
				}
			}
			if c.label != "" && !strings.Contains(msg, c.label) {
				t.Errorf("the diagnostic does not say %q", c.label)
			}
		})
	}
}

// TestSecretsWork: marking values does not change what a template means.
func TestSecretsWork(t *testing.T) {
	tmpl := `variable "pw" {
  default   = "s3cret"
  sensitive = true
}
variable "size" {
  default   = "6G"
  sensitive = true
}
image "x" {
  version   = "1.0"
  base { image = "debian:12" }
  disk_size = var.size
  cloud_init { user_data = file("ud.yaml") }
  provision "shell" {
    inline = ["echo ${upper(var.pw)}", var.pw == "s3cret" ? "yes" : "no", templatefile("t.txt", { p = var.pw })]
    env    = { PW = var.pw }
  }
}
`
	spec, _ := mustLoad(t, tmpl, map[string]string{"ud.yaml": "#cloud-config\npackages: [jq]\n", "t.txt": "pw=${p}"}, Options{})
	if spec.DiskSize != 6<<30 || string(spec.UserData) != "#cloud-config\npackages: [jq]\n" {
		t.Errorf("spec %+v", spec)
	}
	got := spec.Provisioners[0]
	if s := strings.Join(got.Inline, "|"); s != "echo S3CRET|yes|pw=s3cret" || got.Env["PW"] != "s3cret" {
		t.Errorf("inline %q env %v", s, got.Env)
	}
	for _, v := range spec.Variables {
		if !v.Sensitive {
			t.Errorf("%s not sensitive", v.Name)
		}
	}
}

// TestLimits: deep nesting and oversized files give one diagnostic, not a
// Go stack overflow or all of memory.
func TestLimits(t *testing.T) {
	img := func(expr string) string {
		return "image \"x\" {\n  version = \"1.0\"\n  base { image = \"debian:12\" }\n  disk_size = " + expr + "\n}\n"
	}
	deep := strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000)
	cases := []struct {
		name  string
		files map[string]string
		vars  string // a var file's name among files
		want  string
	}{
		{"brackets", map[string]string{"kiln.hcl": img(deep)}, "", "kiln.hcl:4:114: Too deeply nested: The file nests more than 100 levels deep"},
		{"unary", map[string]string{"kiln.hcl": img(strings.Repeat("!", 200_000) + "true")}, "", "more than 4096 operators in one expression"},
		{"ternaries", map[string]string{"kiln.hcl": img(strings.Repeat("true ? 1 : ", 20_000) + "2")}, "", "more than 4096 operators"},
		{"interpolation", map[string]string{"kiln.hcl": img(strings.Repeat(`"${`, 50_000) + "1" + strings.Repeat(`}"`, 50_000))}, "", "nests more than 100 levels"},
		{"directives", map[string]string{"kiln.hcl": img(`"` + strings.Repeat("%{ if true }", 500) + strings.Repeat("%{ endif }", 500) + `"`)}, "", "nests more than 100 levels"},
		{"json", map[string]string{"kiln.hcl.json": `{"image": {"x": {"version": "1.0", "disk_size": ` + deep + `}}}`}, "", "Too deeply nested"},
		{"json template", map[string]string{"kiln.hcl.json": `{"image": {"x": {"version": "1.0", "disk_size": "${` + deep + `}"}}}`}, "", "Too deeply nested"},
		{"var file", map[string]string{"kiln.hcl": "variable \"v\" {}\n" + img("var.v"), "v.hcl": "v = " + deep}, "v.hcl", "v.hcl:1:105: Too deeply nested"},
		{"big template", map[string]string{"kiln.hcl": img(`"4G"`) + "# " + strings.Repeat("x", maxTemplateSize) + "\n"}, "", "Cannot read template: the file is"},
		{"big var file", map[string]string{"kiln.hcl": "variable \"v\" {}\n" + img("var.v"), "v.hcl": "v = \"4G\"\n# " + strings.Repeat("x", maxVarFileSize)}, "v.hcl", "Cannot read var file: the file is"},
		{"templatefile", map[string]string{"kiln.hcl": img(`templatefile("t.txt", {})`), "t.txt": strings.Repeat("${", 500) + "1" + strings.Repeat("}", 500)}, "", "nests too deeply"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeDir(t, c.files)
			name := "kiln.hcl"
			if _, ok := c.files["kiln.hcl.json"]; ok {
				name = "kiln.hcl.json"
			}
			opts := Options{Env: noEnv}
			if c.vars != "" {
				opts.VarFiles = []string{filepath.Join(dir, c.vars)}
			}
			_, err := Load(filepath.Join(dir, name), opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load = %.300v\nwant an error containing %q", err, c.want)
			}
			if n := strings.Count(err.Error(), "\n"); n > 2 {
				t.Errorf("%d lines of diagnostics", n+1)
			}
		})
	}
	// A FIFO as a template or var file is refused, not waited on.
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.hcl")
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(fifo, Options{Env: noEnv}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("FIFO template: %v", err)
	}
	ok := filepath.Join(dir, "ok.hcl")
	os.WriteFile(ok, []byte("variable \"v\" {}\n"+img("var.v")), 0o644)
	if _, err := Load(ok, Options{Env: noEnv, VarFiles: []string{fifo}}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("FIFO var file: %v", err)
	}
}

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o600) }
