package images

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/disk"
)

// rawDisk writes a 2 MiB raw disk with an MBR boot signature and some data.
func rawDisk(t *testing.T, path, payload string) {
	t.Helper()
	data := make([]byte, 2<<20)
	data[510], data[511] = 0x55, 0xAA
	copy(data[1<<20:], payload)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v: %s", args, err, out)
	}
}

func TestImport(t *testing.T) {
	needQemuImg(t)
	ctx := context.Background()
	src := t.TempDir()
	raw := filepath.Join(src, "disk.raw")
	rawDisk(t, raw, "hello from the raw disk")
	for _, f := range []string{"qcow2", "vmdk", "vpc", "vhdx", "vdi"} {
		qemuImg(t, "convert", "-q", "-f", "raw", "-O", f, raw, filepath.Join(src, "disk."+f))
	}
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", filepath.Join(src, "disk.qcow2"), "-F", "qcow2", filepath.Join(src, "overlay.qcow2"))
	writeFile(t, filepath.Join(src, "notes.txt"), "not a disk")
	blank := filepath.Join(src, "blank.raw")
	os.WriteFile(blank, make([]byte, 1<<20), 0o644)
	corrupt := filepath.Join(src, "corrupt.qcow2")
	qemuImg(t, "convert", "-q", "-f", "raw", "-O", "qcow2", raw, corrupt)
	corruptRefcounts(t, corrupt)
	// Images whose data or backing is a host file (standing for /etc/shadow).
	host := filepath.Join(src, "host-secret")
	writeFile(t, host, strings.Repeat("root:secret-hash:19000:0:99999:7:::\n", 2000))
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+host+",data_file_raw=on", filepath.Join(src, "datafile.qcow2"), "1M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", `json:{"driver":"raw","file":{"driver":"file","filename":"`+host+`"}}`, filepath.Join(src, "json.qcow2"), "1M")
	writeFile(t, filepath.Join(src, "flat.vmdk"), "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 128 FLAT \""+host+"\" 0\n")

	tests := []struct {
		file      string
		converted bool
		wantErr   string
	}{
		{file: "disk.qcow2"},
		{file: "disk.raw", converted: true},
		{file: "disk.vmdk", converted: true},
		{file: "disk.vpc", converted: true},
		{file: "disk.vhdx", converted: true},
		{file: "overlay.qcow2", wantErr: "qcow2 backing file points at " + filepath.Join(src, "disk.qcow2") + ": an overlay on another file"},
		{file: "disk.vdi", wantErr: "VirtualBox VDI images are not taken; use raw, qcow2, vmdk, vhd or vhdx"},
		{file: "datafile.qcow2", wantErr: "qcow2 external data file points at " + host},
		{file: "json.qcow2", wantErr: "qcow2 backing file points at json:{… " + host + " …}"},
		{file: "flat.vmdk", wantErr: "vmdk flat extent points at " + host},
		{file: "notes.txt", wantErr: "is not a disk image"},
		{file: "blank.raw", wantErr: "is not a disk image (no MBR/GPT partition table)"},
		{file: "corrupt.qcow2", wantErr: "corruptions"},
		{file: "missing.qcow2", wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			file := filepath.Join(src, tt.file)
			before, _ := os.ReadFile(file)
			m, err := s.Import(ctx, file, "imported", "1", false)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Import = %v, want error containing %q", err, tt.wantErr)
				}
				if list, _ := s.List(); len(list) != 0 {
					t.Errorf("failed Import stored %v", list)
				}
				if entries, _ := os.ReadDir(filepath.Join(s.Root, "tmp")); len(entries) != 0 {
					t.Errorf("tmp not empty: %v", entries)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			after, err := os.ReadFile(file)
			if err != nil || string(after) != string(before) {
				t.Errorf("Import changed or took the source: %v", err)
			}
			if m.Format != "qcow2" || m.Base.Source != file || m.Base.Checksum != digestOf(before) {
				t.Errorf("manifest %+v", m)
			}
			if !tt.converted && (m.Digest != digestOf(before) || m.Compression != "") {
				t.Errorf("qcow2 not stored as is: digest %s, compression %q", m.Digest, m.Compression)
			}
			if tt.converted && m.Compression != "zstd" {
				t.Errorf("converted image compression %q", m.Compression)
			}
			info, err := disk.ReadInfo(ctx, s.BlobPath(m.Digest))
			if err != nil || info.Format != "qcow2" || info.BackingFilename != "" || info.VirtualSize != m.VirtualSize || m.VirtualSize < 2<<20 {
				t.Errorf("blob info %+v, %v (manifest virtual size %d)", info, err, m.VirtualSize)
			}
			// Same guest-visible data as the original raw disk.
			if out, err := exec.Command("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", raw, s.BlobPath(m.Digest)).CombinedOutput(); err != nil {
				t.Errorf("imported data differs from the original: %v %s", err, out)
			}
			if err := s.Verify(ctx, m.Ref()); err != nil {
				t.Errorf("Verify after Import: %v", err)
			}
			if entries, _ := os.ReadDir(filepath.Join(s.Root, "tmp")); len(entries) != 0 {
				t.Errorf("tmp not empty: %v", entries)
			}
		})
	}

	t.Run("exists and force", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Import(ctx, filepath.Join(src, "disk.qcow2"), "imported", "1", false); err != nil {
			t.Fatal(err)
		}
		_, err := s.Import(ctx, raw, "imported", "1", false)
		if !errors.Is(err, ErrExists) {
			t.Errorf("second Import = %v, want ErrExists", err)
		}
		m, err := s.Import(ctx, raw, "imported", "1", true)
		if err != nil || m.Compression != "zstd" {
			t.Errorf("forced Import = %+v, %v", m, err)
		}
	})
	t.Run("relative path and bad ref", func(t *testing.T) {
		s := newStore(t)
		t.Chdir(src)
		m, err := s.Import(ctx, "disk.qcow2", "rel", "1", false)
		if err != nil || m.Base.Source != filepath.Join(src, "disk.qcow2") {
			t.Errorf("Import of a relative path = %+v, %v; want an absolute Base.Source", m.Base, err)
		}
		if _, err := s.Import(ctx, "disk.qcow2", "Bad", "1", false); !errors.Is(err, ErrInvalidRef) {
			t.Errorf("Import with a bad name = %v", err)
		}
		if _, err := s.Import(ctx, "disk.qcow2", "ok", "", false); !errors.Is(err, ErrInvalidRef) {
			t.Errorf("Import without a version = %v", err)
		}
	})
}
