package disk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// roundUp512 matches qemu-img create, which silently rounds sizes up to whole
// sectors; resize would refuse them instead.
func roundUp512(n int64) int64 { return (n + 511) &^ 511 }

// CreateOverlay makes path a new qcow2 image whose unwritten blocks come from
// base, so a VM can run without touching the base image. The backing path is
// stored absolute (so the overlay works from any folder) and its format is
// always stated explicitly: probing a backing file's format is unsafe and
// newer qemu refuses it. baseFormat "" means "whatever base is"; a value that
// disagrees with base is an error rather than a silently broken disk.
// size 0 keeps the base's virtual size; a smaller size is refused because the
// guest's partition table would point past the end of the disk.
// An existing file at path is overwritten.
func CreateOverlay(ctx context.Context, base, baseFormat, path string, size int64) error {
	absBase, err := filepath.Abs(base)
	if err != nil {
		return fmt.Errorf("create overlay: %w", err)
	}
	absPath, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("create overlay: %w", err)
	}
	if absBase == absPath {
		return fmt.Errorf("create overlay %s: the overlay cannot be its own base", path)
	}
	if size < 0 {
		return fmt.Errorf("create overlay %s: negative size %d", path, size)
	}
	if baseFormat == "" {
		if baseFormat, err = sniffFile(absBase); err != nil {
			return fmt.Errorf("create overlay %s: base: %w", path, err)
		}
	}
	in, err := ReadInfoAs(ctx, absBase, baseFormat)
	if err != nil {
		return fmt.Errorf("create overlay %s: base: %w", path, err)
	}
	args := []string{"create", "-q", "-f", "qcow2", "-b", absBase, "-F", baseFormat, path}
	if size != 0 {
		size = roundUp512(size)
		if size < in.VirtualSize {
			return fmt.Errorf("create overlay %s: size %s is smaller than base %s (%s); disks can only grow",
				path, FormatSize(size), base, FormatSize(in.VirtualSize))
		}
		args = append(args, strconv.FormatInt(size, 10))
	}
	if _, err := runQemuImg(ctx, args...); err != nil {
		return fmt.Errorf("create overlay %s on %s: %w", path, base, err)
	}
	return nil
}

// Resize grows the image's virtual size to size (rounded up to 512 bytes).
// Shrinking is refused: it silently destroys whatever the guest stored at
// the end of the disk. Growing only the disk does not grow the guest's
// partition or filesystem; cloud-init's growpart does that on next boot.
// The image must not be in use by a running VM.
func Resize(ctx context.Context, path string, size int64) error {
	in, err := ReadInfo(ctx, path)
	if err != nil {
		return fmt.Errorf("resize: %w", err)
	}
	size = roundUp512(size)
	switch {
	case size < in.VirtualSize:
		return fmt.Errorf("resize %s: cannot shrink from %s to %s; disks can only grow",
			path, FormatSize(in.VirtualSize), FormatSize(size))
	case size == in.VirtualSize:
		return nil
	}
	if _, err := runQemuImg(ctx, "resize", "-q", "-f", in.Format, path, strconv.FormatInt(size, 10)); err != nil {
		return fmt.Errorf("resize %s to %s: %w", path, FormatSize(size), err)
	}
	return nil
}

// ConvertOptions says what Convert writes.
type ConvertOptions struct {
	// Format is the output format: qcow2 (default), raw, vmdk, vpc or vhdx.
	Format string
	// Compression is zstd, zlib or none ("" = none); qcow2 only. zstd
	// decompresses faster but needs qemu >= 5.1 to read.
	Compression string
	// BackingFile keeps the output as an overlay on this base instead of
	// flattening it: only data that differs from the base is written.
	// qcow2 only. A relative path is relative to dst's folder (qemu's rule).
	BackingFile string
	// BackingFormat is the base's format; "" detects it.
	BackingFormat string
	// SourceFormat is src's format, passed to qemu-img with -f; "" means
	// kiln reads it from src's header (for kiln's own files).
	SourceFormat string
	// Options are extra -o options, e.g. "subformat=streamOptimized".
	Options []string
}

var convertFormats = []string{"qcow2", "raw", "vmdk", "vpc", "vhdx"}

// Convert copies src into a new image dst. It never leaves a half-written
// dst: qemu-img writes a fresh partial file beside dst (for vmdk, which
// records its own file name inside the image, a fresh folder holding a file
// named like dst), which is renamed into place only on success and removed
// on failure or cancellation. An existing dst is replaced. Convert is for
// kiln's own outputs (the store's tmp folder); exports to a user's path go
// through Export, which checks what it replaces.
func Convert(ctx context.Context, src, dst string, o ConvertOptions) error {
	format := o.Format
	if format == "" {
		format = "qcow2"
	}
	if !slices.Contains(convertFormats, format) {
		return fmt.Errorf("convert %s: unsupported format %q (use %s)", src, format, strings.Join(convertFormats, ", "))
	}
	var opts []string
	compress := false
	switch o.Compression {
	case "", "none":
	case "zstd", "zlib":
		if format != "qcow2" {
			return fmt.Errorf("convert %s: %s compression needs qcow2 output, not %s", src, o.Compression, format)
		}
		compress = true
		opts = append(opts, "compression_type="+o.Compression)
	default:
		return fmt.Errorf("convert %s: unknown compression %q (use zstd, zlib or none)", src, o.Compression)
	}
	absSrc, err := filepath.Abs(src)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	absDst, err := filepath.Abs(dst)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	if absSrc == absDst {
		return fmt.Errorf("convert %s: source and destination are the same file", src)
	}
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	srcFormat := o.SourceFormat
	if srcFormat == "" {
		if srcFormat, err = sniffFile(absSrc); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
	}

	args := []string{"convert", "-q", "-f", srcFormat, "-O", format}
	if compress {
		args = append(args, "-c")
	}
	if o.BackingFile != "" {
		if format != "qcow2" {
			return fmt.Errorf("convert %s: a backing file needs qcow2 output, not %s", src, format)
		}
		bf := o.BackingFormat
		if bf == "" {
			p := o.BackingFile
			if !filepath.IsAbs(p) {
				p = filepath.Join(filepath.Dir(absDst), p)
			}
			if bf, err = sniffFile(p); err != nil {
				return fmt.Errorf("convert %s: backing file: %w", src, err)
			}
		}
		args = append(args, "-B", o.BackingFile, "-F", bf)
	}
	for _, op := range o.Options {
		// Multi-file vmdk variants would leave their extents behind in the
		// partial folder; Convert promises exactly one output file.
		if format == "vmdk" && (strings.Contains(op, "subformat=monolithicFlat") || strings.Contains(op, "subformat=twoGbMaxExtent")) {
			return fmt.Errorf("convert %s: vmdk option %q makes several files; use monolithicSparse or streamOptimized", src, op)
		}
	}
	opts = append(opts, o.Options...)
	for _, op := range opts {
		args = append(args, "-o", op)
	}

	// The partial output sits next to dst so a relative backing path
	// resolves the same way, in a name made with exclusive create: a file
	// of the user's that happens to have the name is never replaced or
	// removed. vmdk records its own file name inside the image, so for
	// vmdk the partial is a fresh folder holding a file with dst's name.
	partial, cleanup, err := createPartial(absDst, format == "vmdk")
	if err != nil {
		return fmt.Errorf("convert %s: %w", src, err)
	}
	defer os.RemoveAll(cleanup) // nothing left to remove after a successful rename of a file
	args = append(args, absSrc, partial)
	if _, err := runQemuImg(ctx, args...); err != nil {
		return fmt.Errorf("convert %s to %s: %w", src, dst, asNoSpace(err, filepath.Dir(absDst)))
	}
	if err := os.Rename(partial, absDst); err != nil {
		return fmt.Errorf("convert %s: %w", src, err)
	}
	return nil
}

// CheckError reports what qemu-img check found wrong with an image.
// Leaks only waste space; corruptions can lose data.
type CheckError struct {
	Path        string
	Corruptions int
	Leaks       int
	CheckErrors int // the check itself could not read parts of the image
	Detail      string
}

func (e *CheckError) Error() string {
	var parts []string
	if e.Corruptions > 0 {
		parts = append(parts, plural(e.Corruptions, "corruption"))
	}
	if e.Leaks > 0 {
		parts = append(parts, plural(e.Leaks, "leaked cluster")+" (wasted space; `qemu-img check -r leaks` fixes it)")
	}
	if e.CheckErrors > 0 {
		parts = append(parts, plural(e.CheckErrors, "error")+" while checking")
	}
	msg := "disk check " + e.Path + ": "
	if len(parts) == 0 {
		msg += "image has problems"
	} else {
		msg += strings.Join(parts, ", ")
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

type checkJSON struct {
	Corruptions int `json:"corruptions"`
	Leaks       int `json:"leaks"`
	CheckErrors int `json:"check-errors"`
}

// Check runs qemu-img check (read-only; it never repairs) on one of kiln's
// own files, whose format kiln reads from its header; CheckAs is for an
// image whose format is known. It returns nil for a consistent image and
// for formats qemu-img cannot check (raw has no metadata to get wrong), a
// *CheckError for leaks or corruption, and another error when the check
// could not run (e.g. the image is in use by a VM).
func Check(ctx context.Context, path string) error {
	format, err := sniffFile(path)
	if err != nil {
		return fmt.Errorf("disk check: %w", err)
	}
	return CheckAs(ctx, path, format)
}

// CheckAs is Check for an image of the given format.
func CheckAs(ctx context.Context, path, format string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("disk check: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return fmt.Errorf("disk check: %w", err)
	}
	out, err := runQemuImg(ctx, "check", "--output=json", "-f", format, abs)
	var ee *ExecError
	switch {
	case err == nil:
		return nil
	case !errors.As(err, &ee):
		return fmt.Errorf("disk check %s: %w", path, err)
	case ee.ExitCode == 63: // format does not support checks
		return nil
	case ee.ExitCode == 2 || ee.ExitCode == 3: // corruptions / leaks
		var c checkJSON
		if jerr := json.Unmarshal(out, &c); jerr != nil {
			return fmt.Errorf("disk check %s: %w", path, err)
		}
		return &CheckError{Path: path, Corruptions: c.Corruptions, Leaks: c.Leaks, CheckErrors: c.CheckErrors, Detail: ee.Stderr}
	default:
		return fmt.Errorf("disk check %s: %w", path, err)
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// Rebase points a qcow2 overlay at another name for the same backing data
// without reading or rewriting any data (qemu-img rebase -u). It is how an
// image keeps working after its backing file moved or is named relatively.
func Rebase(ctx context.Context, path, backing, backingFormat string) error {
	if _, err := runQemuImg(ctx, "rebase", "-u", "-f", "qcow2", "-b", backing, "-F", backingFormat, path); err != nil {
		return fmt.Errorf("rebase %s onto %s: %w", path, backing, err)
	}
	return nil
}

// createPartial makes the name output is written to before it is renamed
// to dst: a fresh file beside dst, or with inDir a fresh folder beside dst
// holding a file named like dst. Both are made with exclusive create, so
// they are kiln's; cleanup is what to remove on failure.
func createPartial(dst string, inDir bool) (partial, cleanup string, err error) {
	dir, base := filepath.Split(dst)
	if inDir {
		d, err := os.MkdirTemp(dir, "."+base+".kiln-*.partial")
		if err != nil {
			return "", "", err
		}
		return filepath.Join(d, base), d, nil
	}
	f, err := os.CreateTemp(dir, "."+base+".kiln-*.partial")
	if err != nil {
		return "", "", err
	}
	f.Close()
	return f.Name(), f.Name(), nil
}
