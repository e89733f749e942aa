package packer

import (
	"crypto/rand"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/kiln-dev/kiln/bake"
)

var buildSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "name"}, {Name: "description"}, {Name: "sources"}},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "source", LabelNames: []string{"ref"}},
		{Type: "provisioner", LabelNames: []string{"type"}},
		{Type: "post-processor", LabelNames: []string{"type"}},
		{Type: "post-processors"},
		{Type: "error-cleanup-provisioner", LabelNames: []string{"type"}},
		{Type: "hcp_packer_registry"},
	},
}

// candidate is one build Packer would run: a build block and one of its
// sources, with the overrides the build gives it.
type candidate struct {
	block     *hcl.Block
	content   *hcl.BodyContent
	buildName string // the build block's name, "" when it has none
	source    *hcl.Block
	override  *hcl.Block // the build's source "source.qemu.NAME" { … }, or nil
	name      string     // the source's name in this build (an override's name = … renames it)
	refRange  hcl.Range
}

// fullName is how Packer names a build: BUILD.TYPE.NAME, or TYPE.NAME.
func (c candidate) fullName() string {
	n := c.source.Labels[0] + "." + c.name
	if c.buildName != "" {
		return c.buildName + "." + n
	}
	return n
}

// selectBuild picks the one build to run, after -only and -except.
func (l *loader) selectBuild(builds []*hcl.Block, sources map[string]*hcl.Block) *candidate {
	var all []candidate
	for _, b := range builds {
		content, diags := b.Body.Content(buildSchema)
		l.diags = append(l.diags, diags...)
		name := ""
		if attr := content.Attributes["name"]; attr != nil {
			if v, ok := l.str(attr, l.ctx); ok {
				name = v
			}
		}
		for _, blk := range content.Blocks {
			switch blk.Type {
			case "error-cleanup-provisioner":
				l.diags = append(l.diags, diagAt(blk.DefRange.Ptr(), "Not run by kiln",
					"kiln does not run error-cleanup-provisioner: a failed build's VM is removed with everything in it (or kept with -on-error=abort)."))
			case "hcp_packer_registry":
				l.diags = append(l.diags, diagAt(blk.DefRange.Ptr(), "HCP Packer is not used",
					"kiln keeps versions in its own store (kiln images ls); remove the hcp_packer_registry block."))
			}
		}
		seen := map[string]bool{}
		addRef := func(ref string, rng hcl.Range, override *hcl.Block) {
			key := strings.TrimPrefix(ref, "source.")
			src := sources[key]
			if src == nil {
				l.diags = append(l.diags, diagAt(rng.Ptr(), "Unknown source",
					"%q names no source block; sources are named source.TYPE.NAME, e.g. \"source.qemu.debian\".", ref))
				return
			}
			if seen[key] && override == nil {
				return
			}
			seen[key] = true
			c := candidate{block: b, content: content, buildName: name, source: src, override: override, name: src.Labels[1], refRange: rng}
			if override != nil {
				attrs, _ := override.Body.JustAttributes()
				if a := attrs["name"]; a != nil {
					if v, ok := l.str(a, l.ctx); ok {
						c.name = v
					}
				}
				for i := range all {
					if all[i].block == b && all[i].source == src && all[i].override == nil {
						all[i] = c // the override refines the listed source
						return
					}
				}
			}
			all = append(all, c)
		}
		if attr := content.Attributes["sources"]; attr != nil {
			if refs, ok := l.strList(attr, l.ctx); ok {
				elems, _ := hcl.ExprList(attr.Expr)
				for i, ref := range refs {
					rng := attr.Expr.Range()
					if len(elems) == len(refs) {
						rng = elems[i].Range()
					}
					addRef(ref, rng, nil)
				}
			}
		}
		for _, blk := range content.Blocks {
			if blk.Type == "source" {
				addRef(blk.Labels[0], blk.LabelRanges[0], blk)
			}
		}
	}
	if l.diags.HasErrors() {
		return nil
	}
	var sel []candidate
	for _, c := range all {
		if len(l.opts.Only) > 0 && !matchAny(l.opts.Only, c) {
			continue
		}
		if matchAny(l.opts.Except, c) {
			continue
		}
		sel = append(sel, c)
	}
	start := hcl.Range{Filename: l.path, Start: hcl.InitialPos, End: hcl.InitialPos}
	switch {
	case len(all) == 0:
		l.diags = append(l.diags, diagAt(&start, "No build",
			`The template has no build block naming a source, e.g. build { sources = ["source.qemu.debian"] }.`))
		return nil
	case len(sel) == 0:
		l.diags = append(l.diags, diagAt(nil, "No build selected",
			"-only and -except leave none of this template's builds (%s).", names(all)))
		return nil
	case len(sel) > 1:
		l.diags = append(l.diags, diagAt(nil, "More than one build",
			"kiln builds one image at a time and this template has %d builds (%s): choose one with -only=NAME.", len(sel), names(sel)))
		return nil
	}
	c := sel[0]
	if c.source.Labels[0] != "qemu" {
		l.diags = append(l.diags, diagAt(c.source.LabelRanges[0].Ptr(), "Builder not run by kiln",
			"kiln runs only the qemu builder (a cloud image booted under QEMU), not %q; use source \"qemu\" or leave this build out with -except=%s.", c.source.Labels[0], c.fullName()))
		return nil
	}
	return &c
}

func names(cs []candidate) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.fullName())
	}
	return strings.Join(out, ", ")
}

// matchAny matches -only/-except patterns as Packer does: globs against the
// build's full name, its TYPE.NAME, or its build name.
func matchAny(patterns []string, c candidate) bool {
	for _, p := range patterns {
		for _, n := range []string{c.fullName(), c.source.Labels[0] + "." + c.name, c.buildName} {
			if n == "" {
				continue
			}
			if ok, _ := path.Match(p, n); ok {
				return true
			}
		}
	}
	return false
}

// buildCtx is the evaluation context of a build's provisioners and
// post-processors: var, local, path, source and build.
func (l *loader) buildCtx(c *candidate, login *bake.Login) *hcl.EvalContext {
	ctx := l.ctx.NewChild()
	user, password := "", ""
	if login != nil {
		user, password = login.User, login.Password
	}
	var id [4]byte
	rand.Read(id[:])
	ctx.Variables = map[string]cty.Value{
		"source": cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal(c.name), "type": cty.StringVal("qemu")}),
		"build": cty.ObjectVal(map[string]cty.Value{
			"name":           cty.StringVal(c.buildName),
			"ID":             cty.StringVal(fmt.Sprintf("%x", id)),
			"User":           cty.StringVal(user),
			"Password":       cty.StringVal(password),
			"Host":           cty.StringVal("127.0.0.1"),
			"PackerHTTPIP":   cty.StringVal(guestHostIP),
			"PackerHTTPAddr": cty.StringVal(guestHostIP),
		}),
	}
	return ctx
}

// guestHostIP is the host as the guest sees it on QEMU's user network.
const guestHostIP = "10.0.2.2"

var (
	nameRe    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	versionRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)
)

// spec turns the selected build into a Spec.
func (l *loader) spec(c *candidate) *bake.Spec {
	spec := &bake.Spec{Compression: "zstd", BuildName: c.name}
	q := l.qemuSource(c, spec)
	if q == nil {
		return nil
	}
	ctx := l.buildCtx(c, spec.Login)
	chain := 0
	for _, blk := range c.content.Blocks {
		switch blk.Type {
		case "provisioner":
			if p, ok := l.provisioner(blk, ctx, c); ok {
				spec.Provisioners = append(spec.Provisioners, p...)
			}
		case "post-processor":
			chain++
			if pp, ok := l.postProcessor(blk, ctx, c, chain); ok {
				spec.PostProcessors = append(spec.PostProcessors, pp)
			}
		case "post-processors":
			chain++
			content, diags := blk.Body.Content(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "post-processor", LabelNames: []string{"type"}}}})
			l.diags = append(l.diags, diags...)
			for _, ppb := range content.Blocks {
				if pp, ok := l.postProcessor(ppb, ctx, c, chain); ok {
					spec.PostProcessors = append(spec.PostProcessors, pp)
				}
			}
		}
	}
	l.nameAndVersion(spec, c)
	spec.Generalize = l.opts.Generalize
	spec.SkipCloudInitWait = !l.opts.Generalize
	if l.opts.Generalize {
		l.notes = append(l.notes, "--generalize: kiln waits for cloud-init and generalises the image (machine-id, host keys, logs) before it is stored")
	}
	spec.Variables = l.specVariables()
	spec.TemplatePath = l.abs(l.path)
	spec.TemplateDigest = l.digest(spec.Variables)
	spec.Notes = l.notes
	return spec
}

// nameAndVersion names the stored version: --name or vm_name (without a
// disk image extension), and --version or var.version.
func (l *loader) nameAndVersion(spec *bake.Spec, c *candidate) {
	name := l.opts.Name
	from := "--name"
	if name == "" {
		name = strings.ToLower(spec.Output.Name)
		for _, ext := range []string{".qcow2", ".img", ".raw", ".qcow"} {
			name = strings.TrimSuffix(name, ext)
		}
		from = fmt.Sprintf("vm_name (%q)", spec.Output.Name)
	}
	if !nameRe.MatchString(name) {
		l.diags = append(l.diags, diagAt(c.source.DefRange.Ptr(), "No image name",
			"kiln stores the image under a name made from %s, but %q is not one (lowercase letters, digits, '.', '-' and '_'): give --name NAME.", from, name))
	}
	spec.Name = name
	version := l.opts.Version
	if version == "" {
		if v := l.vars["version"]; v != nil && v.value.Type() == cty.String && v.value.IsKnown() && !v.value.IsNull() {
			version = v.value.AsString()
			from = "var.version"
		} else {
			l.diags = append(l.diags, diagAt(c.source.DefRange.Ptr(), "No image version",
				"kiln stores each build as a version: give --version V, or declare a variable \"version\"."))
			return
		}
	} else {
		from = "--version"
	}
	if !versionRe.MatchString(version) {
		l.diags = append(l.diags, diagAt(nil, "Invalid version",
			"%s %q is not a valid version: use letters, digits, '.', '-', '_' and '+', starting with a letter or digit.", from, version))
	}
	spec.Version = version
}
