package template

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/kiln-dev/kiln/bake"
)

const varsTemplate = `variable "v" {
  default = "default"
}
variable "cpus" {
  type    = number
  default = 1
}
variable "flat" {
  type    = bool
  default = false
}
variable "password" {
  sensitive = true
}
image "hello" {
  version = var.v
  cpus    = var.cpus
  flatten = var.flat
  base { image = "debian:12" }
  provision "shell" {
    inline = ["echo ${var.password}"]
  }
}
`

func TestVariablePrecedence(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"kiln.hcl":     varsTemplate,
		"one.hcl":      "v = \"file1\"\ncpus = 3\n",
		"two.hcl":      "v = \"file2\"\nflat = true\n",
		"vars.json":    `{"v": "json"}`,
		"password.hcl": "password = \"hunter2\"\n",
	})
	f := func(name string) string { return filepath.Join(dir, name) }
	pw := map[string]string{"password": "pw"}
	tests := []struct {
		name    string
		opts    Options
		version string
		cpus    int
		flat    bool
		pass    string
	}{
		{"defaults", Options{Vars: pw}, "default", 1, false, "pw"},
		{"env over default", Options{Vars: pw, Env: []string{"KILN_VAR_v=env", "KILN_VAR_cpus=2", "KILN_VAR_flat=true", "v=not-this", "KILN_VAR_undeclared=ignored"}}, "env", 2, true, "pw"},
		{"var file over env", Options{Vars: pw, Env: []string{"KILN_VAR_v=env", "KILN_VAR_cpus=2"}, VarFiles: []string{f("one.hcl")}}, "file1", 3, false, "pw"},
		{"later var file wins", Options{Vars: pw, VarFiles: []string{f("one.hcl"), f("two.hcl")}}, "file2", 3, true, "pw"},
		{"json var file", Options{Vars: pw, VarFiles: []string{f("one.hcl"), f("vars.json")}}, "json", 3, false, "pw"},
		{"--var over all", Options{Vars: map[string]string{"v": "flag", "cpus": "8", "password": "pw"}, Env: []string{"KILN_VAR_v=env"}, VarFiles: []string{f("one.hcl")}}, "flag", 8, false, "pw"},
		{"required from var file", Options{VarFiles: []string{f("password.hcl")}}, "default", 1, false, "hunter2"},
		{"required from env", Options{Env: []string{"KILN_VAR_password=fromenv"}}, "default", 1, false, "fromenv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Env == nil {
				tt.opts.Env = noEnv
			}
			spec, err := Load(f("kiln.hcl"), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if spec.Version != tt.version || spec.CPUs != tt.cpus || spec.Flatten != tt.flat || spec.Provisioners[0].Inline[0] != "echo "+tt.pass {
				t.Errorf("got version %q cpus %d flatten %v inline %q", spec.Version, spec.CPUs, spec.Flatten, spec.Provisioners[0].Inline)
			}
			wantVars := []bake.Variable{
				{Name: "cpus", Value: itoa(tt.cpus)},
				{Name: "flat", Value: map[bool]string{true: "true", false: "false"}[tt.flat]},
				{Name: "password", Value: tt.pass, Sensitive: true},
				{Name: "v", Value: tt.version},
			}
			if !reflect.DeepEqual(spec.Variables, wantVars) {
				t.Errorf("Variables = %+v, want %+v", spec.Variables, wantVars)
			}
		})
	}
}

// TestEnvDefault checks that a nil Options.Env means the process's own.
func TestEnvDefault(t *testing.T) {
	t.Setenv("KILN_VAR_v", "from-os")
	t.Setenv("KILN_TEST_ENV", "os-value")
	dir := writeDir(t, map[string]string{
		"kiln.hcl": `variable "v" {}
image "hello" {
  version = var.v
  base { image = env("KILN_TEST_ENV") }
}
`,
	})
	spec, err := Load(filepath.Join(dir, "kiln.hcl"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Version != "from-os" || spec.Base.Image != "os-value" {
		t.Errorf("Version %q, Base.Image %q", spec.Version, spec.Base.Image)
	}
}

func TestVersionOverride(t *testing.T) {
	tests := []struct {
		name, tmpl, version, want string
	}{
		{"replaces", minimal, "2.0.0", "2.0.0"},
		{"empty keeps", minimal, "", "1.0.0"},
		{"supplies a missing version", "image \"x\" {\n  base { image = \"d\" }\n}\n", "3.1+build.7", "3.1+build.7"},
		{"replaces an invalid one", "image \"x\" {\n  version = \"not valid!\"\n  base { image = \"d\" }\n}\n", "1.2.3", "1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, _ := mustLoad(t, tt.tmpl, nil, Options{Version: tt.version})
			if spec.Version != tt.want {
				t.Errorf("Version = %q, want %q", spec.Version, tt.want)
			}
		})
	}
}

func TestValueString(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"kiln.hcl": `variable "big" {
  type = number
  default = 12345678901234567890
}
variable "frac" {
  type = number
  default = 0.25
}
variable "s" {
  default = 42
}
` + minimal,
	})
	spec, err := Load(filepath.Join(dir, "kiln.hcl"), Options{Env: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	want := []bake.Variable{{Name: "big", Value: "12345678901234567890"}, {Name: "frac", Value: "0.25"}, {Name: "s", Value: "42"}}
	if !reflect.DeepEqual(spec.Variables, want) {
		t.Errorf("Variables = %+v", spec.Variables)
	}
}
