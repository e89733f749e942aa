package template

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to Load as a template. Load must never
// panic, and must return either a Spec or a non-empty Diagnostics whose
// rendering is one problem per line.
func FuzzLoad(f *testing.F) {
	for _, seed := range []string{
		minimal,
		varsTemplate,
		digestTemplate,
		"",
		"image \"x\" {\n",
		"image \"x\" { version = \"${\" }",
		`variable "v" { type = number }` + "\n" + minimal,
		`image "x" { base { url = "https://e/d" checksum = "sha256:00" } }`,
		`image "x" {
  version = "1"
  base { image = "d" }
  provision "shell" { inline = [jsonencode({a = [1, 2]}), yamlencode([null]), format("%d", 1)] }
  cloud_init { user_data = templatefile("motd.tpl", { v = "x" }) }
}`,
	} {
		f.Add([]byte(seed))
	}
	if b, err := os.ReadFile("testdata/full/kiln.hcl"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		// Files the seeds refer to; nothing outside the folder is named.
		dir := writeDir(t, map[string]string{
			"kiln.hcl":  string(src),
			"setup.sh":  "true\n",
			"motd.tpl":  "v=${v}",
			"cc.yaml":   "#cloud-config\n",
			"app/a.txt": "a",
		})
		spec, err := Load(filepath.Join(dir, "kiln.hcl"), Options{Env: noEnv, Vars: map[string]string{}})
		if err == nil {
			if spec == nil || !digestRe.MatchString(spec.TemplateDigest) {
				t.Fatalf("no error, but spec %+v", spec)
			}
			return
		}
		var ds Diagnostics
		if !errors.As(err, &ds) || len(ds) == 0 {
			t.Fatalf("error %T %v is not a non-empty Diagnostics", err, err)
		}
		if spec != nil {
			t.Fatalf("both a spec and an error")
		}
		if n := strings.Count(err.Error(), "\n"); n != len(ds)-1 {
			t.Fatalf("%d diagnostics rendered on %d lines:\n%v", len(ds), n+1, err)
		}
	})
}
