package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/termsafe"
	"github.com/kiln-dev/kiln/supervisor"
)

// cmdImagesTag moves a channel: `tag REF CHANNEL`, `tag NAME@CHANNEL --undo`,
// `tag NAME@CHANNEL --to VERSION`, or `tag NAME@CHANNEL` to show its history.
func cmdImagesTag(args []string) error {
	fs := newFlags("images tag", "images tag REF CHANNEL | images tag NAME@CHANNEL [--undo | --to VERSION]")
	undo := fs.Bool("undo", false, "move the channel back to where it pointed before")
	to := fs.String("to", "", "move the channel to this version")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	switch {
	case fs.NArg() == 2:
		ref, err := images.ParseRef(fs.Arg(0))
		if err != nil {
			return err
		}
		m, err := store.Resolve(ref)
		if err != nil {
			return err
		}
		if err := store.Tag(m.Ref(), fs.Arg(1)); err != nil {
			return err
		}
		say("%s@%s → %s", m.Name, fs.Arg(1), m.Version)
		return nil
	case fs.NArg() == 1:
		ref, err := images.ParseRef(fs.Arg(0))
		if err != nil {
			return err
		}
		if ref.Channel == "" {
			return usageError{"name a channel, e.g. hello@stable"}
		}
		switch {
		case *undo:
			prev, err := store.UndoTag(ref.Name, ref.Channel)
			if err != nil {
				return err
			}
			say("%s@%s → %s (moved back)", ref.Name, ref.Channel, prev.Version)
			return nil
		case *to != "":
			if err := store.Tag(images.Ref{Name: ref.Name, Version: *to}, ref.Channel); err != nil {
				return err
			}
			say("%s@%s → %s", ref.Name, ref.Channel, *to)
			return nil
		}
		chans, err := store.Channels(ref.Name)
		if err != nil {
			return err
		}
		for _, c := range chans {
			if c.Name != ref.Channel {
				continue
			}
			fmt.Printf("%s@%s → %s\n", ref.Name, c.Name, c.Current)
			for i := len(c.History) - 1; i >= 0; i-- {
				fmt.Printf("  %s  %s\n", c.History[i].At.Local().Format(time.DateTime), c.History[i].Version)
			}
			return nil
		}
		return fmt.Errorf("%s has no channel %q", ref.Name, ref.Channel)
	}
	return usageError{"give REF CHANNEL (e.g. hello:1.1.0 stable) or NAME@CHANNEL with --undo or --to"}
}

func cmdImagesTree(args []string) error {
	fs := newFlags("images tree", "images tree")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	roots, err := store.Tree()
	if err != nil {
		return err
	}
	var walk func(n *images.Node, indent string)
	walk = func(n *images.Node, indent string) {
		note := ""
		if r, ok := store.Revoked(n.Manifest.Ref()); ok {
			note = " (revoked: " + termsafe.Line(r.Reason) + ")"
		}
		src := ""
		if n.Parent == nil {
			src = "  from " + termsafe.Line(n.Base.Source)
		}
		fmt.Printf("%s%s:%s  %s  %s%s%s\n", indent, n.Name, n.Version, shortDigest(n.Digest), disk.FormatSize(n.FileSize), src, note)
		for _, c := range n.Children {
			walk(c, indent+"  ")
		}
	}
	for _, r := range roots {
		walk(r, "")
	}
	return nil
}

func cmdImagesRevoke(args []string, revoke bool) error {
	name := "images revoke"
	if !revoke {
		name = "images unrevoke"
	}
	fs := newFlags(name, name+" REF [--reason TEXT]")
	reason := fs.String("reason", "", "why the image must not be used (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give an image ref"}
	}
	store, m, err := resolveStored(fs.Arg(0))
	if err != nil {
		return err
	}
	if !revoke {
		return store.Unrevoke(m.Ref())
	}
	if strings.TrimSpace(*reason) == "" {
		return usageError{"say why with --reason, e.g. --reason \"CVE-2026-1234 in openssl\""}
	}
	if err := store.Revoke(m.Ref(), *reason); err != nil {
		return err
	}
	say("%s is revoked: builds, fleets and rollouts refuse it unless forced", m.Ref())
	return nil
}

func cmdImagesVerify(ctx context.Context, args []string) error {
	fs := newFlags("images verify", "images verify [REF]")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := needTools(qemuImg); err != nil {
		return err
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	results := map[string]error{}
	if fs.NArg() == 1 {
		_, m, err := resolveStored(fs.Arg(0))
		if err != nil {
			return err
		}
		results[m.Ref().String()] = store.Verify(ctx, m.Ref())
	} else {
		results = store.VerifyAll(ctx)
	}
	refs := make([]string, 0, len(results))
	for r := range results {
		refs = append(refs, r)
	}
	sort.Strings(refs)
	bad := 0
	for _, r := range refs {
		if err := results[r]; err != nil {
			bad++
			fmt.Printf("FAIL  %s\n", termsafe.Text(err.Error()))
		} else {
			fmt.Printf("ok    %s\n", r)
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d images failed verification", bad, len(refs))
	}
	return nil
}

// inUseRoots finds the blobs that running work is backed by: fleets'
// instance overlays, and the working disks of builds and runs in progress.
// rm and gc treat them as roots.
func inUseRoots(ctx context.Context, store *images.Store) map[string]string {
	roots := map[string]string{}
	add := func(overlay, user string) {
		info, err := disk.ReadInfo(ctx, overlay)
		if err != nil {
			return
		}
		if d, ok := store.BlobDigest(info.FullBackingFilename); ok {
			roots[d] = user
		}
	}
	paths := images.DefaultPaths()
	fleets, _ := os.ReadDir(filepath.Join(paths.Data, "fleets"))
	for _, f := range fleets {
		dirs := supervisor.FleetDirs(paths.Data, f.Name())
		insts, _ := os.ReadDir(dirs.Instances())
		for _, in := range insts {
			add(filepath.Join(dirs.Instance(in.Name()), "disk.qcow2"), fmt.Sprintf("fleet %s (%s)", f.Name(), in.Name()))
		}
	}
	// A build's VM folder is build-*/vm; a run's is the run-* folder itself.
	work, _ := filepath.Glob(filepath.Join(paths.Runtime, "*", "disk.qcow2"))
	more, _ := filepath.Glob(filepath.Join(paths.Runtime, "*", "vm", "disk.qcow2"))
	for _, overlay := range append(work, more...) {
		rel, _ := filepath.Rel(paths.Runtime, overlay)
		add(overlay, "kiln work in progress ("+strings.Split(rel, string(filepath.Separator))[0]+")")
	}
	return roots
}

func cmdImagesRemove(ctx context.Context, args []string) error {
	fs := newFlags("images rm", "images rm REF [--force]")
	force := forceFlag(fs, "remove even if a fleet runs it or another version is built on it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give an image ref, e.g. hello:1.0.0"}
	}
	store, m, err := resolveStored(fs.Arg(0))
	if err != nil {
		return err
	}
	// Without qemu-img, overlays in use could not be traced to their blobs.
	if err := needTools(qemuImg); err != nil {
		return err
	}
	if err := store.RemoveChecked(m.Ref(), inUseRoots(ctx, store), *force); err != nil {
		return err
	}
	say("removed %s; `kiln images gc` frees its blob when nothing else uses it", m.Ref())
	return nil
}

func cmdImagesGC(ctx context.Context, args []string) error {
	fs := newFlags("images gc", "images gc [--dry-run]")
	dry := fs.Bool("dry-run", false, "say what would be freed, remove nothing")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// Without qemu-img, overlays in use could not be traced to their
	// blobs, and gc would free what fleets and builds still read.
	if err := needTools(qemuImg); err != nil {
		return err
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	rep, err := store.GC(ctx, inUseRoots(ctx, store), *dry)
	if err != nil {
		return err
	}
	verb := "freed"
	if *dry {
		verb = "would free"
	}
	for _, it := range rep.Removed {
		fmt.Printf("%s  %s\n", it.Digest, disk.FormatSize(it.Size))
	}
	for _, s := range rep.Stale {
		fmt.Printf("stale  %s\n", termsafe.Line(s))
	}
	say("gc %s %s in %d blobs; %d kept", verb, disk.FormatSize(rep.Freed), len(rep.Removed), rep.Kept)
	// Saved guests (warm starts) of bases that are gone can never resume.
	removed := map[string]bool{}
	for _, it := range rep.Removed {
		removed[it.Digest] = true
	}
	return reportRemoved(savedStates(), stateBaseGone(store, removed), *dry, "gc")
}

func cmdImagesImport(ctx context.Context, args []string) error {
	fs := newFlags("images import", "images import FILE --name NAME --version VERSION [--force]")
	name := fs.String("name", "", "image name")
	ver := fs.String("version", "", "image version")
	force := forceFlag(fs, "replace an existing name:version")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *name == "" || *ver == "" {
		return usageError{"give a file, --name and --version, e.g. kiln images import disk.vmdk --name app --version 1.0"}
	}
	if err := needTools(qemuImg); err != nil {
		return err
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	m, err := store.Import(ctx, fs.Arg(0), *name, *ver, *force)
	if err != nil {
		return err
	}
	say("imported %s as %s:%s", termsafe.Line(fs.Arg(0)), m.Name, m.Version)
	fmt.Printf("%s:%s\n%s\n", m.Name, m.Version, m.Digest)
	return nil
}
