package template

import (
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

// FleetFile is a fleet as described by a fleet file: the same settings as
// the flags of `kiln fleet up`, with every default filled in.
type FleetFile struct {
	Name      string
	Image     string // an image ref as written: NAME or NAME:VERSION
	Count     int
	CPUs      int
	MemoryMiB int
	Ports     []FleetPort  // in the order written; nil when there are none
	Health    *FleetHealth // nil when the file has no health block
	Front     string       // "http" or "tcp"; "" lets kiln pick (http for the port an http check probes)
}

// FleetPort maps a front port on 127.0.0.1 to a guest port on every
// instance.
type FleetPort struct{ Host, Guest int }

// FleetHealth is a fleet's health check. Zero timings and thresholds mean
// the file left them unset, for the fleet's defaults to apply.
type FleetHealth struct {
	Kind    string // "http", "tcp" or "exec"
	Path    string // http: the path to GET
	Command string // exec: the command to run in the guest
	Port    int    // http and tcp: the guest port probed (the first port block's guest port unless set)

	Interval, Timeout, Delay time.Duration
	Failures, Successes      int
}

// Limits and defaults, as for `kiln fleet up`.
const (
	fleetMemoryMiB = 512
)

var fleetRootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "fleet", LabelNames: []string{"name"}},
	},
}

var fleetSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "image"},
		{Name: "count"},
		{Name: "cpus"},
		{Name: "memory"},
		{Name: "front"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "port"},
		{Type: "health", LabelNames: []string{"kind"}},
	},
}

var fleetPortSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "host"},
		{Name: "guest"},
	},
}

// fleetHealthSchema holds the arguments of every kind of check, so that
// one given to the wrong kind is reported as such rather than as unknown.
var fleetHealthSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "path"},
		{Name: "port"},
		{Name: "command"},
		{Name: "interval"},
		{Name: "timeout"},
		{Name: "delay"},
		{Name: "failures"},
		{Name: "successes"},
	},
}

var fleetHealthKinds = []string{"http", "tcp", "exec"}

// fleetHealthOnly says which kinds of check take an argument that not all do.
var fleetHealthOnly = map[string][]string{
	"path":    {"http"},
	"port":    {"http", "tcp"},
	"command": {"exec"},
}

// LoadFleet reads the fleet file at path: a fleet described in HCL rather
// than with the flags of `kiln fleet up`. It holds variable blocks, which
// work as in templates (opts.Version does not apply), and exactly one
// fleet block:
//
//	variable "version" { default = "1.0.0" }
//
//	fleet "web" {                      # 1 to 31 lower-case letters, digits and -
//	  image  = "hello:${var.version}"  # required: NAME or NAME:VERSION of a stored image
//	  count  = 2                       # 1 to 16; default 1
//	  cpus   = 1                       # at least 1; default 1
//	  memory = "512M"                  # whole MiB, with a unit; default 512M
//	  port {                           # repeatable; each host port once
//	    host  = 8080                   # front port on 127.0.0.1, 1 to 65535
//	    guest = 8080                   # 1 to 65535
//	  }
//	  health "http" {                  # at most one: "http", "tcp" or "exec"
//	    path      = "/healthz"         # http only, required; starts with /
//	    port      = 8080               # http and tcp; default the first port block's guest port
//	    command   = "…"                # exec only, required
//	    interval  = "2s"               # Go durations, not negative; unset means the fleet's default
//	    timeout   = "1s"
//	    delay     = "0s"
//	    failures  = 3                  # at least 1; unset means the fleet's default
//	    successes = 1
//	  }
//	}
//
// On failure the error is a Diagnostics listing every problem found.
func LoadFleet(path string, opts Options) (*FleetFile, error) {
	l := newLoader(path, opts)
	f := l.loadFleet()
	if ds := l.redact(fromHCL(l.diags)); len(ds) > 0 {
		return nil, ds
	}
	return f, nil
}

func (l *loader) loadFleet() *FleetFile {
	file, fleets := l.readBlocks("fleet file", fleetRootSchema, "fleet")
	if file == nil {
		return nil
	}

	if len(fleets) == 0 {
		// A malformed or misspelt fleet block is already reported.
		if !hasBlock(file.Body, "fleet") && !misspelt(file.Body, fleetRootSchema, "fleet") {
			start := hcl.Range{Filename: l.path, Start: hcl.InitialPos, End: hcl.InitialPos}
			l.diags = append(l.diags, diagAt(&start, "Missing fleet block",
				`A fleet file must describe one fleet, in a block such as fleet "NAME" { image = "hello:1.0.0" }.`))
		}
		return nil
	}
	for _, b := range fleets[1:] {
		l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Duplicate fleet block",
			"A fleet file describes exactly one fleet; the first fleet block is at %s. Put each fleet in a file of its own.", pos(fleets[0].DefRange)))
	}
	f := l.fleet(fleets[0])
	if l.diags.HasErrors() {
		return nil
	}
	return f
}

// misspelt reports whether body has an attribute or block that schema does
// not know and for which name is the closest of those it does: HCL has
// then reported it with "Did you mean", and a missing name would be the
// same mistake reported twice. Only native syntax keeps what was unknown.
func misspelt(body hcl.Body, schema *hcl.BodySchema, name string) bool {
	b, ok := body.(*hclsyntax.Body)
	if !ok {
		return false
	}
	var attrs, blocks []string
	for _, a := range schema.Attributes {
		attrs = append(attrs, a.Name)
	}
	for _, h := range schema.Blocks {
		blocks = append(blocks, h.Type)
	}
	for n := range b.Attributes {
		if !slices.Contains(attrs, n) && !slices.Contains(blocks, n) && suggest(n, attrs) == name {
			return true
		}
	}
	for _, blk := range b.Blocks {
		if !slices.Contains(blocks, blk.Type) && !slices.Contains(attrs, blk.Type) && suggest(blk.Type, blocks) == name {
			return true
		}
	}
	return false
}

// fleet decodes the fleet block, checking every setting even after a
// failure so that all problems are reported together.
func (l *loader) fleet(b *hcl.Block) *FleetFile {
	f := &FleetFile{Name: b.Labels[0], Count: 1, CPUs: 1, MemoryMiB: fleetMemoryMiB}
	content, diags := b.Body.Content(fleetSchema)
	l.diags = append(l.diags, diags...)
	attrs := content.Attributes

	if err := fleet.CheckName(f.Name); err != nil {
		l.diags = append(l.diags, diagAt(b.LabelRanges[0].Ptr(), "Invalid fleet name",
			"%q is not a valid fleet name: %v, e.g. \"web\".", f.Name, err))
	}

	switch attr := attrs["image"]; {
	case l.isSet(attr):
		if v, ok := l.value(attr, cty.String); ok {
			f.Image = v.AsString()
			if err := images.CheckImageRef(f.Image); err != nil {
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid image",
					`%s; use NAME or NAME:VERSION of a stored image, e.g. "hello:1.0.0".`, err))
			}
		}
	case !misspelt(b.Body, fleetSchema, "image"):
		l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Missing image",
			`The fleet needs the image its instances run: image = "NAME:VERSION" of a stored image, e.g. image = "hello:1.0.0".`))
	}

	if attr := attrs["count"]; attr != nil {
		if n, ok := l.integer(attr); ok {
			if n < 1 || n > fleet.MaxInstances {
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid count",
					"count must be from 1 to %d instances, not %d.", fleet.MaxInstances, n))
			}
			f.Count = n
		}
	}
	if attr := attrs["cpus"]; attr != nil {
		if n, ok := l.integer(attr); ok {
			if n < 1 {
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid cpus", "cpus must be at least 1, not %d.", n))
			}
			f.CPUs = n
		}
	}
	if attr := attrs["memory"]; l.isSet(attr) {
		f.MemoryMiB = int(l.size(attr, 1<<20) >> 20)
	}
	if attr := attrs["front"]; l.isSet(attr) {
		if v, ok := l.value(attr, cty.String); ok {
			f.Front = v.AsString()
			if f.Front != "http" && f.Front != "tcp" {
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid front",
					`front %q is not a kind of front: use "http" (a reverse proxy that routes each request, so keep-alive clients survive a rollout) or "tcp" (a TCP proxy, for other protocols).`, f.Front))
			}
		}
	}

	var healths []*hcl.Block
	hostAt := map[int]hcl.Range{}
	for _, blk := range content.Blocks {
		switch blk.Type {
		case "port":
			if p, ok := l.fleetPort(blk, hostAt); ok {
				f.Ports = append(f.Ports, p)
			}
		case "health":
			healths = append(healths, blk)
		}
	}
	if len(healths) > 0 {
		f.Health = l.fleetHealth(healths[0], f.Ports)
		l.noRepeat(healths)
	}
	return f
}

// fleetPort decodes a port block; hostAt records where each front port was
// first given, to report one given twice.
func (l *loader) fleetPort(b *hcl.Block, hostAt map[int]hcl.Range) (FleetPort, bool) {
	var p FleetPort
	content, diags := b.Body.Content(fleetPortSchema)
	l.diags = append(l.diags, diags...)
	ok := !diags.HasErrors()
	for _, name := range []string{"host", "guest"} {
		attr := content.Attributes[name]
		if !l.isSet(attr) {
			if !misspelt(b.Body, fleetPortSchema, name) {
				l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Missing "+name+" port",
					"A port block needs host (the front port on 127.0.0.1) and guest (the port on each instance), e.g. host = 8080 and guest = 80 inside the port block."))
			}
			ok = false
			continue
		}
		n, valid := l.fleetPortNumber(attr)
		if !valid {
			ok = false
			continue
		}
		if name == "host" {
			p.Host = n
			if first, dup := hostAt[n]; dup {
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Duplicate host port",
					"Front port %d is already used by the port block at %s; give each port block a different host port.", n, pos(first)))
				ok = false
			} else {
				hostAt[n] = attr.Expr.Range()
			}
		} else {
			p.Guest = n
		}
	}
	return p, ok
}

// fleetPortNumber decodes a TCP port number, 1 to 65535.
func (l *loader) fleetPortNumber(attr *hcl.Attribute) (int, bool) {
	n, ok := l.integer(attr)
	if !ok {
		return 0, false
	}
	if n < 1 || n > 65535 {
		l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid port",
			"%s must be a port number from 1 to 65535, not %d.", attr.Name, n))
		return 0, false
	}
	return n, true
}

// fleetHealth decodes the health block. Arguments that belong to another
// kind of check are reported rather than ignored.
func (l *loader) fleetHealth(b *hcl.Block, ports []FleetPort) *FleetHealth {
	h := &FleetHealth{Kind: b.Labels[0]}
	content, diags := b.Body.Content(fleetHealthSchema)
	l.diags = append(l.diags, diags...)
	attrs := content.Attributes

	known := slices.Contains(fleetHealthKinds, h.Kind)
	if !known {
		l.diags = append(l.diags, diagAt(b.LabelRanges[0].Ptr(), "Unknown health check kind",
			"There is no health check %q; use %s.%s", h.Kind, orList(fleetHealthKinds), didYouMean(h.Kind, fleetHealthKinds)))
	}

	if known {
		for _, name := range sortedKeys(fleetHealthOnly) {
			attr := attrs[name]
			if !l.isSet(attr) || slices.Contains(fleetHealthOnly[name], h.Kind) {
				continue
			}
			l.diags = append(l.diags, diagAt(attr.NameRange.Ptr(), "Unexpected "+name,
				"%s only applies to %s checks, not to %s ones; remove it.", name, orList(fleetHealthOnly[name]), h.Kind))
		}
	}

	if attr := attrs["path"]; known && slices.Contains(fleetHealthOnly["path"], h.Kind) {
		switch {
		case l.isSet(attr):
			if v, ok := l.value(attr, cty.String); ok {
				h.Path = v.AsString()
				if !strings.HasPrefix(h.Path, "/") || strings.ContainsFunc(h.Path, isSpaceOrControl) {
					l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid path",
						`%q is not a URL path: it must start with "/" and contain no spaces, e.g. "/healthz".`, h.Path))
				}
			}
		case !misspelt(b.Body, fleetHealthSchema, "path"):
			l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Missing path",
				`An http check needs the path to GET, e.g. path = "/healthz".`))
		}
	}

	if attr := attrs["command"]; known && slices.Contains(fleetHealthOnly["command"], h.Kind) {
		switch {
		case l.isSet(attr):
			if v, ok := l.value(attr, cty.String); ok {
				h.Command = v.AsString()
				if strings.TrimSpace(h.Command) == "" {
					l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Empty command",
						"The command of an exec check must not be empty."))
				}
			}
		case !misspelt(b.Body, fleetHealthSchema, "command"):
			l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Missing command",
				`An exec check needs the command to run in each instance, e.g. command = "systemctl is-active hello".`))
		}
	}

	if attr := attrs["port"]; known && slices.Contains(fleetHealthOnly["port"], h.Kind) {
		switch {
		case l.isSet(attr):
			h.Port, _ = l.fleetPortNumber(attr)
		case len(ports) > 0:
			h.Port = ports[0].Guest
		case misspelt(b.Body, fleetHealthSchema, "port"):
		default:
			article := "A"
			if h.Kind == "http" {
				article = "An"
			}
			l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Missing port",
				"%s %s check needs a guest port to probe: set port in the health block, or add a port block (the check then uses the first one's guest port).", article, h.Kind))
		}
	}

	h.Interval = l.duration(attrs["interval"])
	h.Timeout = l.duration(attrs["timeout"])
	h.Delay = l.duration(attrs["delay"])
	h.Failures = l.fleetThreshold(attrs["failures"])
	h.Successes = l.fleetThreshold(attrs["successes"])
	return h
}

// fleetThreshold decodes a count of consecutive probes, at least 1; 0 when
// unset.
func (l *loader) fleetThreshold(attr *hcl.Attribute) int {
	if attr == nil {
		return 0
	}
	n, ok := l.integer(attr)
	if !ok {
		return 0
	}
	if n < 1 {
		l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid "+attr.Name,
			"%s is a number of consecutive probes and must be at least 1, not %d; leave it out for the default.", attr.Name, n))
		return 0
	}
	return n
}
