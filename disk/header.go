package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// This file is kiln's own reading of image headers: the format and every
// place an image can name another file (qcow2 backing files and external
// data files, vmdk extents and parent hints), read from the bytes before
// any qemu-img or QEMU opens the image. qemu would otherwise open those
// files itself, so a stranger's image could make kiln read /etc/shadow
// into a stored image.

// Header is what the first bytes of an image say.
type Header struct {
	// Format is qemu's name for it: qcow2, vmdk, vpc (VHD), vhdx or raw
	// (no header kiln knows; whether raw bytes are a disk is checked apart).
	Format string
	// Backing is the backing file name a qcow2 image stores, or the
	// parentFileNameHint of a vmdk; BackingFormat is qcow2's backing
	// format extension.
	Backing       string
	BackingFormat string
}

// RefusedError is an image kiln will not open, with the field of the
// image that is the problem and what it points at.
type RefusedError struct {
	Path  string // the image file
	Field string // e.g. "qcow2 external data file"
	Value string // what the field says (a path, a json: filename), may be ""
	Why   string // what to do about it
}

func (e *RefusedError) Error() string {
	msg := "image " + quoteOutside(e.Path) + ": " + e.Field
	if e.Value != "" {
		msg += " points at " + quoteOutside(shortJSON(e.Value))
	}
	return msg + ": " + e.Why
}

// refused builds a RefusedError without its path, which the caller adds.
func refused(field, value, why string) *RefusedError {
	return &RefusedError{Field: field, Value: value, Why: why}
}

const (
	selfContained = "kiln takes only self-contained images; flatten one you trust (qemu-img convert)"
	// maxScan bounds what the header parsers read, however large the
	// fields of a hostile header claim to be.
	maxScan = 1 << 20
)

// readHeader reads the format and the references of the image in r (size
// bytes). It refuses what kiln will not open: external data files,
// encryption, vmdk descriptors with extents in other files, ESX sparse
// extents, VHD differencing disks and formats kiln does not take. A
// backing file is returned, not refused: whether it is allowed is the
// caller's rule (see Admit).
func readHeader(r io.ReaderAt, size int64) (Header, error) {
	head := make([]byte, min(size, 4096))
	if _, err := r.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return Header{}, err
	}
	switch {
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return readQcow2(r, size, head)
	case bytes.HasPrefix(head, []byte("KDMV")):
		return readVMDKSparse(r, size, head)
	case bytes.HasPrefix(head, []byte("COWD")):
		return Header{}, refused("vmdk ESX sparse (COWD) extent", "", "kiln takes monolithicSparse and streamOptimized vmdk files; convert it with qemu-img convert -O vmdk")
	case isVMDKDescriptor(head):
		return Header{}, checkVMDKDescriptor(readText(r, 0, size))
	case bytes.HasPrefix(head, []byte("conectix")):
		return readVHDFooter(head)
	case bytes.HasPrefix(head, []byte("vhdxfile")):
		return Header{Format: "vhdx"}, nil
	}
	if f := otherFormat(head); f != "" {
		return Header{}, refused("format", "", f+" images are not taken; use raw, qcow2, vmdk, vhd or vhdx (qemu-img convert -O qcow2)")
	}
	if size >= 1024 && size%512 == 0 {
		// A fixed VHD has its only header at the end.
		var foot [512]byte
		if _, err := r.ReadAt(foot[:], size-512); err == nil && bytes.HasPrefix(foot[:], []byte("conectix")) {
			return readVHDFooter(foot[:])
		}
	}
	return Header{Format: "raw"}, nil
}

// sniff returns the format readHeader would, ignoring what it refuses:
// for kiln's own files, whose format kiln knows but a caller did not say.
func sniff(r io.ReaderAt, size int64) string {
	h, err := readHeader(r, size)
	var re *RefusedError
	switch {
	case err == nil:
		return h.Format
	case errors.As(err, &re) && strings.HasPrefix(re.Field, "qcow2"):
		return "qcow2"
	case errors.As(err, &re) && strings.HasPrefix(re.Field, "vmdk"):
		return "vmdk"
	case errors.As(err, &re) && strings.HasPrefix(re.Field, "vhd"):
		return "vpc"
	}
	return "raw"
}

// otherFormat names disk formats qemu knows but kiln does not take, from
// their magic numbers, so such a file is refused by name instead of being
// called "not a disk image".
func otherFormat(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte("QED\x00")):
		return "QED"
	case bytes.HasPrefix(head, []byte("LUKS\xba\xbe")):
		return "LUKS-encrypted"
	case len(head) >= 0x44 && binary.LittleEndian.Uint32(head[0x40:]) == 0xbeda107f:
		return "VirtualBox VDI"
	case bytes.HasPrefix(head, []byte("WithoutFreeSpace")) || bytes.HasPrefix(head, []byte("WithouFreSpacExt")):
		return "Parallels"
	}
	return ""
}

// qcow2 header fields and feature bits (docs/interop/qcow2.txt in QEMU).
const (
	qcow2IncompatDataFile = 1 << 2
	qcow2ExtEnd           = 0x00000000
	qcow2ExtBackingFormat = 0xe2792aca
	qcow2ExtDataFile      = 0x44415441
	qcow2ExtCrypto        = 0x0537be77
)

func readQcow2(r io.ReaderAt, size int64, head []byte) (Header, error) {
	be := binary.BigEndian
	if len(head) < 72 {
		return Header{}, refused("qcow2 header", "", "the file is shorter than a qcow2 header; it is truncated")
	}
	version := be.Uint32(head[4:])
	if version != 2 && version != 3 {
		return Header{}, refused("qcow2 version", fmt.Sprint(version), "kiln takes qcow2 versions 2 and 3")
	}
	h := Header{Format: "qcow2"}
	clusterBits := be.Uint32(head[20:])
	if clusterBits < 9 || clusterBits > 21 {
		return Header{}, refused("qcow2 cluster size", fmt.Sprintf("2^%d bytes", clusterBits), "outside what qcow2 allows; the image is damaged")
	}
	if be.Uint32(head[32:]) != 0 {
		return Header{}, refused("qcow2 encryption", "", "kiln cannot boot encrypted images; decrypt it with qemu-img convert first")
	}
	extStart, extEnd := uint64(72), uint64(1)<<clusterBits
	if version == 3 {
		if len(head) < 104 {
			return Header{}, refused("qcow2 header", "", "the file is shorter than a qcow2 version 3 header; it is truncated")
		}
		incompat := be.Uint64(head[72:])
		if incompat&qcow2IncompatDataFile != 0 {
			return Header{}, refused("qcow2 external data file", qcow2DataFileName(r, size, head), selfContained)
		}
		extStart = uint64(be.Uint32(head[100:]))
		if extStart < 104 {
			return Header{}, refused("qcow2 header length", fmt.Sprint(extStart), "below the version 3 minimum of 104; the image is damaged")
		}
	}
	if off, n := be.Uint64(head[8:]), be.Uint32(head[16:]); off != 0 && n != 0 {
		if n > 1023 || off > uint64(size) || uint64(size)-off < uint64(n) {
			return Header{}, refused("qcow2 backing file name", "", "its offset or length lies outside the file; the image is damaged")
		}
		name := make([]byte, n)
		if _, err := r.ReadAt(name, int64(off)); err != nil {
			return Header{}, refused("qcow2 backing file name", "", "it cannot be read: "+err.Error())
		}
		h.Backing = string(name)
		if h.Backing == "" || strings.IndexByte(h.Backing, 0) >= 0 {
			return Header{}, refused("qcow2 backing file name", h.Backing, "not a file name; the image is damaged")
		}
	}
	err := walkQcow2Extensions(r, size, extStart, extEnd, func(typ uint32, data []byte) error {
		switch typ {
		case qcow2ExtDataFile:
			return refused("qcow2 external data file", string(data), selfContained)
		case qcow2ExtCrypto:
			return refused("qcow2 encryption", "", "kiln cannot boot encrypted images; decrypt it with qemu-img convert first")
		case qcow2ExtBackingFormat:
			h.BackingFormat = string(bytes.TrimRight(data, "\x00"))
		}
		return nil
	})
	return h, err
}

// walkQcow2Extensions calls fn for each header extension between start and
// end (the end of the first cluster, where QEMU stops too).
func walkQcow2Extensions(r io.ReaderAt, size int64, start, end uint64, fn func(typ uint32, data []byte) error) error {
	end = min(end, uint64(size), maxScan)
	if start >= end {
		return nil
	}
	buf := make([]byte, end-start)
	if _, err := r.ReadAt(buf, int64(start)); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	be := binary.BigEndian
	for len(buf) >= 8 {
		typ, n := be.Uint32(buf), uint64(be.Uint32(buf[4:]))
		if typ == qcow2ExtEnd {
			return nil
		}
		if n > uint64(len(buf)-8) {
			return refused("qcow2 header extension", fmt.Sprintf("0x%08x", typ), "it runs past the first cluster; the image is damaged")
		}
		if err := fn(typ, buf[8:8+n]); err != nil {
			return err
		}
		buf = buf[min(uint64(len(buf)), 8+(n+7)&^7):]
	}
	return nil
}

// qcow2DataFileName is the external data file's name from its header
// extension, if the image records one (it may leave it to the caller).
func qcow2DataFileName(r io.ReaderAt, size int64, head []byte) string {
	name := ""
	start := uint64(binary.BigEndian.Uint32(head[100:]))
	bits := binary.BigEndian.Uint32(head[20:])
	_ = walkQcow2Extensions(r, size, start, uint64(1)<<bits, func(typ uint32, data []byte) error {
		if typ == qcow2ExtDataFile {
			name = string(data)
		}
		return nil
	})
	return name
}

// vmdk sparse extent header (VMware's "Virtual Disk Format 1.1").
const (
	vmdkGDAtEnd = 0xffffffffffffffff
	// qemu looks for parentFileNameHint in this window of a sparse vmdk,
	// whatever the header says about its descriptor.
	vmdkDescWindowStart, vmdkDescWindowSize = 512, 20 * 512
)

func readVMDKSparse(r io.ReaderAt, size int64, head []byte) (Header, error) {
	le := binary.LittleEndian
	if len(head) < 77 {
		return Header{}, refused("vmdk header", "", "the file is shorter than a vmdk header; it is truncated")
	}
	hdr := head
	if le.Uint64(head[56:]) == vmdkGDAtEnd {
		// streamOptimized: the real header is a footer 1024 bytes before
		// the end, and QEMU reads that one.
		if size < 1536 {
			return Header{}, refused("vmdk footer", "", "the file ends before its footer; it is truncated")
		}
		foot := make([]byte, 512)
		if _, err := r.ReadAt(foot, size-1024); err != nil {
			return Header{}, err
		}
		if !bytes.HasPrefix(foot, []byte("KDMV")) {
			return Header{}, refused("vmdk footer", "", "no footer where a streamOptimized vmdk keeps it; the file is truncated or damaged")
		}
		hdr = foot
	}
	if le.Uint64(hdr[12:]) == 0 {
		// QEMU then opens the embedded descriptor's extents instead.
		return Header{}, refused("vmdk capacity", "0", "a sparse vmdk of capacity 0 makes qemu read the extents its descriptor names; the file is damaged or crafted")
	}
	h := Header{Format: "vmdk"}
	// The descriptor the header names, and the window QEMU reads anyway.
	descs := []string{readText(r, vmdkDescWindowStart, min(size, vmdkDescWindowStart+vmdkDescWindowSize))}
	if off, n := le.Uint64(hdr[28:]), le.Uint64(hdr[36:]); off != 0 && n != 0 && off < uint64(size)/512 {
		start := int64(off) * 512
		descs = append(descs, readText(r, start, start+int64(min(n, maxScan/512))*512))
	}
	for _, d := range descs {
		if hint, ok := descriptorValue(d, "parentFileNameHint"); ok {
			return Header{}, refused("vmdk parentFileNameHint", hint, selfContained)
		}
		for _, e := range parseExtents(d) {
			if e.kind != "SPARSE" {
				return Header{}, refused("vmdk "+strings.ToLower(e.kind)+" extent", e.file, selfContained)
			}
		}
	}
	return h, nil
}

// readText returns the bytes [start, end) of r up to the first NUL, as a
// descriptor is stored.
func readText(r io.ReaderAt, start, end int64) string {
	end = min(end, start+maxScan)
	if end <= start {
		return ""
	}
	buf := make([]byte, end-start)
	n, _ := r.ReadAt(buf, start)
	buf = buf[:n]
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		buf = buf[:i]
	}
	return string(buf)
}

// isVMDKDescriptor says whether head is a vmdk text descriptor as QEMU's
// probe sees one: blank and comment lines, then "version=".
func isVMDKDescriptor(head []byte) bool {
	for _, line := range strings.Split(string(head), "\n") {
		t := strings.TrimSpace(line)
		switch {
		case t == "" || strings.HasPrefix(t, "#"):
			continue
		case strings.HasPrefix(t, "version="):
			return true
		}
		return false
	}
	return false
}

// checkVMDKDescriptor refuses a text descriptor: its data is by
// definition in the other files its extents name.
func checkVMDKDescriptor(desc string) error {
	if hint, ok := descriptorValue(desc, "parentFileNameHint"); ok {
		return refused("vmdk parentFileNameHint", hint, selfContained)
	}
	for _, e := range parseExtents(desc) {
		return refused("vmdk "+strings.ToLower(e.kind)+" extent", e.file, selfContained)
	}
	return refused("vmdk descriptor", "", "a descriptor file keeps the disk's data in other files; kiln takes single-file vmdk (monolithicSparse or streamOptimized)")
}

type vmdkExtent struct {
	kind string // FLAT, SPARSE, ZERO, VMFS, ...
	file string
}

// parseExtents reads the extent lines of a descriptor:
// ACCESS SECTORS TYPE ["FILE" [OFFSET]].
func parseExtents(desc string) []vmdkExtent {
	var out []vmdkExtent
	for _, line := range strings.Split(desc, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		switch f[0] {
		case "RW", "RDONLY", "NOACCESS":
		default:
			continue
		}
		e := vmdkExtent{kind: strings.ToUpper(f[2])}
		if i := strings.IndexByte(line, '"'); i >= 0 {
			rest := line[i+1:]
			if j := strings.IndexByte(rest, '"'); j >= 0 {
				rest = rest[:j]
			}
			e.file = rest
		}
		out = append(out, e)
	}
	return out
}

// descriptorValue finds key="value" (or key=value) in a descriptor, as
// QEMU's own search does: anywhere in the text.
func descriptorValue(desc, key string) (string, bool) {
	i := strings.Index(desc, key)
	if i < 0 {
		return "", false
	}
	rest := strings.TrimLeft(desc[i+len(key):], " \t=")
	if strings.HasPrefix(rest, `"`) {
		rest = rest[1:]
		if j := strings.IndexByte(rest, '"'); j >= 0 {
			return rest[:j], true
		}
	}
	if j := strings.IndexAny(rest, "\r\n"); j >= 0 {
		rest = rest[:j]
	}
	return rest, true
}

// VHD footer: disk type 2 fixed, 3 dynamic, 4 differencing.
func readVHDFooter(foot []byte) (Header, error) {
	if len(foot) < 64 {
		return Header{}, refused("vhd footer", "", "the file is shorter than a VHD footer; it is truncated")
	}
	switch t := binary.BigEndian.Uint32(foot[60:]); t {
	case 2, 3:
		return Header{Format: "vpc"}, nil
	case 4:
		return Header{}, refused("vhd differencing disk parent", "", selfContained)
	default:
		return Header{}, refused("vhd disk type", fmt.Sprint(t), "not a fixed or dynamic VHD; the image is damaged")
	}
}

var jsonFilename = regexp.MustCompile(`"filename"\s*:\s*"((?:[^"\\]|\\.)*)"`)

// shortJSON shortens a long json: filename to the files it names, which
// are what a reader needs to see.
func shortJSON(v string) string {
	if !strings.HasPrefix(v, "json:") || len(v) <= 80 {
		return v
	}
	var names []string
	for _, m := range jsonFilename.FindAllStringSubmatch(v, 8) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		return v[:80] + "…"
	}
	return "json:{… " + strings.Join(names, ", ") + " …}"
}
