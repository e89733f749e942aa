package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/build"
	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
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
}

func (t *templateFlags) add(fs interface {
	StringArrayVar(*[]string, string, []string, string)
	StringVar(*string, string, string, string)
}) {
	fs.StringArrayVar(&t.vars, "var", nil, "set a template variable: NAME=VALUE (repeatable)")
	fs.StringArrayVar(&t.varFiles, "var-file", nil, "read variables from an HCL file of NAME = VALUE lines (repeatable)")
	fs.StringVar(&t.version, "version", "", "override the image version")
}

func (t *templateFlags) options() (template.Options, error) {
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
	fs := newFlags("build", "build TEMPLATE.kiln.hcl [flags]")
	var tf templateFlags
	tf.add(fs)
	force := fs.Bool("force", false, "replace an existing name:version")
	onError := fs.String("on-error", "cleanup", "on failure: cleanup (stop the VM, remove everything) or abort (keep the VM running to debug)")
	accel := fs.String("accel", "", "accelerator: kvm, hvf or tcg (default: the best available)")
	asJSON := fs.Bool("json", false, "print the manifest as JSON when done")
	noCache := fs.Bool("no-cache", false, "build even if identical inputs were built before")
	packerManifest := fs.String("manifest", "", "also write a Packer-compatible manifest (packer-manifest.json) to FILE")
	keepWorkDisk := fs.String("keep-work-disk", "", "keep the generalised working disk (before compaction) as FILE")
	cold := fs.Bool("cold", false, "boot the base even if a saved booted guest could be resumed, and save none")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give one template file, e.g. kiln build examples/hello/hello.kiln.hcl"}
	}
	if *onError != "cleanup" && *onError != "abort" {
		return usageError{fmt.Sprintf("--on-error %q: use cleanup or abort", *onError)}
	}
	opts, err := tf.options()
	if err != nil {
		return err
	}
	spec, err := template.Load(fs.Arg(0), opts)
	if err != nil {
		return err
	}
	ac, err := chooseAccel(*accel)
	if err != nil {
		return usageError{err.Error()}
	}
	if err := needTools(qemuSystem, qemuImg); err != nil {
		return err
	}
	if *accel == "" {
		warnAccel(ac)
	}
	paths := images.DefaultPaths()
	store, err := images.Open(paths.Images())
	if err != nil {
		return err
	}
	debug, _ := fs.GetBool("debug")
	say("building %s:%s from %s", spec.Name, spec.Version, fs.Arg(0))
	start := time.Now()
	res, err := build.Run(ctx, *spec, build.Options{
		Store: store, RunDir: paths.Runtime, CacheDir: paths.Cache, Force: *force,
		KeepOnError: *onError == "abort", Accel: ac, Out: os.Stderr, Debug: debug, NoCache: *noCache, KilnVersion: version,
		KeepWorkDisk: *keepWorkDisk, Cold: *cold,
	})
	if err != nil {
		var pe *build.ProvisionerError
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
func newRunUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func cmdValidate(ctx context.Context, args []string) error {
	fs := newFlags("validate", "validate TEMPLATE.kiln.hcl [flags]")
	var tf templateFlags
	tf.add(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give one template file"}
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
