// Package template reads kiln templates: HCL files that describe one image
// (its base, hardware, cloud-init and provisioners) and the variables it
// takes. It turns a template into a build.Spec, checking everything it can
// without running anything, and reports every problem at once with its
// position, so that `kiln validate` is useful on its own.
//
// A template holds variable blocks and exactly one image block:
//
//	variable "version" {
//	  type        = string   # string (default), number or bool
//	  default     = "1.0.0"  # without one (or with null), a value must be given
//	  description = "…"
//	  sensitive   = false    # redacted in manifests and output
//	}
//
//	image "hello" {
//	  version = var.version
//	  base { image = "debian:12" }   # or file = "…", or url = "…" + checksum = "…"
//	  disk_size = "4G"
//	  provision "shell" { inline = ["apt-get install -y jq"] }
//	}
//
// Variable values come from, lowest precedence first: defaults,
// KILN_VAR_<name> environment variables, var files (Options.VarFiles, in
// order) and Options.Vars. Relative paths, wherever they appear, resolve
// against the template's folder, so a template builds the same from any
// working directory. As in Terraform, an attribute set to null counts as
// not set, so a conditional can leave a setting out. Files named *.json
// are read as HCL's JSON syntax.
package template

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"

	"github.com/kiln-dev/kiln/bake"
)

// Options are the inputs to a template that come from outside it: the
// command line and the environment.
type Options struct {
	Vars     map[string]string // from --var name=value; raw strings, converted to each variable's type
	VarFiles []string          // from --var-file; HCL files of name = value lines
	Env      []string          // os.Environ() style; nil means os.Environ()
	Version  string            // from --version; replaces the image's version when non-empty
}

// Load reads the template at path and returns the Spec it describes. On
// failure the error is a Diagnostics listing every problem found.
func Load(path string, opts Options) (*bake.Spec, error) {
	l := newLoader(path, opts)
	spec := l.load()
	if ds := l.redact(fromHCL(l.diags)); len(ds) > 0 {
		return nil, ds
	}
	return spec, nil
}

// Validate runs every check Load does, for `kiln validate`, which wants the
// problems but not the Spec.
func Validate(path string, opts Options) error {
	_, err := Load(path, opts)
	return err
}

// loader carries the state of one Load.
type loader struct {
	path  string // as given: diagnostics name the file the way the user did
	abs   string
	opts  Options
	diags hcl.Diagnostics

	st     *evalState
	funcs  map[string]function.Function
	parser *hclparse.Parser

	vars     map[string]*variable
	varOrder []string
	ctx      *hcl.EvalContext // for the image block: var and functions; nil until variables have values
	constCtx *hcl.EvalContext // for variable blocks: functions only

	evaluated map[*hcl.Attribute]evalResult

	inputs []localInput // scripts and upload sources, for the digest

	secrets []secret // values never to print (see redact.go)
	taints  []taint
}

// localInput is a local file or directory a provisioner will read, kept
// with the range that named it so a late failure can still point there.
type localInput struct {
	path string
	rng  hcl.Range
}

func newLoader(path string, opts Options) *loader {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = filepath.Clean(path)
	}
	environ := opts.Env
	if environ == nil {
		environ = os.Environ()
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	st := &evalState{
		dir:      filepath.Dir(abs),
		env:      env,
		now:      time.Now().UTC(),
		reads:    map[string]input{},
		envReads: map[string]string{},
	}
	l := &loader{
		path:   path,
		abs:    abs,
		opts:   opts,
		st:     st,
		funcs:  st.functions(),
		parser: hclparse.NewParser(),
		vars:   map[string]*variable{},

		evaluated: map[*hcl.Attribute]evalResult{},
	}
	l.constCtx = &hcl.EvalContext{Functions: l.funcs}
	return l
}

var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "image", LabelNames: []string{"name"}},
	},
}

// readBlocks reads and parses the file, declares and resolves its
// variables, sets up the evaluation context, and returns the file and its
// top-level blocks of blockType. what names the file in diagnostics
// ("template", "fleet file"). file is nil when nothing more can be checked.
func (l *loader) readBlocks(what string, schema *hcl.BodySchema, blockType string) (*hcl.File, []*hcl.Block) {
	src, err := readSource(l.path, maxTemplateSize)
	if err != nil {
		l.diags = append(l.diags, diagAt(&hcl.Range{Filename: l.path}, "Cannot read "+what, "%s", readProblem(err)))
		return nil, nil
	}
	if ds := checkDepth(src, l.path); ds != nil {
		l.diags = append(l.diags, ds...)
		return nil, nil
	}
	file, diags := l.parse(src, l.path)
	if !diags.HasErrors() {
		diags = append(diags, checkLiterals(file.Body)...)
	}
	l.diags = append(l.diags, diags...)
	if diags.HasErrors() {
		// The rest would mostly repeat the syntax errors in other words.
		return nil, nil
	}
	content, diags := file.Body.Content(schema)
	l.diags = append(l.diags, diags...)

	var blocks []*hcl.Block
	for _, b := range content.Blocks {
		switch b.Type {
		case "variable":
			l.declare(b)
		case blockType:
			blocks = append(blocks, b)
		}
	}
	l.resolveVariables()

	varObj := map[string]cty.Value{}
	for name, v := range l.vars {
		varObj[name] = l.markSensitive(v)
	}
	l.ctx = &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(varObj)},
		Functions: l.funcs,
	}
	return file, blocks
}

func (l *loader) load() *bake.Spec {
	file, images := l.readBlocks("template", rootSchema, "image")
	if file == nil {
		return nil
	}

	if len(images) == 0 && !hasBlock(file.Body, "image") {
		start := hcl.Range{Filename: l.path, Start: hcl.InitialPos, End: hcl.InitialPos}
		l.diags = append(l.diags, diagAt(&start, "Missing image block",
			`A template must describe one image, in a block such as image "NAME" { … }.`))
		return nil
	}
	if len(images) == 0 {
		return nil // the malformed image block is already reported
	}
	for _, b := range images[1:] {
		l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Duplicate image block",
			"A template describes exactly one image; the first image block is at %s.", pos(images[0].DefRange)))
	}
	spec := l.image(images[0])
	if l.diags.HasErrors() {
		return nil
	}
	spec.TemplatePath = l.abs
	spec.Variables = l.specVariables()
	spec.TemplateDigest = l.digest(file.Bytes, spec.Variables)
	return spec
}

// parse reads HCL native syntax, or HCL's JSON form for files named .json
// (as Terraform and Packer do), for both templates and var files.
func (l *loader) parse(src []byte, name string) (*hcl.File, hcl.Diagnostics) {
	if strings.HasSuffix(name, ".json") {
		return l.parser.ParseJSON(src, name)
	}
	return l.parser.ParseHCL(src, name)
}

// hasBlock reports whether body has a block of type typ even if it was
// malformed (e.g. missing its label) and so left out of the decoded
// content: one mistake should not also be reported as a missing block.
func hasBlock(body hcl.Body, typ string) bool {
	if b, ok := body.(*hclsyntax.Body); ok {
		for _, blk := range b.Blocks {
			if blk.Type == typ {
				return true
			}
		}
	}
	return false
}

// pos renders where a range starts, for details that refer to another place.
func pos(r hcl.Range) string {
	return r.Filename + ":" + itoa(r.Start.Line) + ":" + itoa(r.Start.Column)
}
