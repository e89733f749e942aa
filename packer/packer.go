// Package packer reads Packer HCL2 templates (a .pkr.hcl file, or a folder
// of *.pkr.hcl and *.auto.pkrvars.hcl files, as `packer build` takes) and
// turns a build of a `source "qemu"` cloud image into the same build.Spec a
// kiln template gives, so the pipeline runs both the same way.
//
// It reads HCL2 as Packer does: packer { required_plugins } (accepted,
// nothing downloaded), variable blocks with type, default, sensitive and
// validation, locals and local blocks, source "qemu" "NAME", and build
// blocks naming their sources, with per-build overrides, provisioners and
// post-processors. Variables take their values as Packer's do, lowest
// precedence first: defaults, PKR_VAR_<name>, *.auto.pkrvars.hcl files in
// lexical order, then -var and -var-file in the order given. Relative paths
// resolve against the working directory, as in Packer (templates use
// path.root for their own folder).
//
// What kiln does not run — boot_command typed over VNC, vnc_*, floppies,
// vtpm, ISO installs, other builders, unknown fields — is refused with its
// position and why, never ignored.
package packer

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"

	"github.com/kiln-dev/kiln/bake"
	"github.com/kiln-dev/kiln/template"
)

// VarArg is one -var NAME=VALUE or -var-file FILE, kept in command-line
// order: Packer applies them in that order, later ones winning.
type VarArg struct {
	Name, Value string // -var
	File        string // -var-file
}

// Options are a Packer template's inputs from outside it.
type Options struct {
	Vars       []VarArg
	Env        []string // os.Environ() style; nil means os.Environ()
	Dir        string   // the working directory relative paths resolve against; "" = the current one
	Only       []string // -only: builds or sources to run (qemu.NAME, NAME, BUILD.qemu.NAME, globs)
	Except     []string // -except
	Name       string   // --name: the stored image's name (default: from vm_name)
	Version    string   // --version (default: var.version)
	Force      bool     // -force: replace output_directory (and the stored version)
	Generalize bool     // --generalize: kiln's generalisation and cloud-init wait
	Debug      bool     // -debug: breakpoints pause
}

// IsTemplate reports whether path names a Packer template: a *.pkr.hcl or
// *.pkr.json file, or a folder holding one.
func IsTemplate(path string) bool {
	if strings.HasSuffix(path, ".pkr.hcl") || strings.HasSuffix(path, ".pkr.json") {
		return true
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.IsDir() {
		return false
	}
	m, _ := filepath.Glob(filepath.Join(path, "*.pkr.hcl"))
	j, _ := filepath.Glob(filepath.Join(path, "*.pkr.json"))
	return len(m)+len(j) > 0
}

// Load reads the Packer template at path and returns the Spec of the one
// build it selects. On failure the error is a template.Diagnostics listing
// every problem found.
func Load(path string, opts Options) (*bake.Spec, error) {
	l := newLoader(path, opts)
	spec := l.load()
	if ds := template.FromHCL(l.diags); len(ds) > 0 {
		return nil, ds
	}
	return spec, nil
}

// loader carries one Load's state.
type loader struct {
	path   string
	root   string // path.root: the template's folder, as given
	cwd    string
	opts   Options
	env    map[string]string
	diags  hcl.Diagnostics
	parser *hclparse.Parser
	fs     *template.FuncSet
	files  []string // template and var files read, for the digest

	vars     map[string]*variable
	varOrder []string
	locals   map[string]cty.Value
	secrets  map[string]bool // local names marked sensitive
	ctx      *hcl.EvalContext
	notes    []string
	inputs   []string // local files the build reads (scripts, uploads, seed), for the digest
}

func newLoader(path string, opts Options) *loader {
	cwd := opts.Dir
	if cwd == "" {
		cwd, _ = os.Getwd()
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
	root := path
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		root = filepath.Dir(path)
	}
	now := time.Now()
	fs := template.NewFuncSet(cwd, environ, now)
	packerFunctions(fs.Funcs, now)
	return &loader{
		path: path, root: root, cwd: cwd, opts: opts, env: env,
		parser:  hclparse.NewParser(),
		fs:      fs,
		vars:    map[string]*variable{},
		locals:  map[string]cty.Value{},
		secrets: map[string]bool{},
	}
}

// abs resolves p against the working directory, as Packer does.
func (l *loader) abs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(l.cwd, p)
}

var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "packer"},
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "variables"},
		{Type: "locals"},
		{Type: "local", LabelNames: []string{"name"}},
		{Type: "source", LabelNames: []string{"type", "name"}},
		{Type: "build"},
		{Type: "data", LabelNames: []string{"type", "name"}},
		{Type: "hcp_packer_registry"},
	},
}

// templateFiles lists the template files path stands for and the
// *.auto.pkrvars.hcl files beside them, in lexical order.
func (l *loader) templateFiles() (tmpl, auto []string) {
	fi, err := os.Stat(l.path)
	if err != nil {
		l.diags = append(l.diags, diagAt(&hcl.Range{Filename: l.path}, "Cannot read template", "%s", readProblem(err)))
		return nil, nil
	}
	if !fi.IsDir() {
		return []string{l.path}, nil
	}
	for _, pat := range []string{"*.pkr.hcl", "*.pkr.json"} {
		m, _ := filepath.Glob(filepath.Join(l.path, pat))
		tmpl = append(tmpl, m...)
	}
	for _, pat := range []string{"*.auto.pkrvars.hcl", "*.auto.pkrvars.json"} {
		m, _ := filepath.Glob(filepath.Join(l.path, pat))
		auto = append(auto, m...)
	}
	sort.Strings(tmpl)
	sort.Strings(auto)
	if len(tmpl) == 0 {
		l.diags = append(l.diags, diagAt(&hcl.Range{Filename: l.path}, "No Packer template",
			"The folder holds no *.pkr.hcl file."))
	}
	return tmpl, auto
}

func (l *loader) parseFile(name string) *hcl.File {
	// The same bounds as kiln templates: a FIFO, a huge file or deep
	// nesting gets a diagnostic, not a hang or a Go stack overflow.
	src, err := template.ReadSource(name)
	if err != nil {
		l.diags = append(l.diags, diagAt(&hcl.Range{Filename: name}, "Cannot read file", "%s", readProblem(err)))
		return nil
	}
	if ds := template.CheckDepth(src, name); ds.HasErrors() {
		l.diags = append(l.diags, ds...)
		return nil
	}
	l.files = append(l.files, name)
	var f *hcl.File
	var diags hcl.Diagnostics
	if strings.HasSuffix(name, ".json") {
		f, diags = l.parser.ParseJSON(src, name)
	} else {
		f, diags = l.parser.ParseHCL(src, name)
	}
	l.diags = append(l.diags, diags...)
	if diags.HasErrors() {
		return nil
	}
	return f
}

func (l *loader) load() *bake.Spec {
	tmplFiles, autoFiles := l.templateFiles()
	var files []*hcl.File
	for _, name := range tmplFiles {
		if f := l.parseFile(name); f != nil {
			files = append(files, f)
		}
	}
	if l.diags.HasErrors() || len(files) == 0 {
		return nil
	}
	body := hcl.MergeFiles(files)
	content, diags := body.Content(rootSchema)
	l.diags = append(l.diags, diags...)

	sources := map[string]*hcl.Block{}
	var builds, localBlocks []*hcl.Block
	for _, b := range content.Blocks {
		switch b.Type {
		case "packer":
			l.packerBlock(b)
		case "variable":
			l.declare(b)
		case "variables":
			l.declareLegacy(b)
		case "locals", "local":
			localBlocks = append(localBlocks, b)
		case "source":
			key := b.Labels[0] + "." + b.Labels[1]
			if prev := sources[key]; prev != nil {
				l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Duplicate source",
					"source %q %q is already defined at %s.", b.Labels[0], b.Labels[1], pos(prev.DefRange)))
				continue
			}
			sources[key] = b
		case "build":
			builds = append(builds, b)
		case "data":
			l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Data sources are not run",
				"kiln does not run Packer data sources (data %q): set the value with a variable instead.", b.Labels[0]))
		case "hcp_packer_registry":
			l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "HCP Packer is not used",
				"kiln keeps versions in its own store (kiln images ls); remove the hcp_packer_registry block."))
		}
	}
	l.resolveVariables(autoFiles)
	l.evalLocals(localBlocks)
	// Go on after a bad variable: what depends on it is unknown and skipped,
	// and every other problem is still reported.
	sel := l.selectBuild(builds, sources)
	if sel == nil {
		return nil
	}
	spec := l.spec(sel)
	if l.diags.HasErrors() {
		return nil
	}
	return spec
}

var packerSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "required_version"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "required_plugins"}},
}

// packerBlock accepts packer { required_version, required_plugins }: kiln
// needs no plugins, so nothing is downloaded.
func (l *loader) packerBlock(b *hcl.Block) {
	_, diags := b.Body.Content(packerSchema)
	l.diags = append(l.diags, diags...)
}
