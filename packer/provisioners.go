package packer

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/kiln-dev/kiln/bake"
	"github.com/kiln-dev/kiln/provision"
	"github.com/kiln-dev/kiln/template"
)

// Packer's shell provisioner's default execute_command.
const defaultExecute = "chmod +x {{ .Path }}; {{ .Vars }} {{ .Path }}"

var (
	shellFields = []string{"inline", "script", "scripts", "environment_vars", "env", "execute_command", "inline_shebang",
		"expect_disconnect", "valid_exit_codes", "remote_folder", "pause_before", "max_retries", "timeout", "only", "except",
		"skip_clean", "start_retry_timeout"}
	fileFields       = []string{"source", "sources", "content", "destination", "direction", "generated", "pause_before", "max_retries", "timeout", "only", "except"}
	breakpointFields = []string{"note", "disable", "only", "except"}
	provisionerTypes = []string{"shell", "file", "breakpoint"}
)

// skipFor reports whether only/except leave this build out.
func (l *loader) skipFor(f fieldSet, ctx *hcl.EvalContext, c *candidate) bool {
	only, _ := l.strList(f.take("only"), ctx)
	except, _ := l.strList(f.take("except"), ctx)
	if len(only) > 0 && !matchAny(only, *c) {
		return true
	}
	return matchAny(except, *c)
}

// refuseRest reports the fields left in f as not run.
func (l *loader) refuseRest(f fieldSet, what string, known []string) {
	for _, name := range sortedKeys(f) {
		a := f[name]
		l.diags = append(l.diags, diagAt(a.NameRange.Ptr(), "Unsupported argument",
			"kiln does not run the %s field %q.%s", what, name, template.DidYouMean(name, known)))
	}
}

func (l *loader) provisioner(b *hcl.Block, ctx *hcl.EvalContext, c *candidate) ([]bake.Provisioner, bool) {
	typ := b.Labels[0]
	f := l.attributes(b.Body)
	if !contains(provisionerTypes, typ) {
		l.diags = append(l.diags, diagAt(b.LabelRanges[0].Ptr(), "Provisioner not run by kiln",
			"kiln runs the shell, file and breakpoint provisioners, not %q.%s", typ, template.DidYouMean(typ, provisionerTypes)))
		return nil, false
	}
	if l.skipFor(f, ctx, c) {
		return nil, false
	}
	p := bake.Provisioner{Type: typ}
	p.PauseBefore = l.duration(f.take("pause_before"), ctx)
	p.MaxRetries, _ = l.integer(f.take("max_retries"), ctx)
	p.Timeout = l.duration(f.take("timeout"), ctx)
	switch typ {
	case "breakpoint":
		p.Note, _ = l.str(f.take("note"), ctx)
		disabled := l.boolean(f.take("disable"), ctx)
		l.refuseRest(f, "breakpoint", breakpointFields)
		if disabled {
			return nil, true
		}
		return []bake.Provisioner{p}, true
	case "shell":
		l.shell(b, f, ctx, &p)
		l.refuseRest(f, "shell provisioner", shellFields)
		return []bake.Provisioner{p}, true
	}
	ps := l.file(b, f, ctx, p)
	l.refuseRest(f, "file provisioner", fileFields)
	return ps, true
}

func (l *loader) shell(b *hcl.Block, f fieldSet, ctx *hcl.EvalContext, p *bake.Provisioner) {
	given := 0
	if v, ok := l.strList(f.take("inline"), ctx); ok {
		p.Inline = v
		given++
	}
	if a := f.take("script"); a != nil {
		if v, ok := l.str(a, ctx); ok {
			p.Scripts = append(p.Scripts, l.localFile(a, v))
			given++
		}
	}
	if a := f.take("scripts"); a != nil {
		if v, ok := l.strList(a, ctx); ok {
			for _, s := range v {
				p.Scripts = append(p.Scripts, l.localFile(a, s))
			}
			given++
		}
	}
	if given != 1 {
		l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Shell commands",
			"A shell provisioner takes exactly one of inline, script or scripts."))
	}
	p.Env = map[string]string{}
	if a := f.take("environment_vars"); a != nil {
		if v, ok := l.strList(a, ctx); ok {
			for _, kv := range v {
				k, val, ok := strings.Cut(kv, "=")
				if !ok || !provision.ValidEnvName(k) {
					l.diags = append(l.diags, diagAt(a.Expr.Range().Ptr(), "Invalid environment_vars",
						"Each entry is NAME=VALUE with NAME of letters, digits and _; %q is not.", k))
					continue
				}
				p.Env[k] = val
			}
		}
	}
	if a := f.take("env"); a != nil {
		if v, ok := l.strMap(a, ctx); ok {
			for k, val := range v {
				if !provision.ValidEnvName(k) {
					l.diags = append(l.diags, diagAt(a.Expr.Range().Ptr(), "Invalid environment variable name",
						"%q cannot be an environment variable name.", k))
				}
				p.Env[k] = val
			}
		}
	}
	p.ExecuteCommand = defaultExecute
	if v, ok := l.str(f.take("execute_command"), ctx); ok {
		p.ExecuteCommand = v
	}
	p.InlineShebang, _ = l.str(f.take("inline_shebang"), ctx)
	p.ExpectDisconnect = l.boolean(f.take("expect_disconnect"), ctx)
	p.ValidExitCodes, _ = l.intList(f.take("valid_exit_codes"), ctx)
	p.RemoteFolder, _ = l.str(f.take("remote_folder"), ctx)
	l.value(f.take("skip_clean"), ctx, cty.Bool)
	l.duration(f.take("start_retry_timeout"), ctx)
}

// localFile resolves a script or upload path against the working directory
// and checks it exists now rather than halfway through the build.
func (l *loader) localFile(a *hcl.Attribute, p string) string {
	abs := l.abs(p)
	if _, err := os.Stat(abs); err != nil {
		l.diags = append(l.diags, diagAt(a.Expr.Range().Ptr(), "File not found",
			"No file exists at %q (resolved to %s); Packer resolves relative paths against the working directory (use path.root for the template's folder).", p, abs))
		return abs
	}
	l.inputs = append(l.inputs, abs)
	if strings.HasSuffix(p, "/") && !strings.HasSuffix(abs, "/") {
		abs += "/"
	}
	return abs
}

func (l *loader) file(b *hcl.Block, f fieldSet, ctx *hcl.EvalContext, p bake.Provisioner) []bake.Provisioner {
	p.Direction = "upload"
	if a := f.take("direction"); a != nil {
		if v, ok := l.str(a, ctx); ok {
			if v != "upload" && v != "download" {
				l.diags = append(l.diags, diagAt(a.Expr.Range().Ptr(), "Invalid direction", "direction is \"upload\" or \"download\", not %q.", v))
			}
			p.Direction = v
		}
	}
	generated := l.boolean(f.take("generated"), ctx)
	dest, ok := l.str(f.take("destination"), ctx)
	if !ok || dest == "" {
		l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Missing destination", "A file provisioner needs a destination."))
	}
	var sources []string
	srcAttr := f.take("source")
	if v, ok := l.str(srcAttr, ctx); ok {
		sources = append(sources, v)
	}
	srcsAttr := f.take("sources")
	if v, ok := l.strList(srcsAttr, ctx); ok {
		sources = append(sources, v...)
		if srcAttr == nil {
			srcAttr = srcsAttr
		}
	}
	if a := f.take("content"); a != nil {
		if v, ok := l.str(a, ctx); ok {
			p.Content, p.HasContent = v, true
			p.Destination = dest
			if len(sources) > 0 {
				l.diags = append(l.diags, diagAt(a.NameRange.Ptr(), "Conflicting file sources", "A file provisioner takes content or source(s), not both."))
			}
			return []bake.Provisioner{p}
		}
	}
	if len(sources) == 0 {
		l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Missing source", "A file provisioner needs source, sources or content."))
		return nil
	}
	if len(sources) > 1 && !strings.HasSuffix(dest, "/") {
		l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Destination must be a folder",
			"With several sources, the destination must end in \"/\", as in Packer; %q does not.", dest))
	}
	var out []bake.Provisioner
	for _, s := range sources {
		q := p
		if p.Direction == "upload" {
			if generated {
				q.Source = l.abs(s)
			} else {
				q.Source = l.localFile(srcAttr, s)
			}
			q.Destination = dest
		} else {
			q.Source = s
			q.Destination = l.abs(dest)
			if strings.HasSuffix(dest, "/") {
				q.Destination = filepath.Join(q.Destination, filepath.Base(s))
			}
		}
		out = append(out, q)
	}
	return out
}

var ppFields = map[string][]string{
	"manifest":    {"output", "strip_path", "strip_time", "custom_data", "keep_input_artifact", "only", "except"},
	"checksum":    {"checksum_types", "output", "keep_input_artifact", "only", "except"},
	"compress":    {"output", "compression_level", "keep_input_artifact", "format", "only", "except"},
	"shell-local": {"inline", "script", "scripts", "environment_vars", "env", "execute_command", "inline_shebang", "keep_input_artifact", "only", "except"},
}

func (l *loader) postProcessor(b *hcl.Block, ctx *hcl.EvalContext, c *candidate, chain int) (bake.PostProcessor, bool) {
	typ := b.Labels[0]
	pp := bake.PostProcessor{Type: typ, Chain: chain, CompressionLevel: -1}
	fields, ok := ppFields[typ]
	if !ok {
		l.diags = append(l.diags, diagAt(b.LabelRanges[0].Ptr(), "Post-processor not run by kiln",
			"kiln runs the manifest, checksum, compress and shell-local post-processors, not %q.%s", typ, template.DidYouMean(typ, sortedKeys(ppFields))))
		return pp, false
	}
	f := l.attributes(b.Body)
	if l.skipFor(f, ctx, c) {
		return pp, false
	}
	pp.Output, _ = l.str(f.take("output"), ctx)
	pp.KeepInputArtifact = l.boolean(f.take("keep_input_artifact"), ctx)
	switch typ {
	case "manifest":
		pp.StripPath = l.boolean(f.take("strip_path"), ctx)
		l.boolean(f.take("strip_time"), ctx)
		pp.CustomData, _ = l.strMap(f.take("custom_data"), ctx)
	case "checksum":
		if a := f.take("checksum_types"); a != nil {
			if v, ok := l.strList(a, ctx); ok {
				for _, t := range v {
					if !contains([]string{"md5", "sha1", "sha224", "sha256", "sha384", "sha512"}, t) {
						l.diags = append(l.diags, diagAt(a.Expr.Range().Ptr(), "Invalid checksum_types",
							"%q is not one of md5, sha1, sha224, sha256, sha384 or sha512.", t))
					}
				}
				pp.ChecksumTypes = v
			}
		}
	case "compress":
		if n, ok := l.integer(f.take("compression_level"), ctx); ok {
			pp.CompressionLevel = n
		}
		if a := f.take("format"); a != nil {
			l.diags = append(l.diags, diagAt(a.NameRange.Ptr(), "Unsupported argument",
				"kiln chooses the archive by output's extension (.tar.gz, .tgz, .tar, .gz, .zip); remove format."))
		}
		if out := pp.Output; out != "" && !hasArchiveExt(out) {
			l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Unsupported archive",
				"kiln compresses to .tar.gz, .tgz, .tar, .gz or .zip (not lz4, xz or bgzf); %q is none of them.", out))
		}
	case "shell-local":
		pp.ExecuteCommand, _ = l.strList(f.take("execute_command"), ctx)
		var sp bake.Provisioner
		l.shell(b, f, ctx, &sp)
		pp.Inline, pp.Scripts, pp.Env = sp.Inline, sp.Scripts, sp.Env
	}
	l.refuseRest(f, typ+" post-processor", fields)
	return pp, true
}

func hasArchiveExt(s string) bool {
	for _, e := range []string{".tar.gz", ".tgz", ".tar", ".gz", ".zip"} {
		if strings.HasSuffix(s, e) {
			return true
		}
	}
	return false
}
