package template

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// evalInline loads a template whose only provisioner runs the given
// expressions as inline commands, and returns what they evaluated to.
func evalInline(t *testing.T, exprs []string, files map[string]string, opts Options) ([]string, string) {
	t.Helper()
	tmpl := "variable \"name\" { default = \"World\" }\nimage \"f\" {\n  version = \"1\"\n  base { image = \"d\" }\n  provision \"shell\" {\n    inline = [\n"
	for _, e := range exprs {
		tmpl += "      " + e + ",\n"
	}
	tmpl += "    ]\n  }\n}\n"
	spec, dir := mustLoad(t, tmpl, files, opts)
	return spec.Provisioners[0].Inline, dir
}

func hexOf(sum []byte) string { return hex.EncodeToString(sum) }

func TestFunctions(t *testing.T) {
	s256 := sha256.Sum256([]byte("hello"))
	s512 := sha512.Sum512([]byte("hello"))
	m5 := md5.Sum([]byte("hello"))
	tests := []struct {
		expr string
		want string // "/regexp/" or the exact value; "DIR" stands for the template's folder
	}{
		{`file("motd.txt")`, "Welcome\n"},
		{`file("sub/../motd.txt")`, "Welcome\n"},
		{`templatefile("greet.tpl", { name = var.name, items = ["a", "b"] })`, "Hello, World!\n- a\n- b\n"},
		{`templatefile("plain.tpl", {})`, "upper: ABC"},
		{`env("KILN_TEST")`, "from env"},
		{`env("KILN_UNSET")`, ""},
		{`timestamp()`, `/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/`},
		{`formatdate("YYYY", timestamp())`, `/^\d{4}$/`},
		{`sha256("hello")`, hexOf(s256[:])},
		{`sha512("hello")`, hexOf(s512[:])},
		{`md5("hello")`, hexOf(m5[:])},
		{`base64encode("hello")`, "aGVsbG8="},
		{`base64decode("aGVsbG8=")`, "hello"},
		{`jsonencode({ a = 1, b = ["x", true] })`, `{"a":1,"b":["x",true]}`},
		{`jsondecode("{\"k\": \"v\"}").k`, "v"},
		{`yamlencode({ packages = ["jq", "curl"], count = 1, s = "true", "x y" = null })`, "count: 1\npackages:\n  - jq\n  - curl\ns: \"true\"\nx y: null\n"},
		{`upper("a")`, "A"},
		{`lower("A")`, "a"},
		{`trimspace("  a \n")`, "a"},
		{`replace("a-b-c", "-", "+")`, "a+b+c"},
		{`join(",", split(" ", "a b c"))`, "a,b,c"},
		{`format("%s=%03d", "n", 7)`, "n=007"},
		{`join(" ", concat(["a"], ["b", "c"]))`, "a b c"},
		{`lookup(merge({ a = "1" }, { a = "2" }), "a", "none")`, "2"},
		{`lookup({}, "a", "none")`, "none"},
		{`length("héllo")`, "5"},
		{`length(["a", "b"])`, "2"},
		{`length({ a = 1 })`, "1"},
		{`coalesce("", "b")`, "b"},
		{`coalesce(null, 3)`, "3"},
		{`abspath("x/y")`, "DIR/x/y"},
		{`abspath("/etc/x")`, "/etc/x"},
		{`basename("/a/b.txt")`, "b.txt"},
		{`dirname("/a/b.txt")`, "/a"},
		{`try(jsondecode("nope"), "fallback")`, "fallback"},
		{`tostring(can(file("missing")))`, "false"},
		{`indent(2, "a\nb")`, "a\n  b"},
		{`"${upper(var.name)}-${1 + 1}"`, "WORLD-2"},
	}
	exprs := make([]string, len(tests))
	for i, tt := range tests {
		exprs[i] = tt.expr
	}
	files := map[string]string{
		"motd.txt":  "Welcome\n",
		"greet.tpl": "Hello, ${name}!\n%{ for i in items ~}\n- ${i}\n%{ endfor ~}\n",
		"plain.tpl": `upper: ${upper("abc")}`,
	}
	got, dir := evalInline(t, exprs, files, Options{Env: []string{"KILN_TEST=from env"}})
	for i, tt := range tests {
		want := strings.ReplaceAll(tt.want, "DIR", dir)
		if strings.HasPrefix(want, "/") && strings.HasSuffix(want, "/") && len(want) > 1 {
			if !regexp.MustCompile(want[1 : len(want)-1]).MatchString(got[i]) {
				t.Errorf("%s = %q, want match for %s", tt.expr, got[i], want)
			}
			continue
		}
		if got[i] != want {
			t.Errorf("%s = %q, want %q", tt.expr, got[i], want)
		}
	}
}

// TestTimestampStable checks that timestamp() is the load time, the same
// in every call, so two attributes that use it agree.
func TestTimestampStable(t *testing.T) {
	before := time.Now().UTC().Truncate(time.Second)
	got, _ := evalInline(t, []string{`timestamp()`, `timestamp()`}, nil, Options{})
	after := time.Now().UTC()
	ts, err := time.Parse(time.RFC3339, got[0])
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != got[1] || ts.Before(before) || ts.After(after) {
		t.Errorf("timestamps %q, %q not within [%v, %v]", got[0], got[1], before, after)
	}
}

func TestFunctionErrors(t *testing.T) {
	tests := []struct {
		expr  string
		files map[string]string
		want  []want
	}{
		{`file("nope.txt")`, nil, []want{{"7:13", `Invalid function argument: Invalid value for "path" parameter: no file exists at "nope.txt"`}}},
		{`file("dir")`, map[string]string{"dir/x": ""}, []want{{"7:13", `"dir" is not a regular file`}}},
		{`file("bin")`, map[string]string{"bin": "\xff\xfe"}, []want{{"7:13", `"bin" is not valid UTF-8 text`}}},
		{`templatefile("t.tpl", {})`, map[string]string{"t.tpl": "Hi ${who}"},
			[]want{{"7:7", `Error in function call: Call to function "templatefile" failed: t.tpl:1:6: Unknown variable: There is no variable named "who".`}}},
		{`templatefile("t.tpl", {})`, map[string]string{"t.tpl": "Hi ${"},
			[]want{{"7:21", `Invalid function argument: Invalid value for "path" parameter: t.tpl:1:6: Missing expression`}}},
		{`templatefile("t.tpl", {})`, map[string]string{"t.tpl": `${templatefile("t.tpl", {})}`},
			[]want{{"7:7", `templatefile cannot be called from a template rendered by templatefile`}}},
		{`templatefile("t.tpl", "x")`, map[string]string{"t.tpl": ""},
			[]want{{"7:30", `vars must be a map or an object, not string`}}},
		{`templatefile("t.tpl", { "a b" = 1 })`, map[string]string{"t.tpl": ""},
			[]want{{"7:29", `"a b" cannot be a template variable`}}},
		{`base64decode("!!")`, nil, []want{{"7:21", `invalid base64`}}},
		{`sha256(["x"])`, nil, []want{{"7:14", `Invalid function argument`}}},
		{`length(1)`, nil, []want{{"7:14", `value must be a string, list, map or object, not number`}}},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			tmpl := "variable \"name\" { default = \"World\" }\nimage \"f\" {\n  version = \"1\"\n  base { image = \"d\" }\n  provision \"shell\" {\n    inline = [\n      " + tt.expr + ",\n    ]\n  }\n}\n"
			_, dir, err := load(t, tmpl, tt.files, Options{})
			checkDiags(t, dir, err, tt.want)
		})
	}
}

// TestFunctionList pins the documented function set.
func TestFunctionList(t *testing.T) {
	want := "abspath base64decode base64encode basename can chomp coalesce concat contains dirname distinct env file flatten format formatdate indent join jsondecode jsonencode keys length lookup lower max md5 merge min regex_replace replace sha256 sha512 split substr templatefile timestamp title tobool tonumber tostring trim trimprefix trimspace trimsuffix try upper values yamlencode"
	if got := strings.Join(functionNames(), " "); got != want {
		t.Errorf("functions:\n got %s\nwant %s", got, want)
	}
}

func TestCloudInitFromTemplatefile(t *testing.T) {
	tmpl := `image "ci" {
  version = "1"
  base { image = "d" }
  cloud_init {
    user_data = templatefile("cc.tpl", { user = "kiln" })
  }
}
`
	spec, _ := mustLoad(t, tmpl, map[string]string{"cc.tpl": "#cloud-config\nusers: [${user}]\n"}, Options{})
	if got := string(spec.UserData); got != "#cloud-config\nusers: [kiln]\n" {
		t.Errorf("UserData = %q", got)
	}
}

// functionNames lists the available functions.
func functionNames() []string {
	var names []string
	for n := range (&evalState{}).functions() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
