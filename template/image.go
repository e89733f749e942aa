package template

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/kiln-dev/kiln/bake"
	"github.com/kiln-dev/kiln/cloudinit"
	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/provision"
)

var (
	// Names and versions become parts of store paths and refs ("hello:1.0.0"),
	// so they avoid separators and may not start with a dot or dash.

	checksumRe = regexp.MustCompile(`^(sha256:[0-9a-fA-F]{64}|sha512:[0-9a-fA-F]{128})$`)
)

var imageSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "version"},
		{Name: "disk_size"},
		{Name: "cpus"},
		{Name: "memory"},
		{Name: "generalize"},
		{Name: "compression"},
		{Name: "flatten"},
		{Name: "warm"},
		{Name: "boot_timeout"},
		{Name: "shutdown_timeout"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "base"},
		{Type: "cloud_init"},
		{Type: "provision", LabelNames: []string{"type"}},
	},
}

var baseSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "file"},
		{Name: "url"},
		{Name: "checksum"},
		{Name: "image"},
	},
}

var cloudInitSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "user_data"}},
}

var shellSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "inline"},
		{Name: "script"},
		{Name: "scripts"},
		{Name: "env"},
		{Name: "expect_reboot"},
		{Name: "timeout"},
		{Name: "user"},
	},
}

var fileSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "source"},
		{Name: "destination"},
		{Name: "direction"},
	},
}

var (
	compressions   = []string{"zstd", "zlib", "none"}
	directions     = []string{"upload", "download"}
	provisionTypes = []string{"shell", "file"}
)

// image decodes the image block. Every attribute is checked even after a
// failure, so all problems are reported together.
func (l *loader) image(b *hcl.Block) *bake.Spec {
	spec := &bake.Spec{Generalize: true, Compression: "zstd", Warm: true}
	content, diags := b.Body.Content(imageSchema)
	l.diags = append(l.diags, diags...)
	attrs := content.Attributes

	spec.Name = b.Labels[0]
	if err := images.CheckName(spec.Name); err != nil {
		l.diags = append(l.diags, diagAt(b.LabelRanges[0].Ptr(), "Invalid image name",
			"%q is not a valid image name: %v (lower-case letters, digits, '.', '-' and '_', up to 128).", spec.Name, err))
	}

	verAttr := attrs["version"]
	if v, ok := l.value(verAttr, cty.String); ok {
		spec.Version = v.AsString()
		if l.opts.Version == "" && images.CheckVersion(spec.Version) != nil {
			l.diags = append(l.diags, diagAt(verAttr.Expr.Range().Ptr(), "Invalid version", "%s", versionProblem(spec.Version)))
		}
	}
	switch {
	case l.opts.Version != "":
		spec.Version = l.opts.Version
		if images.CheckVersion(spec.Version) != nil {
			l.diags = append(l.diags, diagAt(nil, "Invalid --version", "%s", versionProblem(spec.Version)))
		}
	case !l.isSet(verAttr):
		l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Missing version",
			`The image needs a version, e.g. version = "1.0.0", or one given with --version.`))
	}

	spec.DiskSize = l.size(attrs["disk_size"], 1<<20)
	spec.MemoryMiB = int(l.size(attrs["memory"], 1<<20) >> 20)
	if attr := attrs["cpus"]; attr != nil {
		if n, ok := l.integer(attr); ok {
			if n < 1 {
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid cpus", "cpus must be at least 1, not %d.", n))
			}
			spec.CPUs = n
		}
	}
	if v, ok := l.value(attrs["generalize"], cty.Bool); ok {
		spec.Generalize = v.True()
	}
	if v, ok := l.value(attrs["flatten"], cty.Bool); ok {
		spec.Flatten = v.True()
	}
	if v, ok := l.value(attrs["warm"], cty.Bool); ok {
		spec.Warm = v.True()
	}
	if s, ok := l.oneOf(attrs["compression"], compressions); ok {
		spec.Compression = s
	}
	spec.BootTimeout = l.duration(attrs["boot_timeout"])
	spec.ShutdownTimeout = l.duration(attrs["shutdown_timeout"])

	var bases, cloudInits []*hcl.Block
	for _, blk := range content.Blocks {
		switch blk.Type {
		case "base":
			bases = append(bases, blk)
		case "cloud_init":
			cloudInits = append(cloudInits, blk)
		case "provision":
			if p, ok := l.provisioner(blk); ok {
				spec.Provisioners = append(spec.Provisioners, p)
			}
		}
	}
	if len(bases) == 0 {
		l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Missing base block",
			`The image needs a base block saying what disk to start from: file, url (with checksum) or image.`))
	} else {
		spec.Base = l.base(bases[0])
		l.noRepeat(bases)
	}
	if len(cloudInits) > 0 {
		content, diags := cloudInits[0].Body.Content(cloudInitSchema)
		l.diags = append(l.diags, diags...)
		if attr := content.Attributes["user_data"]; !l.isSet(attr) {
			l.diags = append(l.diags, diagAt(cloudInits[0].DefRange.Ptr(), "Missing user_data",
				"The cloud_init block needs user_data: cloud-config YAML, e.g. user_data = file(\"cloud-config.yaml\")."))
		} else if v, ok := l.value(attr, cty.String); ok {
			spec.UserData = []byte(v.AsString())
			if len(spec.UserData) > cloudinit.MaxUserData {
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "user_data too large",
					"user_data is %d bytes, more than the %d kiln takes: keep cloud-config to settings and short scripts, and upload files with a file provisioner.", len(spec.UserData), cloudinit.MaxUserData))
			}
		}
		l.noRepeat(cloudInits)
	}
	return spec
}

// noRepeat reports the second and later of blocks that may appear once.
func (l *loader) noRepeat(blocks []*hcl.Block) {
	for _, b := range blocks[1:] {
		l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Duplicate "+b.Type+" block",
			"Only one %s block is allowed; the first is at %s.", b.Type, pos(blocks[0].DefRange)))
	}
}

func versionProblem(v string) string {
	if v == "" {
		return "The version must not be empty."
	}
	return fmt.Sprintf("%q is not a valid version: %v (letters, digits, '.', '-', '_' and '+', up to 128), e.g. \"1.0.0\".", v, images.CheckVersion(v))
}

func (l *loader) base(b *hcl.Block) bake.Source {
	var src bake.Source
	content, diags := b.Body.Content(baseSchema)
	l.diags = append(l.diags, diags...)
	attrs := content.Attributes

	given := l.present(attrs, "file", "url", "image")
	switch {
	case len(given) == 0:
		l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Missing base source",
			`The base block needs one of file (a local disk image), url (with checksum) or image (a stored image, e.g. "debian:12").`))
	case len(given) > 1:
		l.diags = append(l.diags, diagAt(given[1].NameRange.Ptr(), "Conflicting base sources",
			"The base block takes only one of file, url or image, but both %s and %s are set.", given[0].Name, given[1].Name))
	}

	if attr := attrs["file"]; attr != nil {
		if v, ok := l.value(attr, cty.String); ok {
			src.File = l.localFile(attr, attr.Expr.Range(), v.AsString(), "Base image not found", roleBase)
		}
	}
	if attr := attrs["url"]; l.isSet(attr) {
		if v, ok := l.value(attr, cty.String); ok {
			src.URL = v.AsString()
			if u, err := url.Parse(src.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				shown := "The value" // it might hold a password; say no more
				if err == nil {
					shown = fmt.Sprintf("%q", u.Redacted())
				}
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid base URL",
					"%s is not an http or https URL.", shown))
			}
		}
		if !l.isSet(attrs["checksum"]) {
			l.diags = append(l.diags, diagAt(attr.NameRange.Ptr(), "Missing checksum",
				`A base url needs a checksum, so a changed or corrupted download is caught: "sha256:HEX", "sha512:HEX" or "file:URL" of a SHA256SUMS-style list.`))
		}
	}
	if attr := attrs["checksum"]; l.isSet(attr) {
		if !l.isSet(attrs["url"]) {
			l.diags = append(l.diags, diagAt(attr.NameRange.Ptr(), "Unexpected checksum",
				"checksum only applies to a base url; a local file or stored image needs none."))
		}
		if v, ok := l.value(attr, cty.String); ok {
			src.Checksum = v.AsString()
			if err := checkChecksum(src.Checksum); err != nil {
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid checksum", "%s", err))
			} else if algo, hex, ok := strings.Cut(src.Checksum, ":"); ok && algo != "file" {
				src.Checksum = algo + ":" + strings.ToLower(hex)
			}
		}
	}
	if attr := attrs["image"]; attr != nil {
		if v, ok := l.value(attr, cty.String); ok {
			src.Image = v.AsString()
			if err := images.CheckImageRef(src.Image); err != nil { // as the build will
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid base image",
					`%q is not an image reference; use NAME or NAME:VERSION of a stored image, e.g. "debian:12".`, src.Image))
			}
		}
	}
	return src
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// checkChecksum accepts "sha256:HEX", "sha512:HEX" and "file:URL".
func checkChecksum(s string) error {
	if rest, ok := strings.CutPrefix(s, "file:"); ok {
		if u, err := url.Parse(rest); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%q: after file: comes the http or https URL of a SHA256SUMS-style list", s)
		}
		return nil
	}
	if !checksumRe.MatchString(s) {
		return fmt.Errorf(`%q is not a checksum: use "sha256:" and 64 hex digits, "sha512:" and 128 hex digits, or "file:URL" of a SHA256SUMS-style list`, s)
	}
	return nil
}

// provisioner decodes one provision block; the schema depends on its type,
// so an argument of the other type is reported as unsupported.
func (l *loader) provisioner(b *hcl.Block) (bake.Provisioner, bool) {
	p := bake.Provisioner{Type: b.Labels[0]}
	switch p.Type {
	case "shell":
		l.shell(b, &p)
	case "file":
		l.file(b, &p)
	default:
		l.diags = append(l.diags, diagAt(b.LabelRanges[0].Ptr(), "Unknown provisioner type",
			`There is no provisioner %q; use %s.%s`, p.Type, orList(provisionTypes), didYouMean(p.Type, provisionTypes)))
		return p, false
	}
	return p, true
}

func (l *loader) shell(b *hcl.Block, p *bake.Provisioner) {
	content, diags := b.Body.Content(shellSchema)
	l.diags = append(l.diags, diags...)
	attrs := content.Attributes

	given := l.present(attrs, "inline", "script", "scripts")
	switch {
	case len(given) == 0:
		l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Missing shell commands",
			"A shell provisioner needs one of inline (a list of commands), script or scripts."))
	case len(given) > 1:
		l.diags = append(l.diags, diagAt(given[1].NameRange.Ptr(), "Conflicting shell commands",
			"A shell provisioner takes only one of inline, script or scripts, but both %s and %s are set.", given[0].Name, given[1].Name))
	}

	if attr := attrs["inline"]; attr != nil {
		if v, ok := l.value(attr, cty.List(cty.String)); ok {
			p.Inline = stringList(v)
			if len(p.Inline) == 0 {
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Empty inline", "inline needs at least one command."))
			}
		}
	}
	if attr := attrs["script"]; attr != nil {
		if v, ok := l.value(attr, cty.String); ok {
			if s := l.localFile(attr, attr.Expr.Range(), v.AsString(), "Script not found", roleScript); s != "" {
				p.Scripts = []string{s}
			}
		}
	}
	if attr := attrs["scripts"]; attr != nil {
		if v, ok := l.value(attr, cty.List(cty.String)); ok {
			names := stringList(v)
			if len(names) == 0 {
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Empty scripts", "scripts needs at least one script."))
			}
			// Point at the offending element when the list is written out.
			elems, diags := hcl.ExprList(attr.Expr)
			for i, name := range names {
				rng := attr.Expr.Range()
				if !diags.HasErrors() && len(elems) == len(names) {
					rng = elems[i].Range()
				}
				if s := l.localFile(attr, rng, name, "Script not found", roleScript); s != "" {
					p.Scripts = append(p.Scripts, s)
				}
			}
		}
	}
	if attr := attrs["env"]; attr != nil {
		if v, ok := l.value(attr, cty.Map(cty.String)); ok {
			p.Env = map[string]string{}
			for k, ev := range v.AsValueMap() {
				if !provision.ValidEnvName(k) {
					l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid environment variable name",
						"%q cannot be an environment variable name: use letters, digits and _, not starting with a digit.", k))
				}
				p.Env[k] = ev.AsString()
			}
		}
	}
	if v, ok := l.value(attrs["expect_reboot"], cty.Bool); ok {
		p.ExpectReboot = v.True()
	}
	p.Timeout = l.duration(attrs["timeout"])
	if attr := attrs["user"]; attr != nil {
		if v, ok := l.value(attr, cty.String); ok {
			p.User = v.AsString()
			if !provision.ValidUserName(p.User) {
				l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid user",
					"%q is not a Linux account name: use lower-case letters, digits, _ and -, up to 32 characters, starting with a letter or _.", p.User))
			}
		}
	}
}

func (l *loader) file(b *hcl.Block, p *bake.Provisioner) {
	content, diags := b.Body.Content(fileSchema)
	l.diags = append(l.diags, diags...)
	attrs := content.Attributes

	p.Direction = "upload"
	dirKnown := true // which side is local is unknown when direction is invalid
	if attr := attrs["direction"]; attr != nil {
		n := len(l.diags)
		if s, ok := l.oneOf(attr, directions); ok {
			p.Direction = s
		} else if len(l.diags) > n {
			dirKnown = false
		}
	}
	for _, name := range []string{"source", "destination"} {
		attr := attrs[name]
		if !l.isSet(attr) {
			l.diags = append(l.diags, diagAt(b.DefRange.Ptr(), "Missing "+name,
				"A file provisioner needs a source and a destination."))
			continue
		}
		v, ok := l.value(attr, cty.String)
		if !ok {
			continue
		}
		s := v.AsString()
		if s == "" {
			l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Empty "+name, "The %s of a file provisioner must not be empty.", name))
			continue
		}
		// The local side is a path relative to the template; the guest
		// side is passed through as written.
		local := (name == "source") == (p.Direction == "upload")
		switch {
		case !dirKnown:
		case local && name == "source":
			s = l.localFile(attr, attr.Expr.Range(), s, "Upload source not found", roleUpload)
		case local:
			s = l.localPath(s)
		}
		if name == "source" {
			p.Source = s
		} else {
			p.Destination = s
		}
	}
}

// localPath makes p absolute against the template's folder. A trailing
// slash is kept: for uploads and downloads, as in Packer, it can mean "the
// contents of" rather than "the directory itself".
func (l *loader) localPath(p string) string {
	abs := l.st.resolve(p)
	if strings.HasSuffix(p, "/") && !strings.HasSuffix(abs, "/") {
		abs += "/"
	}
	return abs
}

// fileRole says what a local path is for, which decides what may be there
// and whether its content feeds the digest.
type fileRole int

const (
	roleBase   fileRole = iota // a disk image: a regular file, not hashed (gigabytes, on every load)
	roleScript                 // a script: a regular file, hashed
	roleUpload                 // an upload: a file or a directory, hashed
)

// localFile resolves a path the template names and checks that it exists
// now rather than halfway through a build. It returns "" after reporting a
// problem.
func (l *loader) localFile(attr *hcl.Attribute, rng hcl.Range, p, summary string, role fileRole) string {
	if p == "" {
		l.diags = append(l.diags, diagAt(rng.Ptr(), "Empty "+attr.Name, "%s must name a file.", attr.Name))
		return ""
	}
	abs := l.localPath(p)
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		l.diags = append(l.diags, diagAt(rng.Ptr(), summary,
			"No file exists at %q (resolved to %s); relative paths are resolved against the template's folder.", p, abs))
		return ""
	case err != nil:
		l.diags = append(l.diags, diagAt(rng.Ptr(), summary, "%v", err))
		return ""
	}
	switch {
	case fi.Mode().IsRegular():
	case role == roleUpload && fi.IsDir():
	case role == roleUpload:
		l.diags = append(l.diags, diagAt(rng.Ptr(), "Not a file or directory", "%q (resolved to %s) is neither a regular file nor a directory.", p, abs))
		return ""
	default:
		l.diags = append(l.diags, diagAt(rng.Ptr(), "Not a regular file", "%q (resolved to %s) is not a regular file.", p, abs))
		return ""
	}
	if role == roleScript && fi.Size() > maxReadSize {
		l.diags = append(l.diags, diagAt(rng.Ptr(), "Script too large",
			"%q is %d bytes, more than the %d kiln reads as a script; upload it with a file provisioner and run it from a short script.", p, fi.Size(), maxReadSize))
		return ""
	}
	if role != roleBase {
		l.inputs = append(l.inputs, localInput{path: abs, rng: rng})
	}
	return abs
}

// size decodes a size such as "4G"; it must be a whole multiple of unit
// bytes. It returns 0 when unset or invalid.
func (l *loader) size(attr *hcl.Attribute, unit int64) int64 {
	v, ok := l.value(attr, cty.String)
	if !ok {
		return 0
	}
	s := v.AsString()
	rng := attr.Expr.Range().Ptr()
	if strings.TrimSpace(s) == "" {
		l.diags = append(l.diags, diagAt(rng, "Invalid size", `%s must not be empty; write e.g. "4G" or "512M".`, attr.Name))
		return 0
	}
	if !disk.HasUnit(s) {
		l.diags = append(l.diags, diagAt(rng, "Invalid size",
			`%s needs a unit: %q is ambiguous; write e.g. "%sM" (K, M, G or T; powers of 1024).`, attr.Name, s, s))
		return 0
	}
	n, err := disk.ParseSize(s)
	switch {
	case err != nil:
		l.diags = append(l.diags, diagAt(rng, "Invalid size", "%s: %v.", attr.Name, err))
		return 0
	case n < unit || n%unit != 0:
		l.diags = append(l.diags, diagAt(rng, "Invalid size", "%s must be a whole number of MiB, at least 1M; %q is %d bytes.", attr.Name, s, n))
		return 0
	}
	return n
}

// duration decodes a Go duration such as "10m" or "1h30m"; 0 when unset.
func (l *loader) duration(attr *hcl.Attribute) time.Duration {
	v, ok := l.value(attr, cty.String)
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(v.AsString())
	if err == nil && d < 0 {
		err = errors.New("it is negative")
	}
	if err != nil {
		l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid duration",
			`%s must be a duration such as "90s", "10m" or "1h30m"; %q is not: %s.`, attr.Name, v.AsString(), strings.TrimPrefix(err.Error(), "time: ")))
		return 0
	}
	return d
}

// integer decodes a whole number that fits an int.
func (l *loader) integer(attr *hcl.Attribute) (int, bool) {
	v, ok := l.value(attr, cty.Number)
	if !ok {
		return 0, false
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if !bf.IsInt() || acc != 0 || int64(int(i)) != i {
		l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid "+attr.Name,
			"%s must be a whole number, not %s.", attr.Name, bf.Text('g', -1)))
		return 0, false
	}
	return int(i), true
}

// oneOf decodes a string that must be one of choices.
func (l *loader) oneOf(attr *hcl.Attribute, choices []string) (string, bool) {
	v, ok := l.value(attr, cty.String)
	if !ok {
		return "", false
	}
	s := v.AsString()
	for _, c := range choices {
		if s == c {
			return s, true
		}
	}
	l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid "+attr.Name,
		"%q is not a valid %s; use %s.%s", s, attr.Name, orList(choices), didYouMean(s, choices)))
	return "", false
}

// present returns those of the named attributes that are set, in source
// order, so a conflict is reported at the second one written.
func (l *loader) present(attrs hcl.Attributes, names ...string) []*hcl.Attribute {
	var out []*hcl.Attribute
	for _, n := range names {
		if a := attrs[n]; l.isSet(a) {
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NameRange.Start.Byte < out[j].NameRange.Start.Byte })
	return out
}

// orList renders choices as `"a", "b" or "c"`.
func orList(choices []string) string {
	quoted := make([]string, len(choices))
	for i, c := range choices {
		quoted[i] = fmt.Sprintf("%q", c)
	}
	if len(quoted) < 2 {
		return strings.Join(quoted, "")
	}
	return strings.Join(quoted[:len(quoted)-1], ", ") + " or " + quoted[len(quoted)-1]
}

func stringList(v cty.Value) []string {
	out := []string{}
	for _, e := range v.AsValueSlice() {
		out = append(out, e.AsString())
	}
	return out
}
