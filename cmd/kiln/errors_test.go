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
	name string
	args []string
	path string   // PATH for this case; "" means env.path
	code int      // exit status
	want []string // phrases stderr must contain
	hide []string // phrases stderr must not contain (secrets, raw control characters)
	// maxLine raises the 240-character bound on the error line, for a line
	// that quotes two of the test's long temporary paths.
	maxLine int
	diags   bool // a template diagnostics block rather than one error line
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
		if r.URL.Path == "/json.qcow2" {
			http.ServeFile(w, r, filepath.Join(env.dir, "json.qcow2"))
			return
		}
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
	h := env.hostile(t, srv.URL)
	deep := strings.Repeat("[", 50_000) + strings.Repeat("]", 50_000)
	env.write(t, map[string]string{
		"base-datafile.kiln.hcl": img("  base { file = \"datafile.qcow2\" }\n"),
		"base-json.kiln.hcl":     img("  base { file = \"json.qcow2\" }\n"),
		"base-url-json.kiln.hcl": img("  base {\n    url = \"" + srv.URL + "/json.qcow2\"\n    checksum = \"sha256:" + h.jsonSum + "\"\n  }\n"),
		"sensitive.kiln.hcl": "variable \"token\" {\n  default = \"tok-3f9a-secret\"\n  sensitive = true\n}\n" +
			img("  base { image = \"tiny:1\" }\n  disk_size = var.token\n  cloud_init { user_data = file(\"secret.txt\") }\n  memory = file(\"secret.txt\")\n"),
		"secret.txt":           "db-pass-7c1e\n",
		"deep.kiln.hcl":        img("  base { image = \"tiny:1\" }\n  disk_size = " + deep + "\n"),
		"deep-vars.hcl":        "v = " + deep + "\n",
		"vars.kiln.hcl":        "variable \"v\" { default = \"4G\" }\n" + img("  base { image = \"tiny:1\" }\n  disk_size = var.v\n"),
		"deep.fleet.hcl":       "fleet \"w\" {\n  image = \"tiny:1\"\n  count = " + deep + "\n}\n",
		"ctl\x1b[2Jname.qcow2": "hello\n",
	})

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
			{name: "sensitive_value_and_file_contents", args: []string{"validate", "sensitive.kiln.hcl"}, code: 1, diags: true,
				want: []string{`Invalid size: disk_size: invalid size <sensitive var.token>`, `<the contents of secret.txt>`},
				hide: []string{"tok-3f9a-secret", "db-pass-7c1e"}},
			{name: "deep_nesting", args: []string{"validate", "deep.kiln.hcl"}, code: 1, diags: true,
				want: []string{"deep.kiln.hcl:4:114: Too deeply nested: The file nests more than 100 levels deep here"}},
			{name: "deep_var_file", args: []string{"validate", "vars.kiln.hcl", "--var-file", "deep-vars.hcl"}, code: 1, diags: true,
				want: []string{"deep-vars.hcl:1:105: Too deeply nested"}},
			{name: "template_is_a_fifo", args: []string{"validate", "fifo.kiln.hcl"}, code: 1, diags: true,
				want: []string{"fifo.kiln.hcl: Cannot read template: not a regular file"}},
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
			{name: "base_file_with_data_file", args: []string{"build", "base-datafile.kiln.hcl"}, code: 1,
				want: []string{"base file: image " + filepath.Join(env.dir, "datafile.qcow2") + ": qcow2 external data file points at " + h.secret}, maxLine: 300},
			{name: "base_file_with_json_backing", args: []string{"build", "base-json.kiln.hcl"}, code: 1,
				want: []string{"base file: image " + filepath.Join(env.dir, "json.qcow2") + ": qcow2 backing file points at json:{… " + h.secret + " …}: qemu would open what it names"}, maxLine: 300},
			{name: "base_url_with_json_backing", args: []string{"build", "base-url-json.kiln.hcl"}, code: 1,
				want: []string{"base url: image " + srv.URL + "/json.qcow2: qcow2 backing file points at json:{… " + h.secret + " …}", "(the download was removed from the cache)"}, maxLine: 300},
			{name: "base_of_truncated_blob", args: []string{"build", "base-short.kiln.hcl"}, code: 1,
				want: []string{"image short:1: its blob sha256:", "but its manifest says"}},
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
			{name: "json_backing", args: []string{"run", "json.qcow2"}, code: 1,
				want: []string{"kiln run: image json.qcow2: qcow2 backing file points at json:{… " + h.secret + " …}"}},
			{name: "vmdk_flat_extent", args: []string{"run", "flat.vmdk"}, code: 1,
				want: []string{"kiln run: image flat.vmdk: vmdk flat extent points at " + h.secret}},
			{name: "device_node", args: []string{"run", h.device}, code: 1,
				want: []string{"not a regular file (" + h.deviceKind + ")"}},
			{name: "control_characters_in_name", args: []string{"run", "ctl\x1b[2Jname.qcow2"}, code: 1,
				want: []string{`ctl\x1b[2Jname.qcow2 is not a disk image`}, hide: []string{"\x1b"}},
			{name: "truncated_blob", args: []string{"run", "short:1"}, code: 1,
				want: []string{"kiln run: image short:1: its blob sha256:", "but its manifest says", "it was truncated or changed"}},
			{name: "user_data_fifo", args: []string{"run", "tiny:1", "--user-data", "fifo.kiln.hcl"}, code: 1,
				want: []string{"--user-data: open fifo.kiln.hcl: not a regular file"}},
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
			{name: "import_data_file", args: []string{"images", "import", "datafile.qcow2", "--name", "t", "--version", "2"}, code: 1,
				want: []string{"kiln images import: image datafile.qcow2: qcow2 external data file points at " + h.secret}},
			{name: "import_json_backing", args: []string{"images", "import", "json.qcow2", "--name", "t", "--version", "2"}, code: 1,
				want: []string{"image json.qcow2: qcow2 backing file points at json:{… " + h.secret + " …}"}},
			{name: "import_vmdk_flat_extent", args: []string{"images", "import", "flat.vmdk", "--name", "t", "--version", "2"}, code: 1,
				want: []string{"image flat.vmdk: vmdk flat extent points at " + h.secret}},
			{name: "export_onto_device", args: []string{"images", "export", "tiny:1", "--format", "raw", "-o", h.device}, code: 1,
				want: []string{h.device + " is " + h.deviceKind + ", not a regular file: kiln replaces only regular files"}},
			{name: "export_onto_folder", args: []string{"images", "export", "tiny:1", "--format", "raw", "-o", env.dir}, code: 1,
				want: []string{"is a folder, not a regular file"}},
			{name: "export_into_the_store", args: []string{"images", "export", "tiny:1", "--format", "qcow2", "-o", filepath.Join(env.home, "data", "images", "manifests", "tiny", "1.json")}, code: 1,
				want: []string{"is inside kiln's own folder"}},
			{name: "export_bit_flipped_blob", args: []string{"images", "export", "flipped:1", "--format", "qcow2", "-o", filepath.Join(env.out, "flipped.qcow2")}, code: 1,
				want: []string{"kiln images export: export flipped:1: blob sha256:", "is damaged (its bytes no longer match its digest): nothing was exported"}},
			{name: "export_truncated_blob", args: []string{"images", "export", "short:1", "--format", "raw", "-o", filepath.Join(env.out, "short.raw")}, code: 1,
				want: []string{"image short:1: its blob sha256:", "but its manifest says"}},
		}},
		{"fleet", []badInputCase{
			{name: "up_unknown_image", args: []string{"fleet", "up", "w", "--image", "nope:1"}, code: 1,
				want: []string{"image nope:1 not found"}},
			{name: "up_front_port_in_use", args: []string{"fleet", "up", "web", "--image", "tiny:1", "--port", fmt.Sprintf("%d:8080", busyPort)}, code: 1,
				want: []string{fmt.Sprintf("front port 127.0.0.1:%d is already in use; pick another --port", busyPort)}},
			{name: "up_truncated_blob", args: []string{"fleet", "up", "w", "--image", "short:1"}, code: 1,
				want: []string{"image short:1: its blob sha256:", "but its manifest says"}},
			{name: "up_deep_fleet_file", args: []string{"fleet", "up", "-f", "deep.fleet.hcl"}, code: 1,
				want: []string{"kiln fleet up: deep.fleet.hcl:3:110: Too deeply nested"}},
			{name: "up_invalid_memory", args: []string{"fleet", "up", "w", "--image", "tiny:1", "--memory", "12X"}, code: 2,
				want: []string{`--memory: invalid size "12X"`}},
			{name: "up_invalid_front", args: []string{"fleet", "up", "w", "--image", "tiny:1", "--front", "https"}, code: 2,
				want: []string{`kiln fleet up: --front "https": use http (a reverse proxy that routes each request) or tcp`}},
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
		{"cache", []badInputCase{
			{name: "no_subcommand", args: []string{"cache"}, code: 2,
				want: []string{"kiln cache: say what to do: kiln cache ls | prune"}},
			{name: "unknown_subcommand", args: []string{"cache", "clear"}, code: 2,
				want: []string{`kiln cache: unknown cache command "clear": use ls or prune`}},
			{name: "prune_unknown_state", args: []string{"cache", "prune", "0123456789abcdef0123456789abcdef"}, code: 1,
				want: []string{"kiln cache: no saved state \"0123456789abcdef0123456789abcdef\"; `kiln cache ls` lists them"}},
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
	for _, h := range c.hide {
		if strings.Contains(out, h) {
			t.Errorf("stderr shows %q", h)
		}
	}
	for _, bad := range []string{"goroutine ", "panic:", "runtime error", "executable file not found", "fatal error"} {
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
	maxLine := 240
	if c.maxLine > 0 {
		maxLine = c.maxLine
	}
	if len(errLines) == 1 && len(errLines[0]) > maxLine {
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

// hostileFiles are the images and paths a careful attacker hands kiln.
type hostileFiles struct {
	secret  string // a host file standing for /etc/shadow
	jsonSum string // sha256 of json.qcow2, served by the test's server
	device  string // a character device made with mknod (a folder when not root)
	// deviceKind is how kiln names device: "a character device" or, when
	// mknod needs a root this test does not have, "a folder".
	deviceKind string
	blob       string // a blob of the store, as an export destination
}

// hostile writes, in env.dir: a qcow2 with an external data file and one
// with a json: backing (both on the host file), a vmdk descriptor whose
// flat extent is the host file, a FIFO and a device node; and in the store
// short:1 (its blob truncated) and flipped:1 (a bit of its blob flipped),
// with a template building on short:1.
func (env *badInputEnv) hostile(t *testing.T, url string) hostileFiles {
	h := hostileFiles{secret: filepath.Join(env.dir, "host-secret")}
	if err := os.WriteFile(h.secret, bytes.Repeat([]byte("root:$y$j9T$secret-hash:19000:0:99999:7:::\n"), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	qemuImg := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
		}
	}
	in := func(n string) string { return filepath.Join(env.dir, n) }
	qemuImg("create", "-q", "-f", "qcow2", "-o", "data_file="+h.secret+",data_file_raw=on", in("datafile.qcow2"), "64M")
	qemuImg("create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", `json:{"driver":"raw","file":{"driver":"file","filename":"`+h.secret+`"}}`, in("json.qcow2"), "64M")
	env.write(t, map[string]string{"flat.vmdk": "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 80 FLAT \"" + h.secret + "\" 0\n"})
	b, err := os.ReadFile(in("json.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	h.jsonSum = hex.EncodeToString(sum[:])
	if err := syscallMkfifo(in("fifo.kiln.hcl")); err != nil {
		t.Fatal(err)
	}
	if err := syscallMknodNull(in("null")); err == nil {
		h.device, h.deviceKind = in("null"), "a character device"
	} else {
		t.Logf("mknod needs root (%v): the device cases use a folder", err)
		h.device, h.deviceKind = in("folder-standing-for-a-device"), "a folder"
		os.Mkdir(h.device, 0o700)
	}

	// Two more stored images, damaged after they were stored.
	for _, name := range []string{"short", "flipped"} {
		// Distinct sizes, so each has a blob of its own.
		qemuImg("create", "-q", "-f", "qcow2", in(name+".qcow2"), map[string]string{"short": "32M", "flipped": "48M"}[name])
		cmd := exec.Command(env.bin, "images", "import", in(name+".qcow2"), "--name", name, "--version", "1")
		cmd.Env = env.environ(env.path)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("import %s: %v\n%s", name, err, out)
		}
	}
	blobs, _ := filepath.Glob(filepath.Join(env.home, "data", "images", "blobs", "sha256", "*"))
	manifests := map[string]string{}
	for _, name := range []string{"short", "flipped"} {
		m, err := os.ReadFile(filepath.Join(env.home, "data", "images", "manifests", name, "1.json"))
		if err != nil {
			t.Fatal(err)
		}
		manifests[name] = string(m)
	}
	for _, blob := range blobs {
		hex := filepath.Base(blob)
		switch {
		case strings.Contains(manifests["short"], hex):
			os.Chmod(blob, 0o644)
			st, _ := os.Stat(blob)
			if err := os.Truncate(blob, st.Size()-512); err != nil {
				t.Fatal(err)
			}
			os.Chmod(blob, 0o444)
		case strings.Contains(manifests["flipped"], hex):
			os.Chmod(blob, 0o644)
			data, _ := os.ReadFile(blob)
			data[len(data)-100] ^= 1
			os.WriteFile(blob, data, 0o444)
		default:
			h.blob = blob
		}
	}
	env.write(t, map[string]string{"base-short.kiln.hcl": "image \"x\" {\n  version = \"1.0\"\n  base { image = \"short:1\" }\n}\n"})
	return h
}

// TestStoreStrangers: a FIFO and a device node left in the store's folders
// make `images ls` and `images verify` warn and go on, never hang.
func TestStoreStrangers(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed (apt-get install qemu-utils)")
	}
	bin, err := kilnBinary()
	if err != nil {
		t.Fatal(err)
	}
	env := setupBadInput(t, bin)
	manifests := filepath.Join(env.home, "data", "images", "manifests", "tiny")
	if err := syscallMkfifo(filepath.Join(manifests, "2.json")); err != nil {
		t.Fatal(err)
	}
	syscallMknodNull(filepath.Join(manifests, "3.json")) // needs root; the FIFO alone is enough
	// Free text from outside reaches the terminal escaped.
	revoke := exec.Command(bin, "images", "revoke", "tiny:1", "--reason", "CVE\x1b[2J\x1b]0;owned\x07 in openssl")
	revoke.Env = env.environ(env.path)
	if out, err := revoke.CombinedOutput(); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	tree := exec.Command(bin, "images", "tree")
	tree.Env = env.environ(env.path)
	out, err := tree.Output()
	if err != nil || !strings.Contains(string(out), `(revoked: CVE\x1b[2J\x1b]0;owned\x07 in openssl)`) || strings.ContainsAny(string(out), "\x1b\x07") {
		t.Errorf("images tree: %v\n%q", err, out)
	}
	for _, args := range [][]string{{"images", "ls"}, {"images", "verify"}, {"images", "show", "tiny"}, {"run", "tiny:2"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env.environ(env.path)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		hung := ctx.Err() != nil
		cancel()
		if hung {
			t.Fatalf("kiln %s hangs on a FIFO in the store", strings.Join(args, " "))
		}
		t.Logf("kiln %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		switch args[0] {
		case "images":
			if err != nil || !strings.Contains(stdout.String(), "tiny") {
				t.Errorf("kiln %s: %v; want tiny:1 listed", strings.Join(args, " "), err)
			}
			if !strings.Contains(stderr.String(), "skipping a file that is not a regular file") || !strings.Contains(stderr.String(), "2.json") {
				t.Errorf("kiln %s does not warn about the FIFO", strings.Join(args, " "))
			}
		case "run":
			if err == nil || !strings.Contains(stderr.String(), "not a regular file") {
				t.Errorf("kiln run tiny:2 (a FIFO manifest): %v", err)
			}
		}
	}
}
