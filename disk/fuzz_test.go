package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzReadHeader feeds kiln's own header reader (the first half of the
// image gate) arbitrary bytes: it must never panic or read without bound,
// and what it accepts must be a format kiln takes with none of the
// references it refuses. The seeds (testdata/fuzz/FuzzReadHeader) are the
// heads of images qemu-img made: qcow2 plain, with a backing file, a json:
// backing, an external data file and encryption; vmdk sparse, stream-
// optimised, with a parent and as flat descriptors; VHD and VHDX.
func FuzzReadHeader(f *testing.F) {
	f.Add([]byte("QFI\xfb\x00\x00\x00\x03"))
	f.Add([]byte("# Disk DescriptorFile\nversion=1\nRW 2048 FLAT \"/etc/shadow\" 0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := readHeader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			var re *RefusedError
			if errors.As(err, &re) && re.Field == "" {
				t.Fatalf("a refusal names no field: %v", err)
			}
			return
		}
		if !slices.Contains(AdmitFormats, h.Format) {
			t.Fatalf("accepted format %q", h.Format)
		}
		switch h.Format {
		case "qcow2":
			if len(data) >= 80 && binary.BigEndian.Uint32(data[4:]) == 3 && data[79]&qcow2IncompatDataFile != 0 {
				t.Fatal("accepted a qcow2 with the external data file bit")
			}
			if binary.BigEndian.Uint32(data[32:]) != 0 {
				t.Fatal("accepted an encrypted qcow2")
			}
		case "raw":
			if bytes.HasPrefix(data, []byte("QFI\xfb")) || bytes.HasPrefix(data, []byte("KDMV")) || isVMDKDescriptor(data[:min(len(data), 4096)]) {
				t.Fatal("called a qcow2 or vmdk raw")
			}
		}
		if sniff(bytes.NewReader(data), int64(len(data))) != h.Format {
			t.Fatal("sniff disagrees with readHeader")
		}
	})
}

// FuzzVMDKDescriptor: any descriptor text is read without panicking, and
// a descriptor is never accepted, whatever its extents say.
func FuzzVMDKDescriptor(f *testing.F) {
	for _, s := range []string{
		"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"/etc/shadow\" 0\n",
		"version=1\nparentFileNameHint=\"/var/lib/base.vmdk\"\nRW 2048 SPARSE \"x.vmdk\"\n",
		"version=1\nRDONLY 1 VMFS \"nbd:127.0.0.1:1\"\nNOACCESS 1 ZERO\n",
		"version=1\nRW 2048 FLAT \"unterminated\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, desc string) {
		if err := checkVMDKDescriptor(desc); err == nil {
			t.Fatal("a descriptor was accepted")
		}
		for _, e := range parseExtents(desc) {
			if strings.ContainsRune(e.file, '"') {
				t.Fatalf("extent file %q holds a quote", e.file)
			}
		}
		descriptorValue(desc, "parentFileNameHint")
	})
}

// TestHeaderSeeds: the fuzz seeds, heads of real qemu-img images, get the
// verdicts the gate gives the whole images.
func TestHeaderSeeds(t *testing.T) {
	for name, want := range map[string]string{
		"qcow2-plain": "qcow2", "qcow2-v2": "qcow2", "qcow2-backing": "qcow2 backing:plain.qcow2",
		"qcow2-json":     `qcow2 backing:json:{"driver":"raw","file":{"driver":"file","filename":"/etc/shadow"}}`,
		"qcow2-datafile": "refused:qcow2 external data file", "qcow2-luks": "refused:qcow2 encryption",
		"vmdk-sparse": "vmdk", "vmdk-stream": "vmdk", "vmdk-child": "refused:vmdk parentFileNameHint",
		"vmdk-flat-desc": "refused:vmdk flat extent", "vhd-dynamic": "vpc", "vhd-fixed": "vpc", "vhdx": "vhdx", "raw-mbr": "raw",
	} {
		b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzReadHeader", name))
		if err != nil {
			t.Fatal(err)
		}
		lit := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[1]), "[]byte("), ")")
		data, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		h, err := readHeader(strings.NewReader(data), int64(len(data)))
		got := h.Format
		if h.Backing != "" {
			got += " backing:" + h.Backing
		}
		var re *RefusedError
		if errors.As(err, &re) {
			got = "refused:" + re.Field
		} else if err != nil {
			got = "error:" + err.Error()
		}
		if got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
}
