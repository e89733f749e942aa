package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/ociimage"
)

// registryFlags are the flags push and pull share.
type registryFlags struct {
	username      string
	passwordStdin bool
	plainHTTP     bool
	asJSON        bool
}

func (r *registryFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&r.username, "username", "", "registry user (instead of ~/.docker/config.json and its credential helpers)")
	fs.BoolVar(&r.passwordStdin, "password-stdin", false, "read the registry password (or token) from stdin")
	fs.BoolVar(&r.plainHTTP, "plain-http", false, "talk plain HTTP, not HTTPS (automatic for localhost and 127.0.0.1)")
	fs.BoolVar(&r.asJSON, "json", false, "print the result as JSON")
}

// options turns the flags into ociimage.Options.
func (r *registryFlags) options() (ociimage.Options, error) {
	o := ociimage.Options{PlainHTTP: r.plainHTTP}
	switch {
	case r.passwordStdin && r.username == "":
		return o, usageError{"--password-stdin needs --username"}
	case r.username != "" && !r.passwordStdin:
		return o, usageError{"--username needs --password-stdin (a password on the command line would show in ps and shell history)"}
	case r.passwordStdin:
		data, err := io.ReadAll(io.LimitReader(os.Stdin, 64<<10))
		if err != nil {
			return o, fmt.Errorf("reading the password from stdin: %w", err)
		}
		pw := strings.TrimRight(string(data), "\r\n")
		if pw == "" {
			return o, usageError{"--password-stdin read an empty password"}
		}
		o.Username, o.Password = r.username, pw
	}
	return o, nil
}

// byteProgress draws the progress bar export uses, from bytes moved; end
// finishes its line if it drew one.
func byteProgress(label string) (progress func(done, total int64), end func()) {
	bar := progressBar(label)
	drew := false
	return func(done, total int64) {
			if total > 0 {
				drew = true
				bar(100 * float64(done) / float64(total))
			}
		}, func() {
			if drew && term.IsTerminal(int(os.Stderr.Fd())) { // the bar's line is open
				fmt.Fprintln(os.Stderr)
			}
		}
}

// cmdImagesPush sends a version, and the blobs of its backing chain that
// the registry lacks, to an OCI registry.
func cmdImagesPush(ctx context.Context, args []string) error {
	fs := newFlags("images push", "images push REF REGISTRY/REPO[:TAG] [--username U --password-stdin] [--plain-http] [--json]")
	var rf registryFlags
	rf.add(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usageError{"give a stored ref and a registry reference, e.g. kiln images push hello:1.1.0 ghcr.io/acme/hello"}
	}
	dst, err := ociimage.ParseReference(fs.Arg(1))
	if err != nil {
		return usageError{err.Error()}
	}
	store, m, err := resolveStored(fs.Arg(0))
	if err != nil {
		return err
	}
	ref, _ := images.ParseRef(fs.Arg(0)) // resolveStored parsed it
	var extra []string
	if ref.Channel != "" && ref.Channel != images.Latest && dst.Tag() == "" {
		extra = append(extra, ref.Channel) // hello@stable moves the registry's stable tag
	}
	o, err := rf.options()
	if err != nil {
		return err
	}
	var end func()
	o.Progress, end = byteProgress("pushing " + m.Ref().String())
	res, err := ociimage.Push(ctx, store, m.Ref(), dst, extra, o)
	end()
	if err != nil {
		return err
	}
	if rf.asJSON {
		return printJSON(res)
	}
	chain, had := "", ""
	if len(res.Chain) > 1 {
		chain = " (" + strings.Join(res.Chain, " → ") + ")"
	}
	if res.LayersSent < res.Layers {
		had = "; the registry had the rest"
	}
	say("pushed %s%s to %s in %s: sent %s of %s, %d of %d layers%s",
		res.Image, chain, dst.Repo(), time.Duration(res.DurationSec*float64(time.Second)).Round(time.Millisecond),
		disk.FormatSize(res.BytesSent), disk.FormatSize(res.BytesTotal), res.LayersSent, res.Layers, had)
	if res.Revoked != "" {
		say("%s is revoked (%s); the registry carries the revocation, so pullers refuse it too", res.Image, res.Revoked)
	}
	if res.Unrevoked {
		say("%s is no longer revoked: its revocation in the registry was withdrawn", res.Image)
	}
	if res.Warning != "" {
		say("warning: %s", res.Warning)
	}
	fmt.Println(res.Reference)
	for _, t := range res.Tags {
		fmt.Printf("%s:%s\n", dst.Repo(), t)
	}
	return nil
}

// cmdImagesPull fetches a version and its backing chain from a registry.
func cmdImagesPull(ctx context.Context, args []string) error {
	fs := newFlags("images pull", "images pull REGISTRY/REPO[:TAG|@sha256:…] [--name N] [--version V] [--force] [--username U --password-stdin] [--plain-http] [--json]")
	name := fs.String("name", "", "store it under this name instead of the pushed one")
	ver := fs.String("version", "", "store it under this version instead of the pushed one")
	force := forceFlag(fs, "replace a different image stored under the same name:version")
	var rf registryFlags
	rf.add(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give a registry reference, e.g. kiln images pull ghcr.io/acme/hello:1.1.0"}
	}
	src, err := ociimage.ParseReference(fs.Arg(0))
	if err != nil {
		return usageError{err.Error()}
	}
	o, err := rf.options()
	if err != nil {
		return err
	}
	var end func()
	o.Progress, end = byteProgress("pulling " + fs.Arg(0))
	store, err := openStore()
	if err != nil {
		return err
	}
	res, err := ociimage.Pull(ctx, store, src, ociimage.PullOptions{Name: *name, Version: *ver, Force: *force}, o)
	end()
	if err != nil {
		return err
	}
	if rf.asJSON {
		return printJSON(res)
	}
	reportPull(fs.Arg(0), res)
	fmt.Println(res.Image)
	fmt.Println(res.BlobDigest)
	return nil
}

func reportPull(from string, res ociimage.PullResult) {
	say("pulled %s as %s in %s: fetched %s of %s (blobs fetched: %d; images already here: %d)", from, res.Image,
		time.Duration(res.DurationSec*float64(time.Second)).Round(time.Millisecond),
		disk.FormatSize(res.BytesFetched), disk.FormatSize(res.BytesTotal), res.BlobsFetched, len(res.Present))
	if res.Channel != "" {
		say("%s@%s → %s", strings.Split(res.Image, ":")[0], res.Channel, strings.SplitN(res.Image, ":", 2)[1])
	}
	if res.Revoked != "" {
		say("%s is revoked in the registry: %s; run, build, fleet up and rollout refuse it unless --force", res.Image, res.Revoked)
	}
}

// localRef is the one place a registry reference given where a stored ref
// is expected (run, build bases, fleet up, rollout) becomes a stored ref:
// the version an earlier pull stored by that reference, or else it pulls
// it (only the blobs the store lacks) with the docker credentials, and
// returns its name:version. Any other argument is returned as it is.
func localRef(ctx context.Context, arg string) (string, error) {
	if !images.IsRegistryRef(arg) {
		return arg, nil
	}
	src, err := ociimage.ParseReference(arg)
	if err != nil {
		return "", err
	}
	store, err := openStore()
	if err != nil {
		return "", err
	}
	if m, ok := ociimage.Local(store, src); ok {
		return m.Ref().String(), nil // pulled before by this very reference
	}
	progress, end := byteProgress("pulling " + arg)
	res, err := ociimage.Pull(ctx, store, src, ociimage.PullOptions{}, ociimage.Options{Progress: progress})
	end()
	if err != nil {
		return "", err
	}
	if res.BytesFetched > 0 || len(res.Stored) > 0 {
		reportPull(arg, res)
	}
	return res.Image, nil
}
