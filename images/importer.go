package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/disk"
)

// importFormats are the disk image formats Import takes; all but qcow2 are
// converted.
var importFormats = []string{"qcow2", "raw", "vmdk", "vpc", "vhdx"}

// Import adds a disk image from outside kiln as name:version. A qcow2 image
// without a backing file is stored as it is (copied; file is left alone);
// raw, vmdk, vpc (VHD) and vhdx images are first converted to a
// zstd-compressed qcow2 in the store's tmp folder. The file goes through
// disk.Admit first: an image whose data or backing lives in another file
// (a backing file, an external data file, vmdk extents) is refused, as is
// a qcow2 image qemu-img check finds corrupt. The manifest's Base records the file's absolute path
// and the sha256 of its original content. force replaces an existing
// version, as for Add. KilnVersion is left empty: the caller may not know
// it, and Add does not need it.
func (s *Store) Import(ctx context.Context, file, name, version string, force bool) (Manifest, error) {
	r := Ref{Name: name, Version: version}
	if err := r.validate(true); err != nil {
		return Manifest{}, err
	}
	start := time.Now()
	abs, err := filepath.Abs(file)
	if err != nil {
		return Manifest{}, fmt.Errorf("import %s: %w", file, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return Manifest{}, fmt.Errorf("import: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Manifest{}, fmt.Errorf("import %s: not a regular file", file)
	}
	if err := s.init(); err != nil {
		return Manifest{}, err
	}
	// Fail fast, before converting gigabytes; Add checks again.
	if !force && s.hasManifest(r) {
		return Manifest{}, exists(r)
	}

	// The gate: kiln reads the format and refuses an image that would make
	// qemu read another file (a data file, a backing file, vmdk extents).
	img, err := disk.Admit(ctx, file, disk.AdmitOptions{})
	if err != nil {
		return Manifest{}, err // it names the file
	}
	format := img.Format
	if !slices.Contains(importFormats, format) {
		return Manifest{}, fmt.Errorf("import %s: %s images are not supported (use %s); convert it with qemu-img first", file, format, strings.Join(importFormats, ", "))
	}
	if format == "qcow2" {
		if img.Info.Corrupt {
			return Manifest{}, fmt.Errorf("import %s: qcow2 marks the image corrupt; repair it (qemu-img check -r all) first", file)
		}
		var ce *disk.CheckError
		if err := disk.CheckAs(ctx, abs, format); errors.As(err, &ce) && ce.Corruptions == 0 && ce.CheckErrors == 0 {
			// Leaked clusters only waste space; the image is fine to use.
		} else if err != nil {
			return Manifest{}, fmt.Errorf("import %s: %w; repair it (qemu-img check -r all) first", file, err)
		}
	}

	sum, err := fileDigestContext(ctx, abs)
	if err != nil {
		return Manifest{}, fmt.Errorf("import %s: %w", file, err)
	}
	m := Manifest{
		Name: name, Version: version, Format: "qcow2",
		Base:       BaseInfo{Source: abs, Checksum: sum},
		BuildStart: start,
	}
	src, keep := abs, true
	if format == "qcow2" {
		// Stored as is: Add's copy must hash the same, which also catches
		// the file changing while it is imported.
		m.Digest = sum
	} else {
		dst := s.tmpName("import") + ".qcow2"
		defer os.Remove(dst) // Add moves it in; this is for failures
		if err := disk.Convert(ctx, abs, dst, disk.ConvertOptions{Format: "qcow2", Compression: "zstd", SourceFormat: format}); err != nil {
			return Manifest{}, fmt.Errorf("import %s: %w", file, err)
		}
		m.Compression = "zstd"
		src, keep = dst, false
	}
	return s.Add(ctx, m, src, AddOptions{Force: force, KeepSource: keep})
}
