package template

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

const digestTemplate = `variable "v" { default = "a" }
image "d" {
  version = "1"
  base { image = "debian:12" }
  cloud_init { user_data = file("cc.yaml") }
  provision "file" {
    source      = "app/"
    destination = "/opt/app"
  }
  provision "shell" {
    script = "setup.sh"
    env    = { V = var.v, H = env("KILN_HOST") }
  }
  provision "shell" {
    inline = [templatefile("motd.tpl", { v = var.v })]
  }
}
`

var digestFiles = map[string]string{
	"kiln.hcl":      digestTemplate,
	"cc.yaml":       "#cloud-config\n",
	"setup.sh":      "#!/bin/sh\necho hi\n",
	"motd.tpl":      "v=${v}",
	"app/a.txt":     "a",
	"app/sub/b.txt": "b",
	"unrelated.txt": "x",
}

func digestOf(t *testing.T, dir string, opts Options) string {
	t.Helper()
	if opts.Env == nil {
		opts.Env = []string{"KILN_HOST=h1"}
	}
	spec, err := Load(filepath.Join(dir, "kiln.hcl"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !digestRe.MatchString(spec.TemplateDigest) {
		t.Fatalf("TemplateDigest = %q", spec.TemplateDigest)
	}
	return spec.TemplateDigest
}

func TestDigest(t *testing.T) {
	base := writeDir(t, digestFiles)
	ref := digestOf(t, base, Options{})
	if again := digestOf(t, base, Options{}); again != ref {
		t.Fatalf("same inputs, different digests: %s, %s", ref, again)
	}

	tests := []struct {
		name   string
		change func(t *testing.T, dir string) // applied to a fresh copy
		opts   Options
		same   bool
	}{
		{name: "moved folder", same: true},
		{name: "unrelated file", same: true, change: write("unrelated.txt", "y")},
		{name: "a new unrelated file", same: true, change: write("new.txt", "y")},
		{name: "default value given again", same: true, opts: Options{Vars: map[string]string{"v": "a"}}},
		{name: "template", change: write("kiln.hcl", digestTemplate+"\n")},
		{name: "script", change: write("setup.sh", "#!/bin/sh\necho bye\n")},
		{name: "script mode", change: chmod("setup.sh", 0o644)},
		{name: "file() input", change: write("cc.yaml", "#cloud-config\n# x\n")},
		{name: "templatefile() input", change: write("motd.tpl", "v = ${v}")},
		{name: "file in an uploaded folder", change: write("app/sub/b.txt", "B")},
		{name: "file added to an uploaded folder", change: write("app/c.txt", "")},
		{name: "empty folder added to an uploaded folder", change: mkdir("app/empty")},
		{name: "mode in an uploaded folder", change: chmod("app/a.txt", 0o600)},
		{name: "file renamed in an uploaded folder", change: rename("app/a.txt", "app/a2.txt")},
		{name: "symlink in an uploaded folder", change: symlink("a.txt", "app/link")},
		{name: "variable", opts: Options{Vars: map[string]string{"v": "b"}}},
		{name: "env() value", opts: Options{Env: []string{"KILN_HOST=h2"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeDir(t, digestFiles)
			if tt.change != nil {
				tt.change(t, dir)
			}
			got := digestOf(t, dir, tt.opts)
			if (got == ref) != tt.same {
				t.Errorf("digest %s, reference %s; want same = %v", got, ref, tt.same)
			}
		})
	}
}

func write(name, content string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func chmod(name string, mode os.FileMode) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		if err := os.Chmod(filepath.Join(dir, name), mode); err != nil {
			t.Fatal(err)
		}
	}
}

func mkdir(name string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func rename(from, to string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		if err := os.Rename(filepath.Join(dir, from), filepath.Join(dir, to)); err != nil {
			t.Fatal(err)
		}
	}
}

func symlink(target, name string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDigestRecipe recomputes a digest by hand from the recipe documented
// on (*loader).digest, so the documentation cannot drift from the code.
func TestDigestRecipe(t *testing.T) {
	tmpl := `variable "v" { default = "x" }
variable "w" {
  default = "yz"
  sensitive = true
}
image "r" {
  version = "1"
  base { image = "d" }
  provision "shell" { scripts = ["s.sh", "lib/a.sh"] }
  provision "file" {
    source = "up"
    destination = "/tmp/up"
  }
  provision "shell" { inline = [file("note.txt"), env("E")] }
}
`
	dir := writeDir(t, map[string]string{
		"kiln.hcl":    tmpl,
		"s.sh":        "echo s\n",
		"lib/a.sh":    "echo a\n",
		"note.txt":    "note",
		"up/f":        "F",
		"up/d/g":      "G",
		"outside.txt": "not an input",
	})
	for _, p := range []string{"up", "up/d"} {
		if err := os.Chmod(filepath.Join(dir, p), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	spec, err := Load(filepath.Join(dir, "kiln.hcl"), Options{Env: []string{"E=e!"}})
	if err != nil {
		t.Fatal(err)
	}

	h := sha256.New()
	fmt.Fprintf(h, "kiln-template-digest v1\n")
	fmt.Fprintf(h, "template %d\n%s", len(tmpl), tmpl)
	// Inputs in path order: lib/a.sh, note.txt, s.sh, up (a folder).
	fmt.Fprintf(h, "file %q 0755 %d\n%s", "lib/a.sh", 7, "echo a\n")
	fmt.Fprintf(h, "file %q 0644 %d\n%s", "note.txt", 4, "note")
	fmt.Fprintf(h, "file %q 0755 %d\n%s", "s.sh", 7, "echo s\n")
	fmt.Fprintf(h, "dir %q 0750\n", "up")
	fmt.Fprintf(h, "dir %q 0750\n", "up/d")
	fmt.Fprintf(h, "file %q 0644 %d\n%s", "up/d/g", 1, "G")
	fmt.Fprintf(h, "file %q 0644 %d\n%s", "up/f", 1, "F")
	fmt.Fprintf(h, "var v 1\nx")
	fmt.Fprintf(h, "var w 2\nyz")
	fmt.Fprintf(h, "env E 2\ne!")
	want := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if spec.TemplateDigest != want {
		t.Errorf("TemplateDigest = %s, want %s", spec.TemplateDigest, want)
	}
}

// TestDigestStreamsUploads: an upload source is hashed as it is read, not
// held in memory: a source larger than memory must not end kiln.
func TestDigestStreamsUploads(t *testing.T) {
	dir := writeDir(t, map[string]string{"kiln.hcl": `image "x" {
  version = "1.0"
  base { image = "debian:12" }
  provision "file" {
    source      = "big.img"
    destination = "/srv/big.img"
  }
}
`})
	const size = 512 << 20
	f, err := os.Create(filepath.Join(dir, "big.img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil { // sparse: no disk space used
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	spec, err := Load(filepath.Join(dir, "kiln.hcl"), Options{Env: noEnv})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if spec.TemplateDigest == "" {
		t.Fatal("no digest")
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("loading allocated %d MiB for a %d MiB upload; it must stream", grew>>20, size>>20)
	}
}
