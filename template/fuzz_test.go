package template

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/bake"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/provision"
)

// fuzzFiles are the files next to the template in FuzzLoad, so that seeds
// (examples/hello and testdata/full among them) can load successfully.
var fuzzFiles = map[string]string{
	"setup.sh":          "true\n",
	"scripts/second.sh": "true\n",
	"motd.tpl":          "v=${v}",
	"cc.yaml":           "#cloud-config\n",
	"cloud-config.yaml": "#cloud-config\npackages: [curl]\n",
	"base.qcow2":        "not really a qcow2",
	"app/a.txt":         "a",
}

// FuzzLoad feeds arbitrary bytes to Load as a template. Load must never
// panic, and must return either a Spec that keeps every promise of
// build.Spec, with a digest that does not change from one load to the
// next, or a non-empty Diagnostics with every problem at a FILE:LINE:COL
// inside the template, rendered one per line; never both.
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
	// Load only reads, so the files are written once; each input replaces
	// the template.
	dir := writeDir(f, fuzzFiles)
	path := filepath.Join(dir, "kiln.hcl")
	f.Fuzz(func(t *testing.T, src []byte) {
		if err := os.WriteFile(path, src, 0o644); err != nil {
			t.Fatal(err)
		}
		opts := Options{Env: noEnv, Vars: map[string]string{}}
		spec, err := Load(path, opts)
		if err != nil {
			if spec != nil {
				t.Fatalf("both a spec and an error")
			}
			checkDiagnostics(t, err, path, src)
			return
		}
		if spec == nil {
			t.Fatal("neither a spec nor an error")
		}
		checkSpec(t, spec, path)
		// The build cache keys on the digest: loading again gives the same.
		again, err := Load(path, opts)
		if err != nil || again.TemplateDigest != spec.TemplateDigest {
			t.Fatalf("second load: %v, digest %s then %v", err, spec.TemplateDigest, again)
		}
	})
}

// checkDiagnostics checks that err is a non-empty Diagnostics, rendered one
// per line, each at a position inside the file at path, whose content is
// src: the template names no other file, --var and the environment are
// empty, so every problem can be pointed at.
func checkDiagnostics(t *testing.T, err error, path string, src []byte) {
	t.Helper()
	var ds Diagnostics
	if !errors.As(err, &ds) || len(ds) == 0 {
		t.Fatalf("error %T %v is not a non-empty Diagnostics", err, err)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(ds) {
		t.Fatalf("%d diagnostics rendered on %d lines:\n%v", len(ds), len(lines), err)
	}
	maxLine := strings.Count(string(src), "\n") + 1
	for i, d := range ds {
		if d.File != path || d.Line < 1 || d.Line > maxLine || d.Column < 1 || d.Summary == "" {
			t.Fatalf("diagnostic %+v has no position in %s (%d lines):\n%v", d, path, maxLine, err)
		}
		if !strings.HasPrefix(lines[i], path+":") {
			t.Fatalf("diagnostic %q does not start with %s:LINE:COL", lines[i], path)
		}
	}
}

// checkSpec checks the promises build.Spec makes, and those of the
// template language, for a spec Load returned.
func checkSpec(t *testing.T, s *bake.Spec, path string) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("accepted an invalid spec: "+format+"\n%+v", append(args, *s)...)
	}
	if !digestRe.MatchString(s.TemplateDigest) {
		fail("digest %q", s.TemplateDigest)
	}
	if s.TemplatePath != path {
		fail("template path %q, want %q", s.TemplatePath, path)
	}
	if images.CheckName(s.Name) != nil || images.CheckVersion(s.Version) != nil {
		fail("name %q, version %q", s.Name, s.Version)
	}
	if _, err := images.ParseRef(s.Name + ":" + s.Version); err != nil {
		fail("%v", err)
	}
	b := s.Base
	n := 0
	for _, v := range []string{b.File, b.URL, b.Image} {
		if v != "" {
			n++
		}
	}
	switch {
	case n != 1:
		fail("%d base sources", n)
	case b.URL != "" && checkChecksum(b.Checksum) != nil:
		fail("base url with checksum %q", b.Checksum)
	case b.URL == "" && b.Checksum != "":
		fail("checksum %q without a url", b.Checksum)
	case b.File != "" && !filepath.IsAbs(b.File):
		fail("relative base file %q", b.File)
	}
	if b.Image != "" {
		if _, err := images.ParseRef(b.Image); err != nil {
			fail("base image: %v", err)
		}
	}
	if s.DiskSize < 0 || s.DiskSize%(1<<20) != 0 || s.CPUs < 0 || s.MemoryMiB < 0 ||
		s.BootTimeout < 0 || s.ShutdownTimeout < 0 || !slices.Contains(compressions, s.Compression) {
		fail("out-of-range setting")
	}
	for _, p := range s.Provisioners {
		switch p.Type {
		case "shell":
			if (len(p.Inline) > 0) == (len(p.Scripts) > 0) || p.Timeout < 0 {
				fail("shell provisioner %+v", p)
			}
			for _, sc := range p.Scripts {
				if !filepath.IsAbs(sc) {
					fail("relative script %q", sc)
				}
			}
			for k := range p.Env {
				if !provision.ValidEnvName(k) {
					fail("environment variable %q", k)
				}
			}
			if p.User != "" && !provision.ValidUserName(p.User) {
				fail("user %q", p.User)
			}
		case "file":
			local := p.Source
			if p.Direction == "download" {
				local = p.Destination
			} else if p.Direction != "upload" {
				fail("direction %q", p.Direction)
			}
			if p.Source == "" || p.Destination == "" || !filepath.IsAbs(local) {
				fail("file provisioner %+v", p)
			}
		default:
			fail("provisioner type %q", p.Type)
		}
	}
	if !sort.SliceIsSorted(s.Variables, func(i, j int) bool { return s.Variables[i].Name < s.Variables[j].Name }) {
		fail("variables not sorted by name")
	}
}
