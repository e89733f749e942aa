package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kiln-dev/kiln/bake"
	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/packer"
	"github.com/kiln-dev/kiln/template"
)

// exitProvisioner is kiln build's exit status when a provisioner failed,
// so a pipeline can tell a broken provisioning script from kiln's own errors.
const exitProvisioner = 3

// templateFlags are the flags that feed template variables.
type templateFlags struct {
	vars     []string
	varFiles []string
	version  string
	ordered  []packer.VarArg // --var and --var-file in command-line order
}

func (t *templateFlags) add(fs interface {
	Var(pflag.Value, string, string)
	StringVar(*string, string, string, string)
}) {
	fs.Var(orderedVar{list: &t.ordered}, "var", "set a template variable: NAME=VALUE (repeatable)")
	fs.Var(orderedVar{list: &t.ordered, file: true}, "var-file", "read variables from an HCL file of NAME = VALUE lines (repeatable)")
	fs.StringVar(&t.version, "version", "", "override the image version")
}

func (t *templateFlags) options() (template.Options, error) {
	for _, a := range t.ordered {
		if a.File != "" {
			t.varFiles = append(t.varFiles, a.File)
		} else {
			t.vars = append(t.vars, a.Name+"="+a.Value)
		}
	}
	t.ordered = nil
	o := template.Options{Vars: map[string]string{}, VarFiles: t.varFiles, Version: t.version}
	for _, kv := range t.vars {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return o, usageError{fmt.Sprintf("--var %q: use NAME=VALUE", kv)}
		}
		o.Vars[k] = v
	}
	return o, nil
}

func cmdBuild(ctx context.Context, args []string) error {
	fs := newFlags("build", "build TEMPLATE.kiln.hcl|TEMPLATE.pkr.hcl|DIR [flags]")
	var tf templateFlags
	tf.add(fs)
	var pf packerFlags
	pf.add(fs)
	force := forceFlag(fs, "replace an existing name:version")
	onError := fs.String("on-error", "cleanup", "on failure: cleanup (stop the VM, remove everything) or abort (keep the VM running to debug)")
	accel := addAccelFlag(fs)
	asJSON := fs.Bool("json", false, "print the manifest as JSON when done")
	noCache := fs.Bool("no-cache", false, "build even if identical inputs were built before")
	packerManifest := fs.String("manifest", "", "also write a Packer-compatible manifest (packer-manifest.json) to FILE")
	keepWorkDisk := fs.String("keep-work-disk", "", "keep the generalised working disk (before compaction) as FILE")
	cold := fs.Bool("cold", false, "boot the base even if a saved booted guest could be resumed, and save none")
	if err := parseFlags(fs, packerArgs(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give one template file, e.g. kiln build examples/hello/hello.kiln.hcl"}
	}
	if *onError == "run-cleanup-provisioner" { // Packer's; kiln runs no cleanup provisioner
		*onError = "cleanup"
	}
	if *onError != "cleanup" && *onError != "abort" {
		return usageError{fmt.Sprintf("--on-error %q: use cleanup or abort", *onError)}
	}
	debug, _ := fs.GetBool("debug")
	var spec *bake.Spec
	var err error
	if packer.IsTemplate(fs.Arg(0)) {
		spec, err = loadPacker(fs.Arg(0), &tf, &pf, *force, debug)
	} else {
		var opts template.Options
		if opts, err = tf.options(); err != nil {
			return err
		}
		spec, err = template.Load(fs.Arg(0), opts)
	}
	if err != nil {
		return err
	}
	if spec.Base.Image, err = localRef(ctx, spec.Base.Image); err != nil {
		return err
	}
	req, err := parseAccel(*accel)
	if err != nil {
		return err
	}
	req = templateAccel(req, spec.Accel)
	if err := needTools(qemuSystem, qemuImg); err != nil {
		return err
	}
	ac, err := req.choose(ctx)
	if err != nil {
		return err
	}
	noteTemplateAccel(req, spec.Accel, ac.Accel)
	paths := images.DefaultPaths()
	store, err := images.Open(paths.Images())
	if err != nil {
		return err
	}
	say("building %s:%s from %s", spec.Name, spec.Version, fs.Arg(0))
	start := time.Now()
	res, err := bake.Run(ctx, *spec, bake.Options{
		Store: store, RunDir: paths.Runtime, CacheDir: paths.Cache, Force: *force,
		KeepOnError: *onError == "abort", Accel: ac.Accel, CPU: ac.CPU, Out: os.Stderr, Debug: debug, NoCache: *noCache, KilnVersion: version,
		KeepWorkDisk: *keepWorkDisk, Cold: *cold,
	})
	if err != nil {
		var pe *bake.ProvisionerError
		if errors.As(err, &pe) {
			fmt.Fprintf(os.Stderr, "kiln build: %s\n", pe)
			return exitError{exitProvisioner}
		}
		return err
	}
	m := res.Manifest
	if res.Cached {
		say("nothing to do: %s:%s was built from identical inputs", m.Name, m.Version)
	} else {
		say("built %s:%s in %s", m.Name, m.Version, time.Since(start).Round(time.Second))
	}
	if *packerManifest != "" {
		if err := images.WritePackerManifest(*packerManifest, m, store.BlobPath(m.Digest), newRunUUID()); err != nil {
			return err
		}
	}
	if *asJSON {
		return printJSON(m)
	}
	fmt.Printf("%s:%s\n%s\n%s\n", m.Name, m.Version, m.Digest, disk.FormatSize(m.FileSize))
	return nil
}

// newRunUUID is a random UUID naming this run in the Packer manifest.
func newRunUUID() string { return bake.NewRunUUID() }

func cmdValidate(ctx context.Context, args []string) error {
	fs := newFlags("validate", "validate TEMPLATE.kiln.hcl|TEMPLATE.pkr.hcl|DIR [flags]")
	var tf templateFlags
	tf.add(fs)
	var pf packerFlags
	pf.add(fs)
	if err := parseFlags(fs, packerArgs(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give one template file"}
	}
	if packer.IsTemplate(fs.Arg(0)) {
		spec, err := loadPacker(fs.Arg(0), &tf, &pf, true, false)
		if err != nil {
			return err
		}
		for _, n := range spec.Notes {
			say("note: %s", n)
		}
		fmt.Printf("%s: ok (%s:%s)\n", fs.Arg(0), spec.Name, spec.Version)
		return nil
	}
	opts, err := tf.options()
	if err != nil {
		return err
	}
	if err := template.Validate(fs.Arg(0), opts); err != nil {
		return err
	}
	fmt.Printf("%s: ok\n", fs.Arg(0))
	return nil
}
