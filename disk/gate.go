package disk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/kiln-dev/kiln/internal/fileutil"
	"github.com/kiln-dev/kiln/internal/termsafe"
)

// Image is a disk image that passed Admit: a regular file whose format
// kiln determined itself and whose data is all inside it (or, for a stored
// overlay, in kiln's own store). Every qemu-img and QEMU call on it from
// then on is given Format, so nothing guesses the format of its bytes.
type Image struct {
	Path        string // absolute
	Format      string // qemu's name: raw, qcow2, vmdk, vpc or vhdx
	VirtualSize int64
	Info        Info
}

// AdmitOptions loosens Admit for images kiln itself stored.
type AdmitOptions struct {
	// BlobDir is the store's blob folder. An image inside it may have a
	// backing file that is another blob of that folder (a bare 64-hex
	// name), as kiln's own overlays do; any other backing file is refused.
	BlobDir string
	// Staged says the image is about to become a blob of BlobDir (a
	// pulled blob in the store's staging folder): its backing file is
	// judged as if it were already there.
	Staged bool
}

// AdmitFormats are the formats Admit takes, by qemu's names.
var AdmitFormats = []string{"raw", "qcow2", "vmdk", "vpc", "vhdx"}

// Admit is the one gate for disk images that come from outside kiln (an
// import, a template's base file or downloaded base, `kiln run FILE`).
// It determines the format once, from the bytes, before any qemu-img
// opens the file; refuses an image whose data or backing lives outside
// it (a qcow2 backing file or external data file, json: and protocol
// filenames, vmdk extents and parent hints, VHD differencing disks),
// naming the field and what it points at; refuses formats other than
// AdmitFormats and raw files that do not look like a disk; and then asks
// `qemu-img info -f FORMAT` to confirm, so qemu's view agrees with kiln's.
func Admit(ctx context.Context, path string, o AdmitOptions) (Image, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Image{}, err
	}
	st, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return Image{}, fmt.Errorf("image %s: no such file", quoteOutside(path))
	} else if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", quoteOutside(path), err)
	}
	if !st.Mode().IsRegular() {
		return Image{}, fmt.Errorf("image %s: not a regular file (%s); give kiln an image file", quoteOutside(path), describeMode(st.Mode()))
	}
	f, err := fileutil.OpenRegular(abs)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", quoteOutside(path), err)
	}
	defer f.Close()
	h, err := readHeader(f, st.Size())
	if err != nil {
		var re *RefusedError
		if errors.As(err, &re) {
			re.Path = path
			return Image{}, re
		}
		return Image{}, fmt.Errorf("image %s: %w", quoteOutside(path), err)
	}
	if h.Format == "raw" && !o.Staged { // a stored blob was judged when it first entered a store
		if err := checkRawDisk(abs, path); err != nil {
			return Image{}, err
		}
	}
	if h.Backing != "" {
		if err := checkBacking(abs, h, o); err != nil {
			err.Path = path
			return Image{}, err
		}
	}
	in, err := ReadInfoAs(ctx, abs, h.Format)
	if err != nil {
		return Image{}, err
	}
	if err := confirm(abs, h, in); err != nil {
		err.Path = path
		return Image{}, err
	}
	return Image{Path: abs, Format: h.Format, VirtualSize: in.VirtualSize, Info: in}, nil
}

var blobName = regexp.MustCompile(`^[0-9a-f]{64}$`)

// checkBacking allows a backing file only for an overlay in the store that
// names another blob beside it.
func checkBacking(abs string, h Header, o AdmitOptions) *RefusedError {
	field := "qcow2 backing file"
	if h.Format == "vmdk" {
		field = "vmdk parentFileNameHint"
	}
	if strings.HasPrefix(h.Backing, "json:") {
		return refused(field, h.Backing, "qemu would open what it names")
	}
	if hasProtocol(h.Backing) {
		return refused(field, h.Backing, "qemu would open it as a device or network share")
	}
	if o.BlobDir != "" && h.Format == "qcow2" && blobName.MatchString(h.Backing) && (o.Staged || sameDir(filepath.Dir(abs), o.BlobDir)) {
		if !slices.Contains([]string{"qcow2", "raw"}, h.BackingFormat) {
			return refused("qcow2 backing format", h.BackingFormat, "a stored overlay's base is qcow2 or raw; the store is damaged")
		}
		if st, err := os.Lstat(filepath.Join(o.BlobDir, h.Backing)); err == nil && st.Mode().IsRegular() {
			return nil
		}
		return refused(field, h.Backing, "that blob is not in the store; the store is damaged (kiln images verify)")
	}
	return refused(field, h.Backing, "an overlay on another file; "+selfContained)
}

// hasProtocol reports whether qemu reads name as "protocol:…": a colon
// before any slash.
func hasProtocol(name string) bool {
	i := strings.IndexByte(name, ':')
	return i > 0 && !strings.Contains(name[:i], "/")
}

func sameDir(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// confirm checks qemu-img's reading of the image against kiln's: an image
// crafted to look one way to kiln and another way to qemu is refused.
func confirm(abs string, h Header, in Info) *RefusedError {
	if in.Format != h.Format {
		return refused("format", "", fmt.Sprintf("kiln reads a %s image but qemu-img a %s one; the file is crafted or damaged", h.Format, in.Format))
	}
	if in.DataFile != "" {
		return refused("qcow2 external data file", in.DataFile, selfContained)
	}
	if in.BackingFilename != h.Backing {
		return refused("backing file", in.BackingFilename, "qemu-img sees a backing file kiln's own reading of the header does not; "+selfContained)
	}
	for _, e := range in.Extents {
		name := e.Filename
		if !filepath.IsAbs(name) {
			name = filepath.Join(filepath.Dir(abs), name)
		}
		if filepath.Clean(name) != abs {
			return refused("vmdk extent", e.Filename, selfContained)
		}
	}
	if h.Format == "vmdk" && in.CreateType != "monolithicSparse" && in.CreateType != "streamOptimized" {
		return refused("vmdk createType", in.CreateType, "kiln takes single-file vmdk (monolithicSparse or streamOptimized)")
	}
	return nil
}

// quoteOutside renders a name that came from outside kiln for a message:
// control characters escaped, so it cannot rewrite the terminal.
func quoteOutside(s string) string { return termsafe.Line(s) }

func describeMode(m fs.FileMode) string {
	switch {
	case m&fs.ModeDevice != 0 && m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m.IsDir():
		return "a folder"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return m.Type().String()
}

// ReadHeader is kiln's own reading of the image file at path, the first
// half of Admit without qemu-img: the format, and a refusal for anything
// that would make qemu read another file except a backing file, which is
// returned for the caller to check (the store allows only its own blobs).
// It is for images that reach the store by another way than Admit, such
// as a blob pulled from a registry.
func ReadHeader(path string) (Header, error) {
	f, err := fileutil.OpenRegular(path)
	if err != nil {
		return Header{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Header{}, err
	}
	h, err := readHeader(f, st.Size())
	var re *RefusedError
	if errors.As(err, &re) {
		re.Path = path
	}
	return h, err
}
