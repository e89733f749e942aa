package template

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/bake"
)

// noEnv keeps tests independent of the environment they run in.
var noEnv = []string{}

// writeDir writes files (slash paths relative to a new temporary folder)
// and returns the folder. Names ending in ".sh" are made executable.
func writeDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		// Modes feed the digest; do not let the umask decide them.
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// load writes a template (and any other files) and loads it.
func load(t testing.TB, tmpl string, files map[string]string, opts Options) (*bake.Spec, string, error) {
	t.Helper()
	all := map[string]string{"kiln.hcl": tmpl}
	for k, v := range files {
		all[k] = v
	}
	dir := writeDir(t, all)
	if opts.Env == nil {
		opts.Env = noEnv
	}
	spec, err := Load(filepath.Join(dir, "kiln.hcl"), opts)
	return spec, dir, err
}

func mustLoad(t testing.TB, tmpl string, files map[string]string, opts Options) (*bake.Spec, string) {
	t.Helper()
	spec, dir, err := load(t, tmpl, files, opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return spec, dir
}

func diagnostics(t testing.TB, err error) Diagnostics {
	t.Helper()
	var ds Diagnostics
	if !errors.As(err, &ds) {
		t.Fatalf("error is %T, not Diagnostics: %v", err, err)
	}
	return ds
}

var digestRe = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func TestLoadFull(t *testing.T) {
	dir, err := filepath.Abs("testdata/full")
	if err != nil {
		t.Fatal(err)
	}
	// A relative path, as a user would type it; the Spec is absolute.
	got, err := Load("testdata/full/kiln.hcl", Options{Env: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if !digestRe.MatchString(got.TemplateDigest) {
		t.Errorf("TemplateDigest = %q", got.TemplateDigest)
	}
	got.TemplateDigest = ""
	abs := func(p string) string { return filepath.Join(dir, p) }
	want := &bake.Spec{
		Name:      "hello",
		Version:   "1.0.0",
		Base:      bake.Source{File: abs("base.qcow2")},
		DiskSize:  4 << 30,
		CPUs:      2,
		MemoryMiB: 1536,
		UserData:  []byte("#cloud-config\npackages: [curl]\n"),
		Provisioners: []bake.Provisioner{
			{Type: "file", Source: abs("app") + "/", Destination: "/opt/hello", Direction: "upload"},
			{
				Type:         "shell",
				Inline:       []string{"apt-get install -y jq", "echo 1.0.0 > /etc/hello-version"},
				Env:          map[string]string{"APP_VERSION": "1.0.0", "DEBUG": "false", "TOKEN": "s3cret"},
				ExpectReboot: true,
				Timeout:      5 * time.Minute,
			},
			{Type: "shell", Scripts: []string{abs("setup.sh")}},
			{Type: "shell", Scripts: []string{abs("setup.sh"), abs("scripts/second.sh")}, User: "nobody"},
			{Type: "file", Source: "/var/log/hello.log", Destination: abs("out/hello.log"), Direction: "download"},
		},
		Generalize:      false,
		Compression:     "zlib",
		Flatten:         true,
		BootTimeout:     10 * time.Minute,
		ShutdownTimeout: 2 * time.Minute,
		TemplatePath:    abs("kiln.hcl"),
		Variables: []bake.Variable{
			{Name: "api_token", Value: "s3cret", Sensitive: true},
			{Name: "cpus", Value: "2"},
			{Name: "debug", Value: "false"},
			{Name: "version", Value: "1.0.0"},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Spec mismatch\n got: %+v\nwant: %+v", *got, *want)
	}
}

const minimal = `image "hello" {
  version = "1.0.0"
  base { image = "debian:12" }
}
`

func TestDefaults(t *testing.T) {
	got, _ := mustLoad(t, minimal, nil, Options{})
	if got.Name != "hello" || got.Version != "1.0.0" || got.Base != (bake.Source{Image: "debian:12"}) {
		t.Errorf("got %+v", got)
	}
	// Unset values are zero, which build.Spec documents as "the default",
	// except those the template language defines itself.
	if got.DiskSize != 0 || got.CPUs != 0 || got.MemoryMiB != 0 || got.BootTimeout != 0 || got.Flatten || got.UserData != nil {
		t.Errorf("unexpected non-zero values: %+v", got)
	}
	if !got.Generalize || got.Compression != "zstd" || !got.Warm {
		t.Errorf("Generalize = %v, Compression = %q, Warm = %v; want true, zstd, true", got.Generalize, got.Compression, got.Warm)
	}
	if got.Variables == nil || len(got.Variables) != 0 {
		t.Errorf("Variables = %#v, want empty", got.Variables)
	}
}

func TestBaseSources(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	tests := []struct {
		base string
		want bake.Source
	}{
		{`image = "debian:12"`, bake.Source{Image: "debian:12"}},
		{`image = "ghcr.io/acme/hello:1.0"`, bake.Source{Image: "ghcr.io/acme/hello:1.0"}}, // pulled on first use
		{`url = "https://example.com/d.qcow2"` + "\n checksum = \"sha256:" + strings.ToUpper(sum) + `"`,
			bake.Source{URL: "https://example.com/d.qcow2", Checksum: "sha256:" + sum}},
		{`url = "http://example.com/d.qcow2"` + "\n checksum = \"sha512:" + sum + sum + `"`,
			bake.Source{URL: "http://example.com/d.qcow2", Checksum: "sha512:" + sum + sum}},
		{`url = "https://example.com/d.qcow2"` + "\n checksum = \"file:https://example.com/SHA256SUMS\"",
			bake.Source{URL: "https://example.com/d.qcow2", Checksum: "file:https://example.com/SHA256SUMS"}},
	}
	for _, tt := range tests {
		tmpl := "image \"x\" {\n version = \"1\"\n base {\n " + tt.base + "\n }\n}\n"
		got, _ := mustLoad(t, tmpl, nil, Options{})
		if got.Base != tt.want {
			t.Errorf("%s: Base = %+v, want %+v", tt.base, got.Base, tt.want)
		}
	}
}

func TestSizes(t *testing.T) {
	tests := []struct {
		disk, memory string
		size         int64
		mib          int
	}{
		{"4G", "1G", 4 << 30, 1024},
		{"512M", "512MiB", 512 << 20, 512},
		{"1T", "2GB", 1 << 40, 2048},
		{"10GiB", "1.5G", 10 << 30, 1536},
		{"1048576K", "2048m", 1 << 30, 2048},
	}
	for _, tt := range tests {
		tmpl := strings.Replace(minimal, "version", `disk_size = "`+tt.disk+`"`+"\n  memory = \""+tt.memory+"\"\n  version", 1)
		got, _ := mustLoad(t, tmpl, nil, Options{})
		if got.DiskSize != tt.size || got.MemoryMiB != tt.mib {
			t.Errorf("%s/%s: DiskSize %d MemoryMiB %d; want %d %d", tt.disk, tt.memory, got.DiskSize, got.MemoryMiB, tt.size, tt.mib)
		}
	}
}

// TestNullIsUnset checks the Terraform convention that lets a conditional
// leave a setting out.
func TestNullIsUnset(t *testing.T) {
	tmpl := `variable "big" {
  type    = bool
  default = false
}
image "hello" {
  version   = "1"
  disk_size = var.big ? "10G" : null
  cpus      = null
  base { image = "debian:12" }
}
`
	got, _ := mustLoad(t, tmpl, nil, Options{})
	if got.DiskSize != 0 || got.CPUs != 0 {
		t.Errorf("DiskSize %d, CPUs %d; want 0, 0", got.DiskSize, got.CPUs)
	}
	got, _ = mustLoad(t, tmpl, nil, Options{Vars: map[string]string{"big": "true"}})
	if got.DiskSize != 10<<30 {
		t.Errorf("DiskSize %d; want 10G", got.DiskSize)
	}
}

func TestDiagnosticString(t *testing.T) {
	ds := Diagnostics{
		{File: "a.hcl", Line: 3, Column: 5, Summary: "Unsupported argument", Detail: "An argument named \"x\"\nis not expected here."},
		{File: "b.hcl", Summary: "Cannot read var file", Detail: "no such file"},
		{Summary: "Undeclared variable", Detail: "nope"},
	}
	want := "a.hcl:3:5: Unsupported argument: An argument named \"x\" is not expected here.\n" +
		"b.hcl: Cannot read var file: no such file\n" +
		"Undeclared variable: nope"
	if got := ds.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
}

func TestMissingTemplate(t *testing.T) {
	err := Validate(filepath.Join(t.TempDir(), "nope.hcl"), Options{Env: noEnv})
	ds := diagnostics(t, err)
	if len(ds) != 1 || !strings.HasSuffix(ds[0].File, "nope.hcl") || ds[0].Summary != "Cannot read template" {
		t.Errorf("got %v", err)
	}
}

func TestJSONTemplate(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"kiln.json": `{
  "variable": {"v": {"default": "2.0"}},
  "image": {"hello": {"version": "${var.v}", "base": {"image": "debian:12"}, "cpus": 4}}
}`,
	})
	got, err := Load(filepath.Join(dir, "kiln.json"), Options{Env: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != "2.0" || got.CPUs != 4 || got.Base.Image != "debian:12" {
		t.Errorf("got %+v", got)
	}
}

func TestValidateMatchesLoad(t *testing.T) {
	_, dir, loadErr := load(t, "image \"x\" {}\n", nil, Options{})
	valErr := Validate(filepath.Join(dir, "kiln.hcl"), Options{Env: noEnv})
	if loadErr == nil || valErr == nil || loadErr.Error() != valErr.Error() {
		t.Errorf("Load: %v\nValidate: %v", loadErr, valErr)
	}
	if err := Validate("testdata/full/kiln.hcl", Options{Env: noEnv}); err != nil {
		t.Errorf("Validate(full): %v", err)
	}
}
