package template

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// want is one expected diagnostic: where ("LINE:COL" in kiln.hcl, a file
// name and "LINE:COL" for other files, or "" for none) and a substring of
// its rendering.
type want struct {
	at  string
	msg string
}

// checkDiags asserts that err holds exactly the wanted diagnostics, so
// that each test also shows that one mistake is reported once.
func checkDiags(t *testing.T, dir string, err error, wants []want) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %d diagnostics", len(wants))
	}
	ds := diagnostics(t, err)
	used := make([]bool, len(ds))
	for _, w := range wants {
		found := false
		for i, d := range ds {
			if used[i] || !strings.Contains(d.String(), w.msg) {
				continue
			}
			at := ""
			if d.File != "" {
				file, _ := filepath.Rel(dir, d.File)
				if file == "kiln.hcl" {
					file = ""
				} else {
					file += ":"
				}
				at = fmt.Sprintf("%s%d:%d", file, d.Line, d.Column)
			}
			if at == w.at {
				used[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("missing diagnostic at %q containing %q", w.at, w.msg)
		}
	}
	for i, d := range ds {
		if !used[i] {
			t.Errorf("unexpected diagnostic: %s", d)
		}
	}
	if t.Failed() {
		t.Logf("all diagnostics:\n%v", err)
	}
}

func TestValidation(t *testing.T) {
	sum := strings.Repeat("0", 64)
	tests := []struct {
		name  string
		tmpl  string
		files map[string]string
		opts  Options
		want  []want
	}{
		{
			name: "syntax error",
			tmpl: "image \"x\" {\n  version = \n}\n",
			want: []want{{"2:13", "Invalid expression"}},
		},
		{
			name: "no image block",
			tmpl: "variable \"v\" { default = \"x\" }\n",
			want: []want{{"1:1", "Missing image block"}},
		},
		{
			name: "two image blocks",
			tmpl: minimal + "image \"other\" {\n}\n",
			want: []want{{"5:1", "Duplicate image block: A template describes exactly one image; the first image block is at"}},
		},
		{
			name: "missing name",
			tmpl: "image {\n  version = \"1\"\n  base { image = \"d\" }\n}\n",
			want: []want{{"1:7", `Missing name for image: All image blocks must have 1 labels (name).`}}, // and not "Missing image block"
		},
		{
			name: "invalid name",
			tmpl: strings.Replace(minimal, `"hello"`, `"Hello World"`, 1),
			want: []want{{"1:7", `Invalid image name: "Hello World" is not a valid image name`}},
		},
		{
			name: "name longer than the store takes", // once accepted by validate, refused by the store
			tmpl: strings.Replace(minimal, `"hello"`, `"`+strings.Repeat("a", 200)+`"`, 1),
			want: []want{{"1:7", "is not a valid image name: name is longer than 128 characters"}},
		},
		{
			name: "name starting with a dot",
			tmpl: strings.Replace(minimal, `"hello"`, `".hello"`, 1),
			want: []want{{"1:7", `Invalid image name`}},
		},
		{
			name: "missing version",
			tmpl: "image \"x\" {\n  base { image = \"d\" }\n}\n",
			want: []want{{"1:1", "Missing version: The image needs a version"}},
		},
		{
			name: "empty version",
			tmpl: strings.Replace(minimal, `"1.0.0"`, `""`, 1),
			want: []want{{"2:13", "Invalid version: The version must not be empty."}},
		},
		{
			name: "invalid version",
			tmpl: strings.Replace(minimal, `"1.0.0"`, `"1.0/beta"`, 1),
			want: []want{{"2:13", `Invalid version: "1.0/beta" is not a valid version`}},
		},
		{
			name: "misspelt argument",
			tmpl: strings.Replace(minimal, "version", "dsk_size = \"4G\"\n  version", 1),
			want: []want{{"2:3", `Unsupported argument: An argument named "dsk_size" is not expected here. Did you mean "disk_size"?`}},
		},
		{
			name: "misspelt block",
			tmpl: strings.Replace(minimal, "base", "provison \"shell\" { inline = [\"true\"] }\n  base", 1),
			want: []want{{"3:3", `Unsupported block type: Blocks of type "provison" are not expected here. Did you mean "provision"?`}},
		},
		{
			name: "misspelt argument in a nested block",
			tmpl: strings.Replace(minimal, "image = ", "imge = ", 1),
			want: []want{
				{"3:10", `An argument named "imge" is not expected here. Did you mean "image"?`},
				{"3:3", "Missing base source: The base block needs one of file"},
			},
		},
		{
			name: "missing base",
			tmpl: "image \"x\" {\n  version = \"1\"\n}\n",
			want: []want{{"1:1", "Missing base block"}},
		},
		{
			name: "two bases",
			tmpl: strings.Replace(minimal, "}\n", "}\n  base { image = \"e\" }\n", 1),
			want: []want{{"4:3", "Duplicate base block: Only one base block is allowed; the first is at"}},
		},
		{
			name: "base without source",
			tmpl: strings.Replace(minimal, `image = "debian:12"`, "", 1),
			want: []want{{"3:3", "Missing base source"}},
		},
		{
			name:  "base with two sources",
			tmpl:  baseWith(`image = "debian:12"`, `file = "base.qcow2"`),
			files: map[string]string{"base.qcow2": "x"},
			want:  []want{{"5:5", "Conflicting base sources: The base block takes only one of file, url or image, but both image and file are set."}},
		},
		{
			name: "url without checksum",
			tmpl: strings.Replace(minimal, `image = "debian:12"`, `url = "https://example.com/d.qcow2"`, 1),
			want: []want{{"3:10", "Missing checksum: A base url needs a checksum"}},
		},
		{
			name: "invalid url",
			tmpl: baseWith(`url = "ftp://example.com/d"`, `checksum = "sha256:`+sum+`"`),
			want: []want{{"4:11", `Invalid base URL: "ftp://example.com/d" is not an http or https URL.`}},
		},
		{
			name: "invalid checksums",
			tmpl: `image "x" {
  version = "1"
  base {
    url = "https://example.com/d.qcow2"
    checksum = "sha256:abc"
  }
}
image "y" {
  version = "1"
  base {
    url = "https://example.com/d.qcow2"
    checksum = "md5:` + sum[:32] + `"
  }
}
`,
			want: []want{
				{"5:16", `Invalid checksum: "sha256:abc" is not a checksum`},
				{"8:1", "Duplicate image block"},
			},
		},
		{
			name: "invalid file: checksum",
			tmpl: baseWith(`url = "https://example.com/d"`, `checksum = "file:SHA256SUMS"`),
			want: []want{{"5:16", `Invalid checksum: "file:SHA256SUMS": after file: comes the http or https URL`}},
		},
		{
			name: "checksum without url",
			tmpl: baseWith(`image = "debian:12"`, `checksum = "sha256:`+sum+`"`),
			want: []want{{"5:5", "Unexpected checksum: checksum only applies to a base url"}},
		},
		{
			name: "missing base file",
			tmpl: strings.Replace(minimal, `image = "debian:12"`, `file = "images/base.qcow2"`, 1),
			want: []want{{"3:17", `Base image not found: No file exists at "images/base.qcow2" (resolved to `}},
		},
		{
			name:  "base file is a directory",
			tmpl:  strings.Replace(minimal, `image = "debian:12"`, `file = "images"`, 1),
			files: map[string]string{"images/x": ""},
			want:  []want{{"3:17", `Not a regular file: "images" (resolved to`}},
		},
		{
			name: "invalid base image",
			tmpl: strings.Replace(minimal, `"debian:12"`, `"debian 12"`, 1),
			want: []want{{"3:18", `Invalid base image: "debian 12" is not an image reference`}},
		},
		{
			name: "invalid sizes",
			tmpl: strings.Replace(minimal, "version", `disk_size = "4Q"`+"\n  memory = 2048\n  version", 1),
			want: []want{
				{"2:15", `Invalid size: disk_size: invalid size "4Q": unknown unit "Q"`},
				{"3:12", `Invalid size: memory needs a unit: "2048" is ambiguous; write e.g. "2048M"`},
			},
		},
		{
			name: "memory not whole MiB",
			tmpl: strings.Replace(minimal, "version", `memory = "1000K"`+"\n  version", 1),
			want: []want{{"2:12", `Invalid size: memory must be a whole number of MiB, at least 1M; "1000K" is 1024000 bytes.`}},
		},
		{
			name: "invalid durations",
			tmpl: strings.Replace(minimal, "version", `boot_timeout = "10"`+"\n  shutdown_timeout = \"-1m\"\n  version", 1),
			want: []want{
				{"2:18", `Invalid duration: boot_timeout must be a duration such as "90s", "10m" or "1h30m"; "10" is not: missing unit`},
				{"3:22", `Invalid duration: shutdown_timeout must be a duration such as "90s", "10m" or "1h30m"; "-1m" is not: it is negative.`},
			},
		},
		{
			name: "cpus below one",
			tmpl: strings.Replace(minimal, "version", "cpus = 0\n  version", 1),
			want: []want{{"2:10", "Invalid cpus: cpus must be at least 1, not 0."}},
		},
		{
			name: "cpus fractional",
			tmpl: strings.Replace(minimal, "version", "cpus = 1.5\n  version", 1),
			want: []want{{"2:10", "Invalid cpus: cpus must be a whole number, not 1.5."}},
		},
		{
			name: "type mismatch",
			tmpl: strings.Replace(minimal, "version", "cpus = \"two\"\n  flatten = \"maybe\"\n  version", 1),
			want: []want{
				{"2:10", `Incorrect attribute value type: Inappropriate value for attribute "cpus": a number is required.`},
				{"3:13", `Inappropriate value for attribute "flatten": a bool is required.`},
			},
		},
		{
			name: "list element type mismatch",
			tmpl: strings.Replace(minimal, "base", "provision \"shell\" { inline = [\"a\", [\"b\"]] }\n  base", 1),
			want: []want{{"3:32", `Inappropriate value for attribute "inline": element 1: string required`}},
		},
		{
			name: "invalid compression",
			tmpl: strings.Replace(minimal, "version", "compression = \"zstdd\"\n  version", 1),
			want: []want{{"2:17", `Invalid compression: "zstdd" is not a valid compression; use "zstd", "zlib" or "none". Did you mean "zstd"?`}},
		},
		{
			name: "unknown provisioner",
			tmpl: strings.Replace(minimal, "base", "provision \"ansible\" { playbook = \"x\" }\n  provision \"shel\" { inline = [\"x\"] }\n  base", 1),
			want: []want{
				{"3:13", `Unknown provisioner type: There is no provisioner "ansible"; use "shell" or "file".`},
				{"4:13", `There is no provisioner "shel"; use "shell" or "file". Did you mean "shell"?`},
			},
		},
		{
			name: "shell without commands",
			tmpl: strings.Replace(minimal, "base", "provision \"shell\" {\n    env = { A = \"b\" }\n  }\n  base", 1),
			want: []want{{"3:3", "Missing shell commands: A shell provisioner needs one of inline (a list of commands), script or scripts."}},
		},
		{
			name:  "shell with two kinds of commands",
			tmpl:  strings.Replace(minimal, "base", "provision \"shell\" {\n    inline = [\"x\"]\n    scripts = [\"a.sh\"]\n  }\n  base", 1),
			files: map[string]string{"a.sh": "true"},
			want:  []want{{"5:5", "Conflicting shell commands: A shell provisioner takes only one of inline, script or scripts, but both inline and scripts are set."}},
		},
		{
			name: "empty inline",
			tmpl: strings.Replace(minimal, "base", "provision \"shell\" { inline = [] }\n  base", 1),
			want: []want{{"3:32", "Empty inline: inline needs at least one command."}},
		},
		{
			name:  "missing scripts",
			tmpl:  strings.Replace(minimal, "base", "provision \"shell\" { script = \"setup.sh\" }\n  provision \"shell\" { scripts = [\"a.sh\", \"b.sh\"] }\n  base", 1),
			files: map[string]string{"a.sh": "true"},
			want: []want{
				{"3:32", `Script not found: No file exists at "setup.sh" (resolved to`},
				{"4:42", `Script not found: No file exists at "b.sh"`},
			},
		},
		{
			name: "argument of the other provisioner type",
			tmpl: strings.Replace(minimal, "base", "provision \"shell\" {\n    inline = [\"x\"]\n    source = \"a\"\n  }\n  base", 1),
			want: []want{{"5:5", `Unsupported argument: An argument named "source" is not expected here.`}},
		},
		{
			name: "file without source and destination",
			tmpl: strings.Replace(minimal, "base", "provision \"file\" {\n  }\n  base", 1),
			want: []want{
				{"3:3", `Missing source: A file provisioner needs a source and a destination.`},
				{"3:3", `Missing destination: A file provisioner needs a source and a destination.`},
			},
		},
		{
			name: "invalid direction",
			// Which side is local is unknown, so source is not looked for.
			tmpl: strings.Replace(minimal, "base", "provision \"file\" {\n    source = \"/var/log/x\"\n    destination = \"out/\"\n    direction = \"downlaod\"\n  }\n  base", 1),
			want: []want{
				{"6:17", `Invalid direction: "downlaod" is not a valid direction; use "upload" or "download". Did you mean "download"?`},
			},
		},
		{
			name: "missing upload source",
			tmpl: strings.Replace(minimal, "base", "provision \"file\" {\n    source = \"app/\"\n    destination = \"/opt\"\n  }\n  base", 1),
			want: []want{{"4:14", `Upload source not found: No file exists at "app/"`}},
		},
		{
			name: "upload source is a device",
			tmpl: strings.Replace(minimal, "base", "provision \"file\" {\n    source = \"/dev/null\"\n    destination = \"/opt\"\n  }\n  base", 1),
			want: []want{{"4:14", `Not a file or directory: "/dev/null" (resolved to /dev/null) is neither a regular file nor a directory.`}},
		},
		{
			name: "invalid url with a password",
			tmpl: baseWith(`url = "ftp://user:secret@example.com/d"`, `checksum = "sha256:`+sum+`"`),
			want: []want{{"4:11", `Invalid base URL: "ftp://user:xxxxx@example.com/d" is not an http or https URL.`}},
		},
		{
			name: "empty destination",
			tmpl: strings.Replace(minimal, "base", "provision \"file\" {\n    source = \"/x\"\n    destination = \"\"\n    direction = \"download\"\n  }\n  base", 1),
			want: []want{{"5:19", "Empty destination: The destination of a file provisioner must not be empty."}},
		},
		{
			name: "invalid env name",
			tmpl: strings.Replace(minimal, "base", "provision \"shell\" {\n    inline = [\"x\"]\n    env = { \"A-B\" = \"1\" }\n  }\n  base", 1),
			want: []want{{"5:11", `Invalid environment variable name: "A-B" cannot be an environment variable name`}},
		},
		{
			name: "invalid user",
			tmpl: strings.Replace(minimal, "base", "provision \"shell\" {\n    inline = [\"x\"]\n    user = \"Root user\"\n  }\n  base", 1),
			want: []want{{"5:12", `Invalid user: "Root user" is not a Linux account name`}},
		},
		{
			name: "duplicate cloud_init and missing user_data",
			tmpl: strings.Replace(minimal, "base", "cloud_init {}\n  cloud_init { user_data = \"\" }\n  base", 1),
			want: []want{
				{"3:3", `Missing user_data: The cloud_init block needs user_data`},
				{"4:3", "Duplicate cloud_init block: Only one cloud_init block is allowed; the first is at"},
			},
		},
		{
			name: "missing file() argument",
			tmpl: strings.Replace(minimal, "base", "cloud_init { user_data = file(\"cloud.yaml\") }\n  base", 1),
			want: []want{{"3:34", `Invalid function argument: Invalid value for "path" parameter: no file exists at "cloud.yaml"`}},
		},
		{
			name: "unknown function",
			tmpl: strings.Replace(minimal, `"1.0.0"`, `uper("x")`, 1),
			want: []want{{"2:13", `Call to unknown function: There is no function named "uper". Did you mean "upper"?`}},
		},
		{
			name: "undefined variable",
			tmpl: "variable \"name\" { default = \"x\" }\n" + strings.Replace(minimal, `"1.0.0"`, `var.nope`, 1),
			want: []want{{"3:13", `Undefined variable: The template uses var.nope but declares no variable "nope". Did you mean "name"?`}},
		},
		{
			name: "undefined variable in an index and in a template",
			tmpl: "variable \"version\" { default = \"x\" }\n" + strings.Replace(minimal, `"1.0.0"`, `"v${var.verison}-${var["other"]}"`, 1),
			want: []want{
				{"3:17", `Undefined variable: The template uses var.verison but declares no variable "verison". Did you mean "version"?`},
				{"3:32", `The template uses var.other but declares no variable "other".`},
			},
		},
		{
			name: "reference without var.",
			tmpl: "variable \"v\" { default = \"x\" }\n" + strings.Replace(minimal, `"1.0.0"`, `v`, 1),
			want: []want{{"3:13", `Unknown variable: There is no variable named "v". Did you mean var.v?`}},
		},
		{
			name: "variable problems",
			tmpl: `variable "a" {
  type = strin
}
variable "b" {
  default = var.a
}
variable "a" {
  default = "x"
}
variable "c" {
  type    = number
  default = "ten"
}
variable "d" {
  defualt = "x"
}
` + minimal,
			want: []want{
				{"1:1", `Missing value for variable: Variable "a" has no default and no value was given: use --var a=VALUE, a --var-file, or set KILN_VAR_a.`},
				{"2:10", `Invalid variable type: The type of a variable is string, number or bool. Did you mean "string"?`},
				{"4:1", `Missing value for variable: Variable "b"`},
				{"5:13", `Variables not allowed: The default of a variable must not refer to variables`},
				{"7:10", `Duplicate variable: Variable "a" was already declared at`},
				{"10:1", `Missing value for variable: Variable "c"`},
				{"12:13", `Inappropriate value for attribute "default": a number is required.`},
				{"14:1", `Missing value for variable: Variable "d"`},
				{"15:3", `Unsupported argument: An argument named "defualt" is not expected here. Did you mean "default"?`},
			},
		},
		{
			name: "undeclared --var",
			tmpl: "variable \"version\" { default = \"1\" }\n" + minimal,
			opts: Options{Vars: map[string]string{"verison": "2", "zzz": "3"}},
			want: []want{
				{"", `Undeclared variable: A value was given with --var for "verison", but the template declares no variable of that name. Did you mean "version"?`},
				{"", `A value was given with --var for "zzz", but the template declares no variable of that name.`},
			},
		},
		{
			name: "--var of the wrong type",
			tmpl: "variable \"n\" {\n  type = number\n  default = 1\n}\nvariable \"b\" {\n  type = bool\n  default = true\n}\n" + minimal,
			opts: Options{Vars: map[string]string{"n": "two", "b": "yes"}, Env: []string{"KILN_VAR_n=3x"}},
			want: []want{
				{"", `Invalid value for variable: The environment variable KILN_VAR_n is not a valid number: a number is required.`},
				{"", `Invalid value for variable: The value given with --var for "b" is not a valid bool: a bool is required.`},
				{"", `Invalid value for variable: The value given with --var for "n" is not a valid number: a number is required.`},
			},
		},
		{
			name: "var file problems",
			tmpl: "variable \"version\" { default = \"1\" }\nvariable \"n\" {\n  type = number\n  default = 1\n}\n" + minimal,
			files: map[string]string{
				"vars.hcl": "verison = \"2\"\nn = \"many\"\nversion = var.x\n",
				"bad.hcl":  "n = \n",
			},
			opts: Options{VarFiles: []string{"vars.hcl", "bad.hcl", "none.hcl"}},
			want: []want{
				{"vars.hcl:1:1", `Undeclared variable: The var file sets "verison", but the template declares no variable of that name. Did you mean "version"?`},
				{"vars.hcl:2:5", `Invalid value for variable: Variable "n" is a number: a number is required.`},
				{"vars.hcl:3:11", `Variables not allowed`},
				{"bad.hcl:1:5", `Invalid expression`},
				{"none.hcl:0:0", `Cannot read var file`},
			},
		},
		{
			name: "null means unset",
			tmpl: "image \"x\" {\n  version = null\n  base { image = null }\n  provision \"file\" {\n    source = null\n    destination = \"/x\"\n  }\n  cloud_init { user_data = null }\n}\n",
			want: []want{
				{"1:1", "Missing version"},
				{"3:3", "Missing base source"},
				{"4:3", "Missing source"},
				{"8:3", "Missing user_data"},
			},
		},
		{
			name: "invalid --version",
			tmpl: minimal,
			opts: Options{Version: "1.0/x"},
			want: []want{{"", `Invalid --version: "1.0/x" is not a valid version`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeDir(t, tt.files)
			// Var files are named relative to the test's folder.
			for i, f := range tt.opts.VarFiles {
				tt.opts.VarFiles[i] = filepath.Join(dir, f)
			}
			if err := putFile(dir, "kiln.hcl", tt.tmpl); err != nil {
				t.Fatal(err)
			}
			if tt.opts.Env == nil {
				tt.opts.Env = noEnv
			}
			err := Validate(filepath.Join(dir, "kiln.hcl"), tt.opts)
			checkDiags(t, dir, err, tt.want)
		})
	}
}

// TestAllAtOnce checks that problems across the template are reported
// together, in order of position, one per line.
func TestAllAtOnce(t *testing.T) {
	tmpl := `image "hello" {
  version  = "1.0.0"
  dsk_size = "4G"
  cpus     = "two"
  base {
    url = "https://example.com/disk.qcow2"
  }
  provison "shell" {
    inline = ["true"]
  }
}
`
	_, dir, err := load(t, tmpl, nil, Options{})
	checkDiags(t, dir, err, []want{
		{"3:3", `Did you mean "disk_size"?`},
		{"4:14", `a number is required`},
		{"6:5", `Missing checksum`},
		{"8:3", `Did you mean "provision"?`},
	})
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 lines, got:\n%v", err)
	}
	for i, prefix := range []string{":3:3: ", ":4:14: ", ":6:5: ", ":8:3: "} {
		if !strings.HasPrefix(lines[i], filepath.Join(dir, "kiln.hcl")+prefix) {
			t.Errorf("line %d = %q; want prefix %q", i, lines[i], prefix)
		}
	}
}

// baseWith is a template whose base block holds the given lines, the
// first on line 4, column 5.
func baseWith(lines ...string) string {
	return "image \"hello\" {\n  version = \"1.0.0\"\n  base {\n    " + strings.Join(lines, "\n    ") + "\n  }\n}\n"
}

func putFile(dir, name, content string) error {
	return os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
}
