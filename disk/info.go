package disk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kiln-dev/kiln/internal/fileutil"
)

// Info is what qemu-img knows about an image.
type Info struct {
	Filename    string
	Format      string // qcow2, raw, vmdk, ...
	VirtualSize int64  // size the guest sees
	ActualSize  int64  // bytes allocated on the host
	// BackingFilename is the backing path as stored in the image (may be
	// relative to the image's folder); FullBackingFilename is it resolved.
	BackingFilename     string
	FullBackingFilename string
	BackingFormat       string
	// DirtyFlag is set when the image was not closed cleanly (qcow2 with
	// lazy refcounts); qemu repairs it on the next read-write open.
	DirtyFlag   bool
	ClusterSize int64
	// Compression is qcow2's compression type ("zlib", "zstd"), empty when
	// qemu-img does not report one.
	Compression string
	// Corrupt is qcow2's corrupt bit: qemu refuses to write such an image.
	Corrupt bool
	// CreateType is vmdk's subformat ("monolithicSparse", "streamOptimized",
	// ...), empty for other formats.
	CreateType string
	// DataFile is qcow2's external data file, where one is recorded.
	DataFile string
	// Extents are vmdk's extent files.
	Extents []Extent
}

// Extent is one file of a vmdk image.
type Extent struct {
	Filename string
	Format   string
}

type infoJSON struct {
	Filename            string `json:"filename"`
	Format              string `json:"format"`
	VirtualSize         int64  `json:"virtual-size"`
	ActualSize          int64  `json:"actual-size"`
	BackingFilename     string `json:"backing-filename"`
	FullBackingFilename string `json:"full-backing-filename"`
	BackingFormat       string `json:"backing-filename-format"`
	DirtyFlag           bool   `json:"dirty-flag"`
	ClusterSize         int64  `json:"cluster-size"`
	FormatSpecific      *struct {
		Type string `json:"type"`
		Data struct {
			CompressionType string `json:"compression-type"`
			Corrupt         bool   `json:"corrupt"`
			CreateType      string `json:"create-type"`
			DataFile        string `json:"data-file"`
			Extents         []struct {
				Filename string `json:"filename"`
				Format   string `json:"format"`
			} `json:"extents"`
		} `json:"data"`
	} `json:"format-specific"`
}

// ParseInfo decodes `qemu-img info --output=json`. It also accepts the array
// that --backing-chain prints and returns its first (top) image.
func ParseInfo(b []byte) (Info, error) {
	b = bytes.TrimSpace(b)
	var j infoJSON
	if len(b) > 0 && b[0] == '[' {
		var chain []infoJSON
		if err := json.Unmarshal(b, &chain); err != nil {
			return Info{}, fmt.Errorf("parse qemu-img info: %w", err)
		}
		if len(chain) == 0 {
			return Info{}, errors.New("parse qemu-img info: empty backing chain")
		}
		j = chain[0]
	} else if err := json.Unmarshal(b, &j); err != nil {
		return Info{}, fmt.Errorf("parse qemu-img info: %w", err)
	}
	if j.Format == "" {
		return Info{}, errors.New("parse qemu-img info: no image format in output")
	}
	in := Info{
		Filename:            j.Filename,
		Format:              j.Format,
		VirtualSize:         j.VirtualSize,
		ActualSize:          j.ActualSize,
		BackingFilename:     j.BackingFilename,
		FullBackingFilename: j.FullBackingFilename,
		BackingFormat:       j.BackingFormat,
		DirtyFlag:           j.DirtyFlag,
		ClusterSize:         j.ClusterSize,
	}
	if fs := j.FormatSpecific; fs != nil {
		in.Compression = fs.Data.CompressionType
		in.Corrupt = fs.Data.Corrupt
		in.CreateType = fs.Data.CreateType
		in.DataFile = fs.Data.DataFile
		for _, e := range fs.Data.Extents {
			in.Extents = append(in.Extents, Extent{Filename: e.Filename, Format: e.Format})
		}
	}
	return in, nil
}

// ReadInfo runs qemu-img info on one of kiln's own files (an overlay or
// output it made), whose format kiln reads from the header itself and
// passes with -f: qemu-img never guesses. An image from outside goes
// through Admit instead, and a stored one has its format in its manifest
// (ReadInfoAs). It uses --force-share so it works on an image a running VM
// holds open (the numbers may then be slightly stale).
func ReadInfo(ctx context.Context, path string) (Info, error) {
	format, err := sniffFile(path)
	if err != nil {
		return Info{}, fmt.Errorf("disk info: %w", err)
	}
	return ReadInfoAs(ctx, path, format)
}

// ReadInfoAs is ReadInfo for an image whose format is known.
func ReadInfoAs(ctx context.Context, path, format string) (Info, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Info{}, fmt.Errorf("disk info: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return Info{}, fmt.Errorf("disk info: %w", err)
	}
	// An absolute path: qemu reads a name with a colon before any slash
	// as a protocol ("nbd:…").
	out, err := runQemuImg(ctx, "info", "--output=json", "--force-share", "-f", format, abs)
	if err != nil {
		return Info{}, fmt.Errorf("disk info %s: %w", quoteOutside(path), err)
	}
	in, err := ParseInfo(out)
	if err != nil {
		return Info{}, fmt.Errorf("disk info %s: %w", quoteOutside(path), err)
	}
	return in, nil
}

// sniffFile is kiln's reading of a file's format (see sniff).
func sniffFile(path string) (string, error) {
	f, err := fileutil.OpenRegular(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", quoteOutside(path))
	}
	return sniff(f, st.Size()), nil
}

// DetectFormat returns the format of an image from outside kiln, as Admit
// determines it (and refuses what Admit refuses).
func DetectFormat(ctx context.Context, path string) (string, error) {
	img, err := Admit(ctx, path, AdmitOptions{})
	if err != nil {
		return "", err
	}
	return img.Format, nil
}

// checkRawDisk believes a raw answer only when the file looks like a whole
// disk: a multiple of 512 bytes with an MBR/protective-MBR boot signature
// (0x55AA at offset 510). Anything else — including a blank raw disk with no
// partition table, or an ISO — is "not a disk image".
func checkRawDisk(path, name string) error {
	notDisk := func(why string) error {
		return fmt.Errorf("%s is not a disk image (%s)", quoteOutside(name), why)
	}
	f, err := fileutil.OpenRegular(path)
	if err != nil {
		return fmt.Errorf("detect format: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("detect format: %w", err)
	}
	if !st.Mode().IsRegular() {
		// Block devices are disks; nothing more to check cheaply.
		if st.Mode()&os.ModeDevice != 0 {
			return nil
		}
		return notDisk("not a regular file")
	}
	if st.Size() == 0 {
		return notDisk("the file is empty")
	}
	if st.Size() < 512 || st.Size()%512 != 0 {
		return notDisk(fmt.Sprintf("size %d is not a whole number of 512-byte sectors", st.Size()))
	}
	var sig [2]byte
	if _, err := f.ReadAt(sig[:], 510); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("detect format: %w", err)
	}
	if sig != [2]byte{0x55, 0xAA} {
		return notDisk("no MBR/GPT partition table")
	}
	return nil
}
