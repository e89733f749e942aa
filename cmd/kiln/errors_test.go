package main

// TestBadInput runs the kiln binary on the mistakes users make and checks
// that each one gets a short, actionable error with the right exit status,
// and leaves nothing behind: kiln's folders unchanged, no QEMU started.
// docs/failures.md lists these cases with what kiln says.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// kilnBinary builds the binary once for every test that runs it.
var kilnBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "kiln-bin-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "kiln")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

var binDir string // removed by TestMain

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// badInputEnv is the world the cases run in: a kiln home holding one tiny
// stored image, a folder of templates and files, and PATHs with and without
// QEMU.
type badInputEnv struct {
	bin     string
	home    string // KILN_HOME
	dir     string // templates and other input files; commands run here
	out     string // where exports would go (must stay empty)
	qemuLog string // the stand-in qemu-system-x86_64 appends its argv here
	path    string // PATH with the stand-in QEMU first

	noQEMUSystem string // PATH with qemu-img but no qemu-system-x86_64
	noQEMUImg    string // PATH with (the stand-in) qemu-system-x86_64 but no qemu-img
	noQEMU       string // PATH with neither
}

// badInputCase is one mistake and what kiln must answer.
type badInputCase struct {
	name  string
	args  []string
	path  string   // PATH for this case; "" means env.path
	code  int      // exit status
	want  []string // phrases stderr must contain
	diags bool     // a template diagnostics block rather than one error line
}

func TestBadInput(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed (apt-get install qemu-utils)")
	}
	bin, err := kilnBinary()
	if err != nil {
		t.Fatal(err)
	}
	env := setupBadInput(t, bin)

	// A local server for base URLs; the template's checksum is not its file's.
	tiny, err := os.ReadFile(filepath.Join(env.dir, "tiny.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tiny.qcow2" {
			http.NotFound(w, r)
			return
		}
		w.Write(tiny)
	}))
	defer srv.Close()
	wrongSum := sha256.Sum256([]byte("not the image"))
	rightSum := sha256.Sum256(tiny)
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	// A front port in use.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	img := func(body string) string {
		return "image \"x\" {\n  version = \"1.0\"\n" + body + "}\n"
	}
	env.write(t, map[string]string{
		"notadisk.txt": "hello\n",
		"empty.img":    "",
		"setup.sh":     "echo hi\n",
		// an unclosed block
		"syntax.kiln.hcl": "image \"x\" {\n  version = \"1.0\"\n  base { image = \"tiny:1\" }\n",
		// an expression cut short
		"syntax-expr.kiln.hcl":    img("  base { image = \"tiny:1\" }\n  cpus = \n"),
		"misspelt.kiln.hcl":       img("  base { image = \"tiny:1\" }\n  disk_sise = \"4G\"\n  provision \"shell\" { inlin = [\"true\"] }\n"),
		"misspelt-block.kiln.hcl": img("  base { image = \"tiny:1\" }\n  provison \"shell\" { inline = [\"true\"] }\n"),
		"wrong-type.kiln.hcl":     img("  base { image = \"tiny:1\" }\n  cpus = \"two\"\n  provision \"shell\" { inline = \"echo hi\" }\n"),
		"missing-file.kiln.hcl": img("  base { image = \"tiny:1\" }\n  cloud_init { user_data = file(\"nope.yaml\") }\n" +
			"  provision \"shell\" { inline = [file(\"nope.sh\")] }\n"),
		"missing-script.kiln.hcl":    img("  base { image = \"tiny:1\" }\n  provision \"shell\" { script = \"nope.sh\" }\n"),
		"missing-base-file.kiln.hcl": img("  base { file = \"nope.qcow2\" }\n"),
		"undefined-var.kiln.hcl": "variable \"version\" { default = \"1.0\" }\nimage \"x\" {\n  version = var.verison\n" +
			"  base { image = var.base }\n}\n",
		"bad-size.kiln.hcl":    img("  base { image = \"tiny:1\" }\n  disk_size = \"lots\"\n"),
		"bad-memory.kiln.hcl":  img("  base { image = \"tiny:1\" }\n  memory = \"0M\"\n"),
		"bare-memory.kiln.hcl": img("  base { image = \"tiny:1\" }\n  memory = 2048\n"),
		"small-disk.kiln.hcl":  img("  base { image = \"tiny:1\" }\n  disk_size = \"1M\"\n"),
		"base-text.kiln.hcl":   img("  base { file = \"notadisk.txt\" }\n"),
		"base-empty.kiln.hcl":  img("  base { file = \"empty.img\" }\n"),
		"base-mismatch.kiln.hcl": img("  base {\n    url = \"" + srv.URL + "/tiny.qcow2\"\n    checksum = \"sha256:" +
			hex.EncodeToString(wrongSum[:]) + "\"\n  }\n"),
		"base-unreachable.kiln.hcl": img("  base {\n    url = \"http://" + closed + "/tiny.qcow2\"\n    checksum = \"sha256:" +
			hex.EncodeToString(rightSum[:]) + "\"\n  }\n"),
		"base-404.kiln.hcl": img("  base {\n    url = \"" + srv.URL + "/gone.qcow2\"\n    checksum = \"sha256:" +
			hex.EncodeToString(rightSum[:]) + "\"\n  }\n"),
		"base-unknown.kiln.hcl": img("  base { image = \"nope:1\" }\n"),
		"existing.kiln.hcl":     "image \"tiny\" {\n  version = \"1\"\n  base { image = \"tiny:1\" }\n}\n",
		"ok.kiln.hcl":           img("  base { image = \"tiny:1\" }\n  provision \"shell\" { script = \"setup.sh\" }\n"),
	})
	export := filepath.Join(env.out, "nope.qcow2")

	groups := []struct {
		name  string
		cases []badInputCase
	}{
		{"validate", []badInputCase{
			{name: "syntax_error", args: []string{"validate", "syntax.kiln.hcl"}, code: 1, diags: true,
				want: []string{"syntax.kiln.hcl:1:11: Unclosed configuration block"}},
			{name: "syntax_error_in_expression", args: []string{"validate", "syntax-expr.kiln.hcl"}, code: 1, diags: true,
				want: []string{"syntax-expr.kiln.hcl:4:10: Invalid expression"}},
			{name: "misspelt_attribute", args: []string{"validate", "misspelt.kiln.hcl"}, code: 1, diags: true,
				want: []string{`misspelt.kiln.hcl:4:3: Unsupported argument: An argument named "disk_sise" is not expected here. Did you mean "disk_size"?`,
					`misspelt.kiln.hcl:5:23: Unsupported argument: An argument named "inlin" is not expected here. Did you mean "inline"?`}},
			{name: "misspelt_block", args: []string{"validate", "misspelt-block.kiln.hcl"}, code: 1, diags: true,
				want: []string{`misspelt-block.kiln.hcl:4:3: Unsupported block type`, `Did you mean "provision"?`}},
			{name: "wrong_type", args: []string{"validate", "wrong-type.kiln.hcl"}, code: 1, diags: true,
				want: []string{`wrong-type.kiln.hcl:4:10: Incorrect attribute value type: Inappropriate value for attribute "cpus": a number is required.`,
					`wrong-type.kiln.hcl:5:32: Incorrect attribute value type: Inappropriate value for attribute "inline": list of string required`}},
			{name: "missing_file_function", args: []string{"validate", "missing-file.kiln.hcl"}, code: 1, diags: true,
				want: []string{`missing-file.kiln.hcl:4:34:`, `no file exists at "nope.yaml"`, `missing-file.kiln.hcl:5:39:`, `no file exists at "nope.sh"`}},
			{name: "missing_script", args: []string{"validate", "missing-script.kiln.hcl"}, code: 1, diags: true,
				want: []string{`missing-script.kiln.hcl:4:32: Script not found: No file exists at "nope.sh"`}},
			{name: "missing_base_file", args: []string{"validate", "missing-base-file.kiln.hcl"}, code: 1, diags: true,
				want: []string{`missing-base-file.kiln.hcl:3:17: Base image not found: No file exists at "nope.qcow2"`}},
			{name: "missing_template", args: []string{"validate", "nope.kiln.hcl"}, code: 1, diags: true,
				want: []string{"nope.kiln.hcl: Cannot read template: no such file or directory"}},
			{name: "undefined_variable", args: []string{"validate", "undefined-var.kiln.hcl"}, code: 1, diags: true,
				want: []string{`undefined-var.kiln.hcl:3:13: Undefined variable: The template uses var.verison but declares no variable "verison". Did you mean "version"?`,
					`undefined-var.kiln.hcl:4:18: Undefined variable: The template uses var.base but declares no variable "base".`}},
			{name: "invalid_disk_size", args: []string{"validate", "bad-size.kiln.hcl"}, code: 1, diags: true,
				want: []string{`bad-size.kiln.hcl:4:15: Invalid size: disk_size: invalid size "lots"`}},
			{name: "invalid_memory", args: []string{"validate", "bad-memory.kiln.hcl"}, code: 1, diags: true,
				want: []string{`bad-memory.kiln.hcl:4:12: Invalid size: memory must be a whole number of MiB, at least 1M`}},
			{name: "memory_without_unit", args: []string{"validate", "bare-memory.kiln.hcl"}, code: 1, diags: true,
				want: []string{`bare-memory.kiln.hcl:4:12: Invalid size: memory needs a unit: "2048" is ambiguous; write e.g. "2048M"`}},
		}},
		{"build", []badInputCase{
			{name: "syntax_error", args: []string{"build", "syntax.kiln.hcl"}, code: 1, diags: true,
				want: []string{"kiln build: syntax.kiln.hcl:1:11: Unclosed configuration block"}},
			{name: "misspelt_attribute", args: []string{"build", "misspelt.kiln.hcl"}, code: 1, diags: true,
				want: []string{`misspelt.kiln.hcl:4:3:`, `Did you mean "disk_size"?`, `Did you mean "inline"?`}},
			{name: "wrong_type", args: []string{"build", "wrong-type.kiln.hcl"}, code: 1, diags: true,
				want: []string{`wrong-type.kiln.hcl:4:10:`, `"cpus": a number is required`}},
			{name: "missing_file_function", args: []string{"build", "missing-file.kiln.hcl"}, code: 1, diags: true,
				want: []string{`missing-file.kiln.hcl:4:34:`, `no file exists at "nope.yaml"`}},
			{name: "missing_script", args: []string{"build", "missing-script.kiln.hcl"}, code: 1, diags: true,
				want: []string{`missing-script.kiln.hcl:4:32: Script not found`}},
			{name: "missing_template", args: []string{"build", "nope.kiln.hcl"}, code: 1, diags: true,
				want: []string{"kiln build: nope.kiln.hcl: Cannot read template: no such file or directory"}},
			{name: "undefined_variable", args: []string{"build", "undefined-var.kiln.hcl"}, code: 1, diags: true,
				want: []string{`undefined-var.kiln.hcl:3:13: Undefined variable`, `Did you mean "version"?`}},
			{name: "invalid_disk_size", args: []string{"build", "bad-size.kiln.hcl"}, code: 1, diags: true,
				want: []string{`bad-size.kiln.hcl:4:15: Invalid size`}},
			{name: "invalid_memory", args: []string{"build", "bad-memory.kiln.hcl"}, code: 1, diags: true,
				want: []string{`bad-memory.kiln.hcl:4:12: Invalid size: memory must be a whole number of MiB, at least 1M`}},
			{name: "undefined_var_flag", args: []string{"build", "ok.kiln.hcl", "--var", "nope=1"}, code: 1,
				want: []string{`kiln build: Undeclared variable: A value was given with --var for "nope"`}},
			{name: "disk_size_below_base", args: []string{"build", "small-disk.kiln.hcl"}, code: 1,
				want: []string{"disk_size 1.0 MiB is smaller than the base image tiny:1 (64.0 MiB); disks can only grow"}},
			{name: "base_text_file", args: []string{"build", "base-text.kiln.hcl"}, code: 1,
				want: []string{"notadisk.txt is not a disk image"}},
			{name: "base_empty_file", args: []string{"build", "base-empty.kiln.hcl"}, code: 1,
				want: []string{"empty.img is not a disk image (the file is empty)"}},
			{name: "checksum_mismatch", args: []string{"build", "base-mismatch.kiln.hcl"}, code: 1,
				want: []string{"checksum mismatch for " + srv.URL + "/tiny.qcow2: expected sha256:" + hex.EncodeToString(wrongSum[:])}},
			{name: "unreachable_url", args: []string{"build", "base-unreachable.kiln.hcl"}, code: 1,
				want: []string{"download http://" + closed + "/tiny.qcow2: connection refused"}},
			{name: "url_not_found", args: []string{"build", "base-404.kiln.hcl"}, code: 1,
				want: []string{"download " + srv.URL + "/gone.qcow2: HTTP 404 Not Found"}},
			{name: "unknown_base_image", args: []string{"build", "base-unknown.kiln.hcl"}, code: 1,
				want: []string{"image nope:1 not found"}},
			{name: "existing_version", args: []string{"build", "existing.kiln.hcl"}, code: 1,
				want: []string{"image tiny:1 already exists; bump the version or pass --force to replace it"}},
			{name: "no_qemu", args: []string{"build", "ok.kiln.hcl"}, path: env.noQEMU, code: 1,
				want: []string{"qemu-system-x86_64 and qemu-img are not installed", "sudo apt-get install qemu-system-x86 qemu-utils"}},
		}},
		{"run", []badInputCase{
			{name: "invalid_memory", args: []string{"run", "tiny:1", "--memory", "lots"}, code: 2,
				want: []string{`kiln run: --memory: invalid size "lots": use a number with K, M, G or T, e.g. 4G`}},
			{name: "zero_memory", args: []string{"run", "tiny:1", "--memory", "0"}, code: 2,
				want: []string{"kiln run: --memory 0: give a size above zero, e.g. 1G"}},
			{name: "memory_without_unit", args: []string{"run", "tiny:1", "--memory", "2048"}, code: 2,
				want: []string{"kiln run: --memory 2048 needs a unit: write e.g. 2048M"}},
			{name: "memory_not_whole_MiB", args: []string{"run", "tiny:1", "--memory", "100K"}, code: 2,
				want: []string{"kiln run: --memory 100K: give a whole number of MiB, at least 1M"}},
			{name: "invalid_disk_size", args: []string{"run", "tiny:1", "--disk-size", "3Q"}, code: 2,
				want: []string{`kiln run: --disk-size: invalid size "3Q"`}},
			{name: "disk_size_below_image", args: []string{"run", "tiny:1", "--disk-size", "1M"}, code: 2,
				want: []string{"kiln run: --disk-size 1M is smaller than tiny:1 (64.0 MiB); disks can only grow"}},
			{name: "text_file", args: []string{"run", "notadisk.txt"}, code: 1,
				want: []string{"kiln run: notadisk.txt is not a disk image"}},
			{name: "empty_file", args: []string{"run", "empty.img"}, code: 1,
				want: []string{"kiln run: empty.img is not a disk image (the file is empty)"}},
			{name: "missing_file", args: []string{"run", "nope.qcow2"}, code: 1,
				want: []string{"kiln run: image nope.qcow2: no such file"}},
			{name: "unknown_ref", args: []string{"run", "nope:1"}, code: 1,
				want: []string{"kiln run: image nope:1 not found"}},
			{name: "missing_user_data", args: []string{"run", "tiny:1", "--user-data", "nope.yaml"}, code: 1,
				want: []string{"kiln run: --user-data nope.yaml: no such file"}},
			{name: "no_qemu_system", args: []string{"run", "tiny:1"}, path: env.noQEMUSystem, code: 1,
				want: []string{"kiln run: qemu-system-x86_64 is not installed (not found in PATH): install it with `sudo apt-get install qemu-system-x86`"}},
			{name: "no_qemu_img", args: []string{"run", "tiny:1"}, path: env.noQEMUImg, code: 1,
				want: []string{"kiln run: qemu-img is not installed (not found in PATH): install it with `sudo apt-get install qemu-utils`"}},
		}},
		{"images", []badInputCase{
			{name: "show_unknown_ref", args: []string{"images", "show", "nope:1"}, code: 1,
				want: []string{"image nope:1 not found"}},
			{name: "export_unknown_ref", args: []string{"images", "export", "nope:1", "--format", "qcow2", "-o", export}, code: 1,
				want: []string{"image nope:1 not found"}},
			{name: "import_without_qemu_img", args: []string{"images", "import", "tiny.qcow2", "--name", "t", "--version", "2"}, path: env.noQEMUImg, code: 1,
				want: []string{"qemu-img is not installed", "sudo apt-get install qemu-utils"}},
			{name: "gc_without_qemu_img", args: []string{"images", "gc"}, path: env.noQEMUImg, code: 1,
				want: []string{"kiln images gc: qemu-img is not installed (not found in PATH): install it with `sudo apt-get install qemu-utils`"}},
			{name: "import_text_file", args: []string{"images", "import", "notadisk.txt", "--name", "t", "--version", "2"}, code: 1,
				want: []string{"notadisk.txt is not a disk image"}},
			{name: "import_existing_version", args: []string{"images", "import", "tiny.qcow2", "--name", "tiny", "--version", "1"}, code: 1,
				want: []string{"tiny:1 already exists"}},
		}},
		{"fleet", []badInputCase{
			{name: "up_unknown_image", args: []string{"fleet", "up", "w", "--image", "nope:1"}, code: 1,
				want: []string{"image nope:1 not found"}},
			{name: "up_front_port_in_use", args: []string{"fleet", "up", "web", "--image", "tiny:1", "--port", fmt.Sprintf("%d:8080", busyPort)}, code: 1,
				want: []string{fmt.Sprintf("front port 127.0.0.1:%d is already in use; pick another --port", busyPort)}},
			{name: "up_invalid_memory", args: []string{"fleet", "up", "w", "--image", "tiny:1", "--memory", "12X"}, code: 2,
				want: []string{`--memory: invalid size "12X"`}},
			{name: "up_no_qemu", args: []string{"fleet", "up", "w", "--image", "tiny:1"}, path: env.noQEMUSystem, code: 1,
				want: []string{"qemu-system-x86_64 is not installed", "sudo apt-get install qemu-system-x86"}},
			{name: "status_unknown_fleet", args: []string{"fleet", "status", "nope"}, code: 1,
				want: []string{"fleet nope: no such fleet; see `kiln fleet ls`"}},
			{name: "down_unknown_fleet", args: []string{"fleet", "down", "nope"}, code: 1,
				want: []string{"fleet nope: no such fleet; see `kiln fleet ls`"}},
			{name: "rollout_unknown_fleet", args: []string{"rollout", "nope", "--to", "tiny:1"}, code: 1,
				want: []string{"kiln rollout: fleet nope: no such fleet; see `kiln fleet ls`"}},
			{name: "rollback_unknown_fleet", args: []string{"rollback", "nope"}, code: 1,
				want: []string{"kiln rollback: fleet nope: no such fleet; see `kiln fleet ls`"}},
		}},
		{"hosts", []badInputCase{
			{name: "add_bad_name", args: []string{"hosts", "add", "Lab 1", "qemu:///system"}, code: 2,
				want: []string{`host name "Lab 1": use 1-32 lower-case letters, digits and inner hyphens`}},
			{name: "add_bad_uri", args: []string{"hosts", "add", "lab1", "http://lab1/system"}, code: 2,
				want: []string{`libvirt URI "http://lab1/system": scheme http is not one of qemu, qemu+unix, qemu+ssh, qemu+tcp, qemu+tls`}},
			{name: "add_session_uri", args: []string{"hosts", "add", "lab1", "qemu:///session"}, code: 2,
				want: []string{"kiln uses the system instance; end the URI with /system"}},
			{name: "add_unreachable", args: []string{"hosts", "add", "lab1", "qemu+tcp://" + closed + "/system"}, code: 1,
				want: []string{"kiln hosts: host lab1 (qemu+tcp://" + closed + "/system): unreachable:", "(add it anyway with --no-check)"}},
			{name: "rm_unknown", args: []string{"hosts", "rm", "nope"}, code: 1,
				want: []string{"no host called nope (kiln hosts ls lists them)"}},
		}},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) { env.check(t, c) })
			}
		})
	}
	if entries, _ := os.ReadDir(env.out); len(entries) > 0 {
		t.Errorf("an export was left in %s: %v", env.out, entries)
	}
}

// diagLine is one line of a template diagnostics block: FILE[:LINE:COL]: …
var diagLine = regexp.MustCompile(`^(kiln \w+: )?[^ :]+(:\d+:\d+)?: [A-Z]`)

func (env *badInputEnv) check(t *testing.T, c badInputCase) {
	before := snapshot(t, env.home)
	os.Remove(env.qemuLog)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.bin, c.args...)
	cmd.Dir = env.dir
	path := c.path
	if path == "" {
		path = env.path
	}
	cmd.Env = env.environ(path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	code := 0
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("kiln %s still running after %s", strings.Join(c.args, " "), took.Round(time.Second))
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	out := stderr.String()
	t.Logf("kiln %s (%s, exit %d):\n%s", strings.Join(c.args, " "), took.Round(time.Millisecond), code, out)

	if code != c.code {
		t.Errorf("exit status %d, want %d", code, c.code)
	}
	for _, w := range c.want {
		if !strings.Contains(out, w) {
			t.Errorf("stderr does not say %q", w)
		}
	}
	for _, bad := range []string{"goroutine ", "panic:", "runtime error", "executable file not found"} {
		if strings.Contains(out, bad) {
			t.Errorf("stderr holds %q", bad)
		}
	}
	if stdout.Len() > 0 {
		t.Errorf("stdout is not empty: %q", stdout.String())
	}
	// Progress lines ("==> …") may come first; then one error line, or for
	// a template the diagnostics, one per line, each with its position.
	var errLines []string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if !strings.HasPrefix(l, "==> ") {
			errLines = append(errLines, l)
		}
	}
	switch {
	case len(errLines) == 0:
		t.Error("no error line")
	case c.diags:
		for _, l := range errLines {
			if !diagLine.MatchString(l) {
				t.Errorf("not a diagnostic line (FILE:LINE:COL: Summary: detail): %q", l)
			}
		}
		if len(errLines) > 4 {
			t.Errorf("%d diagnostic lines; want one per mistake", len(errLines))
		}
	case len(errLines) > 1:
		t.Errorf("%d error lines, want one", len(errLines))
	case !strings.HasPrefix(errLines[0], "kiln "):
		t.Errorf("the error line does not start with \"kiln COMMAND: \": %q", errLines[0])
	}
	if n := strings.Count(out, "\n"); n > 6 {
		t.Errorf("stderr has %d lines; an error should be short", n)
	}
	if len(errLines) == 1 && len(errLines[0]) > 240 {
		t.Errorf("the error line is %d characters long; say less", len(errLines[0]))
	}

	// Nothing lost, nothing left behind.
	after := snapshot(t, env.home)
	for p, s := range before {
		if a, ok := after[p]; !ok {
			t.Errorf("%s was removed", p)
		} else if a != s {
			t.Errorf("%s changed: %s → %s", p, s, a)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s was left behind", p)
		}
	}
	if b, err := os.ReadFile(env.qemuLog); err == nil {
		t.Errorf("QEMU was started: qemu-system-x86_64 %s", strings.TrimSpace(string(b)))
	}
	if pids := processesUsing(env.home); len(pids) > 0 {
		t.Errorf("processes left running with %s on their command line: %v", env.home, pids)
	}
}

// setupBadInput makes the kiln home with tiny:1 in its store, the input
// folder and the PATHs.
func setupBadInput(t *testing.T, bin string) *badInputEnv {
	root := t.TempDir()
	env := &badInputEnv{
		bin:     bin,
		home:    filepath.Join(root, "home"),
		dir:     filepath.Join(root, "in"),
		out:     filepath.Join(root, "out"),
		qemuLog: filepath.Join(root, "qemu-started.log"),
	}
	fake := filepath.Join(root, "fakeqemu")
	imgOnly := filepath.Join(root, "imgonly")
	empty := filepath.Join(root, "empty")
	for _, d := range []string{env.dir, env.out, fake, imgOnly, empty} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A stand-in for qemu-system-x86_64, so that no case can boot a VM and
	// any attempt to is recorded. kiln never runs it to check it exists.
	script := "#!/bin/sh\necho \"$@\" >> '" + env.qemuLog + "'\necho 'stand-in QEMU: a bad-input test must not boot' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(fake, "qemu-system-x86_64"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	qemuImg, _ := exec.LookPath("qemu-img")
	if err := os.Symlink(qemuImg, filepath.Join(imgOnly, "qemu-img")); err != nil {
		t.Fatal(err)
	}
	env.path = fake + string(os.PathListSeparator) + os.Getenv("PATH")
	env.noQEMUSystem = imgOnly
	env.noQEMUImg = fake
	env.noQEMU = empty

	tiny := filepath.Join(env.dir, "tiny.qcow2")
	if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", tiny, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "images", "import", tiny, "--name", "tiny", "--version", "1")
	cmd.Env = env.environ(env.path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kiln images import: %v\n%s", err, out)
	}
	return env
}

func (env *badInputEnv) write(t *testing.T, files map[string]string) {
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(env.dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// environ is the test's environment without anything that points kiln
// elsewhere or changes its output or networking.
func (env *badInputEnv) environ(path string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH", k == "KILN_LOG", strings.HasPrefix(k, "KILN_"), strings.HasPrefix(k, "XDG_"),
			strings.HasSuffix(strings.ToUpper(k), "_PROXY"):
			continue
		}
		out = append(out, kv)
	}
	return append(out, "PATH="+path, "KILN_HOME="+env.home)
}

// snapshot records every file (not folder) under root with its size, mode
// and modification time. Folders are left out: kiln makes empty ones on
// demand (the runtime folder's claims/, the download cache), and whatever
// a command leaves in one shows up as a file.
func snapshot(t *testing.T, root string) map[string]string {
	snap := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		snap[rel] = fmt.Sprintf("%s %d bytes, modified %s", fi.Mode(), fi.Size(), fi.ModTime().Format(time.RFC3339Nano))
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return snap
}

// processesUsing lists live processes whose command line names dir, or
// whose KILN_HOME is dir: a QEMU or a fleet supervisor started on it.
func processesUsing(dir string) []string {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		environ, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "environ"))
		if !bytes.Contains(b, []byte(dir)) && !bytes.Contains(environ, []byte("KILN_HOME="+dir+"\x00")) {
			continue
		}
		out = append(out, filepath.Base(filepath.Dir(p))+": "+strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " "))
	}
	return out
}
