package template

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHugeNumbers checks that numbers too large to print quickly are
// refused rather than hanging Load (printing 1e99999999 takes minutes).
func TestHugeNumbers(t *testing.T) {
	const numVar = "variable \"n\" {\n  type = number\n  default = 1\n}\n"
	withVersion := func(expr string) string { return strings.Replace(minimal, `"1.0.0"`, expr, 1) }
	tests := []struct {
		name  string
		tmpl  string
		files map[string]string
		opts  Options
		want  string
	}{
		{name: "number literal", tmpl: withVersion(`1e99999999`), want: "Number out of range"},
		{name: "tiny literal", tmpl: withVersion(`1e-99999999`), want: "Number out of range"},
		{name: "interpolated literal", tmpl: withVersion(`"v${1e99999999}"`), want: "Number out of range"},
		{name: "numeric string in arithmetic", tmpl: withVersion(`"${"1e99999999" + 0}"`), want: "Number out of range"},
		{name: "numeric string as cpus", tmpl: strings.Replace(minimal, "version", "cpus = \"1e99999999\"\n  version", 1), want: "Number out of range"},
		{name: "tonumber", tmpl: withVersion(`tonumber("1${"e99999999"}")`), want: "number out of range"},
		{name: "jsondecode", tmpl: withVersion(`"${jsondecode("1${"e99999999"}")}"`), want: "number out of range"},
		{name: "product", tmpl: withVersion(`1e300 * 1e300 * 1e300 * 1e300`), want: "number out of range"},
		{name: "function argument", tmpl: withVersion(`format("%d", 1e300 * 1e300 * 1e300 * 1e300)`), want: "number out of range"},
		{name: "--var", tmpl: numVar + minimal, opts: Options{Vars: map[string]string{"n": "1e99999999"}}, want: "number out of range"},
		{name: "env", tmpl: numVar + minimal, opts: Options{Env: []string{"KILN_VAR_n=1e99999999"}}, want: "number out of range"},
		{name: "var file literal", tmpl: numVar + minimal, files: map[string]string{"v.hcl": "n = 1e99999999\n"}, opts: Options{VarFiles: []string{"v.hcl"}}, want: "Number out of range"},
		{name: "var file string", tmpl: numVar + minimal, files: map[string]string{"v.hcl": "n = \"1e99999999\"\n"}, opts: Options{VarFiles: []string{"v.hcl"}}, want: "Number out of range"},
		{name: "json var file", tmpl: numVar + minimal, files: map[string]string{"v.json": `{"n": 1e99999999}`}, opts: Options{VarFiles: []string{"v.json"}}, want: "number out of range"},
		{name: "templatefile literal", tmpl: withVersion(`templatefile("t.tpl", {})`), files: map[string]string{"t.tpl": "${1e99999999}"}, want: "Number out of range"},
		{name: "templatefile variable", tmpl: withVersion(`templatefile("t.tpl", { x = 1e300 * 1e300 * 1e300 * 1e300 })`), files: map[string]string{"t.tpl": "${x}"}, want: "number out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeDir(t, tt.files)
			for i, f := range tt.opts.VarFiles {
				tt.opts.VarFiles[i] = filepath.Join(dir, f)
			}
			if err := putFile(dir, "kiln.hcl", tt.tmpl); err != nil {
				t.Fatal(err)
			}
			if tt.opts.Env == nil {
				tt.opts.Env = noEnv
			}
			start := time.Now()
			err := Validate(filepath.Join(dir, "kiln.hcl"), tt.opts)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v; want one containing %q", err, tt.want)
			}
		})
	}
}

func TestOrdinaryNumbers(t *testing.T) {
	got, _ := evalInline(t, []string{`"${1e300}"`, `"${0.000001}"`, `"${2 * 3}"`, `format("%.1f", 1.25)`}, nil, Options{})
	want := []string{"1" + strings.Repeat("0", 300), "0.000001", "6", "1.2"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got[%d] = %.40q, want %.40q", i, got[i], want[i])
		}
	}
}
