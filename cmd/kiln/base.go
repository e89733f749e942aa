package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kiln-dev/kiln/baseimage"
	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/layout"
)

func cmdBase(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "debian" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Println("Usage: kiln base debian [--suite bookworm] [--mirror URL] [--size 2G] [-o FILE]")
			return nil
		}
		return usageError{"say which distribution: `kiln base debian` (the only one for now)"}
	}
	fs := newFlags("base debian", "base debian [flags]")
	suite := fs.String("suite", "bookworm", "Debian suite (code name)")
	mirror := fs.String("mirror", baseimage.DefaultMirror, "Debian mirror to install from")
	size := fs.String("size", "2G", "virtual disk size")
	out := fs.StringP("output", "o", "", "also write the image to FILE (a .sha256 goes beside it)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	bytes, err := disk.ParseSize(*size)
	if err != nil {
		return usageError{"--size: " + err.Error()}
	}
	paths := layout.Default()
	start := time.Now()
	res, err := baseimage.Make(ctx, baseimage.Options{
		Suite: *suite, Mirror: *mirror, Size: bytes, Output: *out, Cache: paths.Cache,
		Log: func(f string, a ...any) { say(f, a...) },
	})
	if err != nil {
		return err
	}
	if res.Cached {
		say("same inputs as an earlier build: reused the cached image")
	} else {
		say("base image made in %s", time.Since(start).Round(time.Second))
	}
	ref, err := storeBase(ctx, paths, *suite, *mirror, res)
	if err != nil {
		return err
	}
	say("stored as %s", ref)
	fmt.Printf("%s\nsha256:%s\n", res.Path, res.SHA256)
	return nil
}

// storeBase adds the base image to the store as debian:VERSION so templates
// and `kiln run` can name it. The same image already stored is left alone.
func storeBase(ctx context.Context, paths layout.Home, suite, mirror string, res baseimage.Result) (images.Ref, error) {
	store, err := images.Open(paths.StoreDir())
	if err != nil {
		return images.Ref{}, err
	}
	ref := images.Ref{Name: "debian", Version: baseimage.Version(suite)}
	digest := "sha256:" + res.SHA256
	if m, err := store.Get(ref); err == nil && m.Digest == digest {
		return ref, nil
	}
	now := time.Now()
	_, err = store.Add(ctx, images.Manifest{
		Name: ref.Name, Version: ref.Version, Digest: digest, Format: "qcow2", Compression: "zstd",
		Base:        images.BaseInfo{Source: fmt.Sprintf("debian %s from %s (kiln base debian)", suite, mirror)},
		KilnVersion: version, BuildStart: now, BuildEnd: now,
	}, res.Path, images.AddOptions{Force: true, KeepSource: true})
	return ref, err
}
