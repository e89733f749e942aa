package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/kiln-dev/kiln/bake"
	"github.com/kiln-dev/kiln/packer"
	"github.com/kiln-dev/kiln/qemu"
)

// packerSingleDash are the long flags `packer build` and `packer validate`
// take with one dash; kiln accepts them so pipelines keep their command
// lines. pflag would read "-var" as the shorthands -v -a -r, so they are
// rewritten to two dashes before parsing.
var packerSingleDash = map[string]bool{
	"var": true, "var-file": true, "only": true, "except": true, "force": true,
	"on-error": true, "debug": true, "color": true, "timestamp-ui": true, "parallel-builds": true,
	"machine-readable": true, "syntax-only": true, "evaluate-datasources": true, "no-warn-undeclared-var": true,
}

// packerArgs rewrites Packer's single-dash long flags to two dashes, up to
// a "--".
func packerArgs(args []string) []string {
	out := make([]string, len(args))
	copy(out, args)
	for i, a := range out {
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") || strings.HasPrefix(a, "--") {
			continue
		}
		name, _, _ := strings.Cut(a[1:], "=")
		if packerSingleDash[name] {
			out[i] = "-" + a
		}
	}
	return out
}

// orderedVar is the Value of --var and --var-file: both append to one
// list, so Packer templates get them in command-line order (later wins).
type orderedVar struct {
	list *[]packer.VarArg
	file bool
}

func (o orderedVar) String() string { return "" }
func (o orderedVar) Type() string {
	if o.file {
		return "file"
	}
	return "NAME=VALUE"
}
func (o orderedVar) Set(s string) error {
	if o.file {
		*o.list = append(*o.list, packer.VarArg{File: s})
		return nil
	}
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: use NAME=VALUE", s)
	}
	*o.list = append(*o.list, packer.VarArg{Name: k, Value: v})
	return nil
}

// packerFlags are the flags only Packer templates use.
type packerFlags struct {
	only, except []string
	name         string
	generalize   bool
}

func (p *packerFlags) add(fs *pflag.FlagSet) {
	fs.StringSliceVar(&p.only, "only", nil, "Packer templates: run only these builds (qemu.NAME, globs)")
	fs.StringSliceVar(&p.except, "except", nil, "Packer templates: skip these builds")
	fs.StringVar(&p.name, "name", "", "Packer templates: the stored image's name (default: from vm_name)")
	fs.BoolVar(&p.generalize, "generalize", false, "Packer templates: wait for cloud-init and generalise the image, as kiln templates do")
	for _, n := range []string{"color", "timestamp-ui", "machine-readable", "syntax-only", "evaluate-datasources", "no-warn-undeclared-var"} {
		fs.Bool(n, false, "accepted for Packer's command lines; no effect")
		fs.MarkHidden(n)
	}
	fs.Int("parallel-builds", 0, "accepted for Packer's command lines; kiln builds one image at a time")
	fs.MarkHidden("parallel-builds")
}

// loadPacker loads a Packer template with the command line's options.
func loadPacker(path string, tf *templateFlags, pf *packerFlags, force, debug bool) (*bake.Spec, error) {
	spec, err := packer.Load(path, packer.Options{
		Vars: tf.ordered, Only: pf.only, Except: pf.except, Name: pf.name, Version: tf.version,
		Force: force, Generalize: pf.generalize, Debug: debug,
	})
	if err != nil {
		return nil, err
	}
	if spec.Firmware == "uefi" {
		if spec.Firmware, err = firmwarePath("uefi"); err != nil {
			return nil, fmt.Errorf("efi_boot = true: %w", err)
		}
	}
	return spec, nil
}

// templateAccel applies a template's accelerator when neither --accel nor
// KILN_ACCEL names one: "tcg" (Packer's "none") is used as asked; "kvm" and
// "hvf" are a preference the probe decides, so a template written for a
// KVM laptop still builds in CI without KVM (noteTemplateAccel says so).
func templateAccel(req accelRequest, fromTemplate string) accelRequest {
	if req.from != "" || fromTemplate != string(qemu.TCG) {
		return req
	}
	return accelRequest{want: qemu.TCG, from: `the template's accelerator "tcg"`}
}

// noteTemplateAccel says when the template's accelerator is not the one
// the build runs under.
func noteTemplateAccel(req accelRequest, fromTemplate string, got qemu.Accel) {
	if req.from == "" && fromTemplate != "" && fromTemplate != string(got) {
		say("note: the template's accelerator %q cannot run here; using %s", fromTemplate, got)
	}
}
