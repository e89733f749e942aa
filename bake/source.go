package bake

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/fetch"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/layout"
)

// sourceInfo is the resolved base: a local disk to put the overlay on, and
// what the manifest records about where it came from.
type sourceInfo struct {
	path        string
	format      string // as kiln determined it; passed to every qemu-img and QEMU call
	virtualSize int64
	base        images.BaseInfo
	parent      *images.Parent // set when the base is a stored image
}

func (b *builder) resolveSource(ctx context.Context) error {
	src := b.spec.Base
	switch {
	case src.Image != "":
		img, err := b.opts.Store.Use(src.Image, b.opts.Force)
		if err != nil {
			if errors.Is(err, images.ErrNotFound) && strings.HasPrefix(src.Image, "debian") {
				return fmt.Errorf("%w (make it with `kiln base debian`)", err)
			}
			return err
		}
		m := img.Manifest
		b.source = sourceInfo{
			path: img.Blob, format: m.Format, virtualSize: m.VirtualSize,
			base:   images.BaseInfo{Source: "image:" + m.Ref().String(), Checksum: m.Digest},
			parent: &images.Parent{Ref: m.Ref().String(), Digest: m.Digest},
		}
		b.say("base %s (%s)", m.Ref(), m.Digest[:19])
	case src.File != "":
		img, err := disk.Admit(ctx, src.File, disk.AdmitOptions{})
		if err != nil {
			return fmt.Errorf("base file: %w", err)
		}
		sum, err := images.FileDigest(img.Path)
		if err != nil {
			return err
		}
		b.source = sourceInfo{path: img.Path, format: img.Format, virtualSize: img.VirtualSize,
			base: images.BaseInfo{Source: src.File, Checksum: sum}}
	case src.URL != "":
		sum, err := fetch.ParseChecksum(src.Checksum)
		if err != nil {
			return err
		}
		f := &fetch.Fetcher{CacheDir: layout.Home{Cache: b.opts.CacheDir}.Downloads()}
		res, err := f.Fetch(ctx, src.URL, sum)
		if err != nil {
			return err
		}
		if res.Cached {
			b.say("base %s (cached download)", src.URL)
		} else {
			b.say("downloaded %s (%s)", src.URL, disk.FormatSize(res.Size))
		}
		// A checksum that matches says the bytes are the ones asked for,
		// not that they are safe to open: the download goes through the
		// same gate as any image from outside.
		img, err := disk.Admit(ctx, res.Path, disk.AdmitOptions{})
		var re *disk.RefusedError
		if errors.As(err, &re) {
			f.Discard(res)
			re.Path = src.URL // the cache's name for it says nothing to the user
			return fmt.Errorf("base url: %w (the download was removed from the cache)", re)
		}
		if err != nil {
			return fmt.Errorf("base url %s: %w", src.URL, err)
		}
		b.source = sourceInfo{path: img.Path, format: img.Format, virtualSize: img.VirtualSize,
			base: images.BaseInfo{Source: src.URL, Checksum: res.Checksum.Algo + ":" + res.Checksum.Hex}}
	default:
		return fmt.Errorf("the template names no base: set one of file, url or image in the base block")
	}
	return b.checkDiskSize(ctx)
}

// checkDiskSize refuses a disk_size below the base's own size now, before
// anything boots: a disk can only grow.
func (b *builder) checkDiskSize(ctx context.Context) error {
	if b.spec.DiskSize <= 0 {
		return nil
	}
	if b.spec.DiskSize < b.source.virtualSize {
		base := b.source.base.Source
		if b.source.parent != nil {
			base = b.source.parent.Ref
		}
		return fmt.Errorf("disk_size %s is smaller than the base image %s (%s); disks can only grow: raise disk_size or leave it out",
			disk.FormatSize(b.spec.DiskSize), base, disk.FormatSize(b.source.virtualSize))
	}
	return nil
}
