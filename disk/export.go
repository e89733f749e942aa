package disk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ExportOptions says what Export writes.
type ExportOptions struct {
	// Format is the exported image format: "qcow2", "raw", "vmdk", "vhd" or
	// "vhdx". There is no default: the cloud the image goes to decides.
	Format string
	// Compression applies to qcow2 only: "zlib" ("" means zlib), "zstd" or
	// "none". zlib is the default because older importers cannot read zstd.
	// Giving any value for another format is an error.
	Compression string
	// Progress, if set, is called with qemu-img convert's progress in percent
	// (0 to 100, repeated values dropped). It is called from another
	// goroutine, never concurrently and never after Export returns. Reaching
	// 100 means the conversion is done; hashing the result follows.
	Progress func(percent float64)
	// SourceName names src in messages ("" = its path), e.g. the image's ref.
	SourceName string
	// SourceFormat is src's format (a stored image's, from its manifest),
	// passed to qemu-img with -f; "" means kiln reads it from src's header.
	SourceFormat string
	// Protected are folders nothing may be exported into (kiln's own data,
	// cache and runtime folders): an export there would replace a blob, a
	// manifest or a running VM's disk.
	Protected []string
	// BeforeCommit, when set, runs after the output is complete and before
	// it is renamed into place; an error stops the export with nothing
	// written. Store exports use it to check that the blob did not change
	// while it was read.
	BeforeCommit func() error
}

// exportFormat is how Export writes one format.
type exportFormat struct {
	qemu string   // qemu-img's name for the format
	opts []string // -o options
}

var exportFormats = map[string]exportFormat{
	"qcow2": {qemu: "qcow2"},
	"raw":   {qemu: "raw"}, // qemu-img convert writes raw sparse (zero blocks are holes)
	// VMware and AWS VM import want streamOptimized.
	"vmdk": {qemu: "vmdk", opts: []string{"subformat=streamOptimized"}},
	// Azure wants a fixed VHD whose size is a whole MiB. force_size keeps
	// that size exactly instead of rounding it to a CHS geometry.
	"vhd":  {qemu: "vpc", opts: []string{"subformat=fixed,force_size=on"}},
	"vhdx": {qemu: "vhdx", opts: []string{"subformat=dynamic"}},
}

// ExportSize is the virtual size an image exported as format gets from a
// source of virtual size virtual: VHD is rounded up to a whole MiB (Azure
// requires it); other formats keep the size.
func ExportSize(format string, virtual int64) int64 {
	if format == "vhd" && virtual > 0 {
		return (virtual + MiB - 1) &^ (MiB - 1)
	}
	return virtual
}

// exportArgs validates o and returns the format and the qemu-img convert
// flags that select it.
func exportArgs(o ExportOptions) (exportFormat, []string, error) {
	f, ok := exportFormats[o.Format]
	if !ok {
		return exportFormat{}, nil, fmt.Errorf("unknown export format %q: use qcow2, raw, vmdk, vhd or vhdx", o.Format)
	}
	var args []string
	if o.Format == "qcow2" {
		switch o.Compression {
		case "", "zlib":
			args = append(args, "-c", "-o", "compression_type=zlib")
		case "zstd":
			args = append(args, "-c", "-o", "compression_type=zstd")
		case "none":
		default:
			return exportFormat{}, nil, fmt.Errorf("unknown compression %q: use zlib, zstd or none", o.Compression)
		}
	} else if o.Compression != "" {
		return exportFormat{}, nil, fmt.Errorf("compression %q is for qcow2 exports only, not %s: leave it empty", o.Compression, o.Format)
	}
	for _, op := range f.opts {
		args = append(args, "-o", op)
	}
	return f, args, nil
}

// Export writes src (any image qemu-img reads, typically a qcow2 overlay on
// a backing chain) as a standalone image at dst, in a form the clouds that
// take the format accept:
//
//   - qcow2: compressed (zlib unless o.Compression says otherwise)
//   - raw: sparse
//   - vmdk: streamOptimized (VMware, AWS VM import)
//   - vhd: fixed, virtual size rounded up to a whole MiB (Azure); src is
//     not changed, the rounding goes through a temporary overlay
//   - vhdx: dynamic (Hyper-V)
//
// The result is always flattened: it never refers to a backing file.
// Export writes only regular files it creates: everything is written in a
// fresh folder made beside dst with exclusive create, and renamed into
// place only when complete; that folder is removed on failure or
// cancellation, so a full disk or a cancelled export never leaves a half
// image behind, and no file of the user's is ever removed. dst (and
// dst+".sha256") may be absent or a regular file, which is replaced; a
// device node, folder, symbolic link or anything else is refused, as is a
// dst inside one of o.Protected. Beside dst, Export writes dst+".sha256"
// in sha256sum's format ("HEX  basename\n") and returns the hex digest.
// dst's folder must exist.
//
// qemu-img cannot recognise a fixed VHD on its own (its only header is a
// footer), so reading the result back needs the format stated.
func Export(ctx context.Context, src, dst string, o ExportOptions) (string, error) {
	f, fmtArgs, err := exportArgs(o)
	if err != nil {
		return "", err
	}
	absSrc, err := filepath.Abs(src)
	if err != nil {
		return "", fmt.Errorf("export: %w", err)
	}
	absDst, err := filepath.Abs(dst)
	if err != nil {
		return "", fmt.Errorf("export: %w", err)
	}
	srcName := o.SourceName
	if srcName == "" {
		srcName = src
	}
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("export %s to %s: %w", srcName, quoteOutside(dst), err)
	}
	if absSrc == absDst {
		return fail(errors.New("source and destination are the same file"))
	}
	dir := filepath.Dir(absDst)
	if st, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return fail(fmt.Errorf("destination folder %s does not exist", quoteOutside(dir)))
	} else if err != nil {
		return fail(err)
	} else if !st.IsDir() {
		return fail(fmt.Errorf("%s is not a folder", quoteOutside(dir)))
	}
	if err := checkDestination(absDst, o.Protected); err != nil {
		return fail(err)
	}
	if _, err := os.Stat(absSrc); err != nil {
		return fail(err)
	}
	srcFormat := o.SourceFormat
	if srcFormat == "" {
		if srcFormat, err = sniffFile(absSrc); err != nil {
			return fail(err)
		}
	}
	chain, err := runQemuImg(ctx, "info", "--output=json", "--force-share", "--backing-chain", "-f", srcFormat, absSrc)
	if err != nil {
		return fail(err)
	}
	in, err := ParseInfo(chain)
	if err != nil {
		return fail(err)
	}
	if err := checkNotInChain(chain, absDst); err != nil {
		return fail(err)
	}

	// Everything in progress lives in one folder next to dst: on the same
	// file system, so the final renames are atomic, and removed as a whole.
	// It is made with exclusive create, so it is kiln's to remove.
	out, work, err := createPartial(absDst, true) // vmdk records its file name inside
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(work)
	name := filepath.Base(absDst)
	sumFile := out + ".sha256"

	input, inputFormat := absSrc, srcFormat
	if size := ExportSize(o.Format, in.VirtualSize); size != in.VirtualSize {
		// Grow a throwaway overlay instead of src; the new tail reads as zeros.
		ov := out + ".resize.qcow2"
		if err := CreateOverlay(ctx, absSrc, srcFormat, ov, size); err != nil {
			return fail(err)
		}
		input, inputFormat = ov, "qcow2"
	}

	args := []string{"convert"}
	var stdout io.Writer = io.Discard
	if o.Progress != nil {
		args = append(args, "-p")
		stdout = &progressWriter{fn: o.Progress, last: -1}
	} else {
		args = append(args, "-q")
	}
	args = append(args, "-f", inputFormat, "-O", f.qemu)
	args = append(args, fmtArgs...)
	args = append(args, input, out)
	if err := runQemuImgTo(ctx, stdout, args...); err != nil {
		return fail(asNoSpace(err, dir))
	}

	sum, err := hashAndSync(ctx, out)
	if err != nil {
		return fail(err)
	}
	if err := writeSynced(sumFile, []byte(sha256Line(sum, name))); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if o.BeforeCommit != nil {
		if err := o.BeforeCommit(); err != nil {
			return fail(err)
		}
	}
	// Checked again: the destination may have changed while converting.
	if err := checkDestination(absDst, o.Protected); err != nil {
		return fail(err)
	}
	// Drop an old checksum first: a crash between the renames then leaves
	// dst without a checksum rather than with a wrong one.
	if err := os.Remove(absDst + ".sha256"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	if err := os.Rename(out, absDst); err != nil {
		return fail(err)
	}
	if err := os.Rename(sumFile, absDst+".sha256"); err != nil {
		return fail(fmt.Errorf("%s is written but its checksum file is not: %w", quoteOutside(dst), err))
	}
	if d, err := os.Open(dir); err == nil { // make the renames durable; best effort
		_ = d.Sync()
		d.Close()
	}
	return sum, nil
}

// checkDestination refuses to export over anything but a regular file (or
// nothing), for dst and its checksum file, and into a protected folder.
func checkDestination(dst string, protected []string) error {
	for _, p := range []string{dst, dst + ".sha256"} {
		st, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s is %s, not a regular file: kiln replaces only regular files; write to a new file name", quoteOutside(p), describeMode(st.Mode()))
		}
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(dst))
	if err != nil {
		return err
	}
	for _, p := range protected {
		if p == "" {
			continue
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			real = filepath.Clean(p)
		}
		if dir == real || strings.HasPrefix(dir, real+string(filepath.Separator)) {
			return fmt.Errorf("that is inside kiln's own folder %s; write the export elsewhere", real)
		}
	}
	return nil
}

// checkNotInChain refuses a dst that is src or one of its backing files:
// replacing it would destroy the data being exported (and every other
// overlay on that base).
func checkNotInChain(chainJSON []byte, dst string) error {
	dstSt, err := os.Stat(dst)
	if err != nil {
		return nil // nothing there to overwrite
	}
	var chain []infoJSON
	if err := json.Unmarshal(chainJSON, &chain); err != nil {
		return err
	}
	for _, c := range chain {
		if st, err := os.Stat(c.Filename); err == nil && os.SameFile(st, dstSt) {
			return fmt.Errorf("destination %s is the source image or one of its backing files", dst)
		}
	}
	return nil
}

// hashAndSync returns the sha256 of the file at path and flushes it to disk
// (a full disk can surface only at this point with delayed allocation).
func hashAndSync(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("sync %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// sha256Line is one line of sha256sum output, including its escaping of
// names with backslashes or line breaks.
func sha256Line(sum, name string) string {
	if strings.ContainsAny(name, "\\\n\r") {
		name = strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`).Replace(name)
		return `\` + sum + "  " + name + "\n"
	}
	return sum + "  " + name + "\n"
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// progressWriter parses qemu-img convert -p output, a stream of
// "    (12.34/100%)" updates separated by \r, and reports each new value.
type progressWriter struct {
	fn   func(float64)
	tok  []byte
	last float64
}

// maxProgressToken bounds the buffer if qemu-img ever prints something else.
const maxProgressToken = 64

func (w *progressWriter) Write(p []byte) (int, error) {
	for _, c := range p {
		if c == '\r' || c == '\n' {
			w.flush()
			continue
		}
		if len(w.tok) <= maxProgressToken {
			w.tok = append(w.tok, c)
		}
	}
	return len(p), nil
}

func (w *progressWriter) flush() {
	tok := w.tok
	w.tok = w.tok[:0]
	if len(tok) > maxProgressToken {
		return
	}
	if v, ok := parseProgress(string(tok)); ok && v != w.last {
		w.last = v
		w.fn(v)
	}
}

// parseProgress reads one qemu-img progress update, "(12.34/100%)".
func parseProgress(s string) (float64, bool) {
	s, ok := strings.CutPrefix(strings.TrimSpace(s), "(")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "/100%)")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || v < 0 || v > 100 {
		return 0, false
	}
	return v, true
}
