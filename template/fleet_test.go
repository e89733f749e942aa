package template

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

const fleetDir = "testdata/fleet"

func fleetFixture(name string) string { return filepath.Join(fleetDir, name) }

func TestLoadFleet(t *testing.T) {
	tests := []struct {
		file string
		want *FleetFile
	}{
		{"full.fleet.hcl", &FleetFile{
			Name:      "web",
			Image:     "hello:1.0.0",
			Count:     3,
			CPUs:      2,
			MemoryMiB: 1536,
			Ports:     []FleetPort{{Host: 8080, Guest: 80}, {Host: 8443, Guest: 443}},
			Health: &FleetHealth{
				Kind:      "http",
				Path:      "/healthz",
				Port:      8081,
				Interval:  2 * time.Second,
				Timeout:   500 * time.Millisecond,
				Delay:     90 * time.Second,
				Failures:  5,
				Successes: 2,
			},
		}},
		{"defaults.fleet.hcl", &FleetFile{Name: "web", Image: "hello", Count: 1, CPUs: 1, MemoryMiB: 512}},
		{"http-default-port.fleet.hcl", &FleetFile{
			Name: "web", Image: "hello:1.0.0", Count: 1, CPUs: 1, MemoryMiB: 512,
			Ports:  []FleetPort{{8080, 80}, {9090, 90}},
			Health: &FleetHealth{Kind: "http", Path: "/", Port: 80}, // the first port block's guest port
		}},
		{"tcp.fleet.hcl", &FleetFile{
			Name: "db", Image: "postgres:16", Count: 1, CPUs: 1, MemoryMiB: 512,
			Health: &FleetHealth{Kind: "tcp", Port: 5432},
		}},
		{"exec.fleet.hcl", &FleetFile{
			Name: "worker", Image: "worker:2", Count: 4, CPUs: 1, MemoryMiB: 512,
			Health: &FleetHealth{Kind: "exec", Command: "systemctl is-active worker", Interval: 10 * time.Second},
		}},
		{"fleet.json", &FleetFile{
			Name: "web", Image: "hello:1.0.0", Count: 2, CPUs: 1, MemoryMiB: 512,
			Ports:  []FleetPort{{8080, 8080}},
			Health: &FleetHealth{Kind: "http", Path: "/healthz", Port: 8080, Interval: time.Second},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := LoadFleet(fleetFixture(tt.file), Options{Env: noEnv})
			if err != nil {
				t.Fatalf("LoadFleet: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %s\nwant %s", fleetString(got), fleetString(tt.want))
			}
		})
	}
}

func fleetString(f *FleetFile) string {
	if f == nil || f.Health == nil {
		return fmt.Sprintf("%+v", f)
	}
	return fmt.Sprintf("%+v health %+v", *f, *f.Health)
}

func TestLoadFleetVariables(t *testing.T) {
	varFile := fleetFixture("prod.vars.hcl")
	tests := []struct {
		name    string
		opts    Options
		image   string
		count   int
		wantErr string
	}{
		{"defaults", Options{Env: noEnv}, "hello:1.0.0", 2, ""},
		{"--var over default", Options{Env: noEnv, Vars: map[string]string{"version": "2.0.0", "count": "5"}}, "hello:2.0.0", 5, ""},
		{"env over default", Options{Env: []string{"KILN_VAR_version=1.1.0", "KILN_VAR_undeclared=ignored"}}, "hello:1.1.0", 2, ""},
		{"var file over env", Options{Env: []string{"KILN_VAR_version=1.1.0", "KILN_VAR_count=3"}, VarFiles: []string{varFile}}, "hello:3.0.0", 4, ""},
		{"--var over all", Options{Env: []string{"KILN_VAR_version=1.1.0"}, VarFiles: []string{varFile}, Vars: map[string]string{"version": "9"}}, "hello:9", 4, ""},
		{"version is ignored", Options{Env: noEnv, Version: "7.7.7"}, "hello:1.0.0", 2, ""},
		{"undeclared --var", Options{Env: noEnv, Vars: map[string]string{"versoin": "2"}}, "", 0,
			`Undeclared variable: A value was given with --var for "versoin", but the template declares no variable of that name. Did you mean "version"?`},
		{"--var of the wrong type", Options{Env: noEnv, Vars: map[string]string{"count": "many"}}, "", 0,
			`Invalid value for variable: The value given with --var for "count" is not a valid number`},
		{"--var makes the value invalid", Options{Env: noEnv, Vars: map[string]string{"count": "20"}}, "", 0,
			"testdata/fleet/vars.fleet.hcl:12:11: Invalid count: count must be from 1 to 16 instances, not 20."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := LoadFleet(fleetFixture("vars.fleet.hcl"), tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v; want one containing %q", err, tt.wantErr)
				}
				if n := len(diagnostics(t, err)); n != 1 {
					t.Errorf("%d diagnostics, want 1:\n%v", n, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadFleet: %v", err)
			}
			if f.Image != tt.image || f.Count != tt.count {
				t.Errorf("image %q, count %d; want %q, %d", f.Image, f.Count, tt.image, tt.count)
			}
		})
	}
}

func TestLoadFleetErrors(t *testing.T) {
	tests := []struct {
		file string
		want []want // at is "LINE:COL" in file, or "" for no position
	}{
		{"err-syntax.fleet.hcl", []want{{"2:10", "Invalid expression"}}},
		{"err-no-fleet.fleet.hcl", []want{{"1:1", `Missing fleet block: A fleet file must describe one fleet, in a block such as fleet "NAME"`}}},
		{"err-two-fleets.fleet.hcl", []want{{"5:1", "Duplicate fleet block: A fleet file describes exactly one fleet; the first fleet block is at testdata/fleet/err-two-fleets.fleet.hcl:1:1."}}},
		{"err-fleet-no-name.fleet.hcl", []want{{"1:7", "Missing name for fleet: All fleet blocks must have 1 labels (name)."}}}, // and not "Missing fleet block"
		{"err-bad-name.fleet.hcl", []want{{"1:7", `Invalid fleet name: "Web_Servers" is not a valid fleet name: use 1 to 31 lower-case letters, digits and '-'`}}},
		{"err-long-name.fleet.hcl", []want{{"1:7", `Invalid fleet name: "a-fleet-name-that-is-much-too-long"`}}},
		{"err-missing-image.fleet.hcl", []want{{"1:1", `Missing image: The fleet needs the image its instances run: image = "NAME:VERSION"`}}},
		{"err-bad-image.fleet.hcl", []want{{"2:11", `Invalid image: invalid image ref "Hello:1.0.0": name must be lower-case letters, digits, ., _ or -; use NAME or NAME:VERSION`}}},
		{"err-count-zero.fleet.hcl", []want{{"3:11", "Invalid count: count must be from 1 to 16 instances, not 0."}}},
		{"err-count-17.fleet.hcl", []want{{"3:11", "Invalid count: count must be from 1 to 16 instances, not 17."}}},
		{"err-count-fraction.fleet.hcl", []want{{"3:11", "Invalid count: count must be a whole number, not 1.5."}}},
		{"err-cpus.fleet.hcl", []want{{"3:11", "Invalid cpus: cpus must be at least 1, not 0."}}},
		{"err-memory.fleet.hcl", []want{{"3:12", `Invalid size: memory: invalid size "512X": unknown unit "X"; use K, M, G or T.`}}},
		{"err-memory-no-unit.fleet.hcl", []want{{"3:12", `Invalid size: memory needs a unit: "2048" is ambiguous; write e.g. "2048M"`}}},
		{"err-memory-partial.fleet.hcl", []want{{"3:12", `Invalid size: memory must be a whole number of MiB, at least 1M; "100K" is 102400 bytes.`}}},
		{"err-duplicate-host-port.fleet.hcl", []want{{"8:13", "Duplicate host port: Front port 8080 is already used by the port block at testdata/fleet/err-duplicate-host-port.fleet.hcl:4:13; give each port block a different host port."}}},
		{"err-port-range.fleet.hcl", []want{
			{"4:13", "Invalid port: host must be a port number from 1 to 65535, not 0."},
			{"5:13", "Invalid port: guest must be a port number from 1 to 65535, not 65536."},
		}},
		{"err-port-missing-guest.fleet.hcl", []want{{"3:3", "Missing guest port: A port block needs host (the front port on 127.0.0.1) and guest"}}},
		{"err-health-kind.fleet.hcl", []want{{"3:10", `Unknown health check kind: There is no health check "htp"; use "http", "tcp" or "exec". Did you mean "http"?`}}},
		{"err-http-no-path.fleet.hcl", []want{{"7:3", `Missing path: An http check needs the path to GET, e.g. path = "/healthz".`}}},
		{"err-http-bad-path.fleet.hcl", []want{{"4:12", `Invalid path: "healthz" is not a URL path: it must start with "/"`}}},
		{"err-http-no-port.fleet.hcl", []want{{"3:3", "Missing port: An http check needs a guest port to probe: set port in the health block, or add a port block"}}},
		{"err-exec-no-command.fleet.hcl", []want{{"3:3", `Missing command: An exec check needs the command to run in each instance`}}},
		{"err-tcp-no-port.fleet.hcl", []want{{"3:3", "Missing port: A tcp check needs a guest port to probe: set port in the health block, or add a port block"}}},
		{"err-wrong-kind-argument.fleet.hcl", []want{
			{"5:5", `Unexpected path: path only applies to "http" checks, not to exec ones; remove it.`},
			{"6:5", `Unexpected port: port only applies to "http" or "tcp" checks, not to exec ones; remove it.`},
		}},
		{"err-duration.fleet.hcl", []want{
			{"5:16", `Invalid duration: interval must be a duration such as "90s", "10m" or "1h30m"; "2 seconds" is not`},
			{"6:16", `Invalid duration: delay must be a duration such as "90s", "10m" or "1h30m"; "-1s" is not: it is negative.`},
		}},
		{"err-failures.fleet.hcl", []want{
			{"5:17", "Invalid failures: failures is a number of consecutive probes and must be at least 1, not 0; leave it out for the default."},
			{"6:17", "Invalid successes: successes is a number of consecutive probes and must be at least 1, not -1"},
		}},
		{"err-two-health.fleet.hcl", []want{{"6:3", "Duplicate health block: Only one health block is allowed; the first is at testdata/fleet/err-two-health.fleet.hcl:3:3."}}},
		{"err-misspelt-attribute.fleet.hcl", []want{ // and not "Missing image"
			{"2:3", `Unsupported argument: An argument named "imgae" is not expected here. Did you mean "image"?`},
		}},
		{"err-misspelt-block.fleet.hcl", []want{{"3:3", `Unsupported block type: Blocks of type "helth" are not expected here. Did you mean "health"?`}}},
		{"err-misspelt-fleet.fleet.hcl", []want{{"1:1", `Unsupported block type: Blocks of type "flet" are not expected here. Did you mean "fleet"?`}}}, // and not "Missing fleet block"
		{"err-misspelt-health-argument.fleet.hcl", []want{ // and not "Missing command"
			{"4:5", `Unsupported argument: An argument named "comand" is not expected here. Did you mean "command"?`},
		}},
		{"err-misspelt-port-argument.fleet.hcl", []want{ // and not "Missing guest port"
			{"5:5", `Unsupported argument: An argument named "gues" is not expected here. Did you mean "guest"?`},
		}},
		{"err-http-port-no-path.fleet.hcl", []want{ // port is not taken for a misspelt path
			{"3:3", "Missing path"},
		}},
		{"err-undefined-variable.fleet.hcl", []want{{"6:20", `Undefined variable: The template uses var.versoin but declares no variable "versoin". Did you mean "version"?`}}},
		{"err-many.fleet.hcl", []want{ // all at once
			{"1:7", `Invalid fleet name: "Web"`},
			{"1:1", "Missing image"},
			{"2:12", "Invalid count"},
			{"3:12", `Invalid size: memory: invalid size "lots"`},
			{"9:13", "Duplicate host port"},
			{"13:16", "Invalid failures"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := fleetFixture(tt.file)
			f, err := LoadFleet(path, Options{Env: noEnv})
			if f != nil {
				t.Errorf("got a FleetFile as well as an error: %s", fleetString(f))
			}
			checkFleetDiags(t, path, err, tt.want)
		})
	}
}

func TestLoadFleetMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.fleet.hcl")
	_, err := LoadFleet(path, Options{Env: noEnv})
	ds := diagnostics(t, err)
	if len(ds) != 1 || ds[0].File != path || ds[0].Summary != "Cannot read fleet file" {
		t.Errorf("got %v", err)
	}
}

// checkFleetDiags asserts that err holds exactly the wanted diagnostics,
// each at its position in path, so that each case also shows that one
// mistake is reported once.
func checkFleetDiags(t *testing.T, path string, err error, wants []want) {
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
				if d.File != path {
					continue
				}
				at = fmt.Sprintf("%d:%d", d.Line, d.Column)
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

// FuzzLoadFleet feeds arbitrary bytes to LoadFleet as a fleet file. It must
// never panic, and must return either a FleetFile within every limit
// LoadFleet documents or a non-empty Diagnostics with every problem at a
// FILE:LINE:COL inside the file, rendered one per line; never both.
func FuzzLoadFleet(f *testing.F) {
	entries, err := os.ReadDir(fleetDir)
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(fleetDir, e.Name())); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(""))
	f.Add([]byte("fleet \"x\" {\n"))
	f.Add([]byte(`fleet "x" { image = "a" health "tcp" { port = 1e999 } }`))
	path := filepath.Join(f.TempDir(), "web.fleet.hcl")
	f.Fuzz(func(t *testing.T, src []byte) {
		if err := os.WriteFile(path, src, 0o644); err != nil {
			t.Fatal(err)
		}
		ff, err := LoadFleet(path, Options{Env: noEnv})
		if err != nil {
			if ff != nil {
				t.Fatalf("both a FleetFile and an error")
			}
			checkDiagnostics(t, err, path, src)
			return
		}
		if ff == nil {
			t.Fatal("neither a FleetFile nor an error")
		}
		if problem := checkFleetFile(ff); problem != "" {
			t.Fatalf("invalid FleetFile accepted (%s): %s", problem, fleetString(ff))
		}
	})
}

// checkFleetFile returns what in f breaks LoadFleet's documented limits,
// or "".
func checkFleetFile(f *FleetFile) string {
	switch {
	case fleet.CheckName(f.Name) != nil:
		return "name"
	case f.Count < 1 || f.Count > fleet.MaxInstances || f.CPUs < 1 || f.MemoryMiB < 1:
		return "count, cpus or memory"
	}
	if _, err := images.ParseRef(f.Image); err != nil {
		return err.Error()
	}
	hosts := map[int]bool{}
	for _, p := range f.Ports {
		if p.Host < 1 || p.Host > 65535 || p.Guest < 1 || p.Guest > 65535 || hosts[p.Host] {
			return fmt.Sprintf("port %+v", p)
		}
		hosts[p.Host] = true
	}
	h := f.Health
	if h == nil {
		return ""
	}
	switch h.Kind {
	case "http":
		if !strings.HasPrefix(h.Path, "/") || strings.ContainsFunc(h.Path, isSpaceOrControl) || h.Command != "" {
			return "http check"
		}
	case "tcp":
		if h.Path != "" || h.Command != "" {
			return "tcp check"
		}
	case "exec":
		if strings.TrimSpace(h.Command) == "" || h.Path != "" || h.Port != 0 {
			return "exec check"
		}
	default:
		return "health kind"
	}
	if h.Kind != "exec" && (h.Port < 1 || h.Port > 65535) {
		return "health port"
	}
	if h.Interval < 0 || h.Timeout < 0 || h.Delay < 0 || h.Failures < 0 || h.Successes < 0 {
		return "health timing or threshold"
	}
	return ""
}
