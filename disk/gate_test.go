package disk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rawDisk writes a 1 MiB raw disk with an MBR boot signature.
func rawDisk(t *testing.T, path string) {
	t.Helper()
	b := make([]byte, MiB)
	b[510], b[511] = 0x55, 0xAA
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// patch overwrites bytes of a file at off.
func patch(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestAdmitAccepts: the formats kiln takes, made by qemu-img, pass with
// the format kiln read itself.
func TestAdmitAccepts(t *testing.T) {
	ctx := needQemuImg(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	rawDisk(t, raw)
	cases := map[string]string{"disk.raw": "raw"}
	for name, args := range map[string][]string{
		"plain.qcow2":  {"-O", "qcow2"},
		"zstd.qcow2":   {"-O", "qcow2", "-c", "-o", "compression_type=zstd"},
		"sparse.vmdk":  {"-O", "vmdk"},
		"stream.vmdk":  {"-O", "vmdk", "-o", "subformat=streamOptimized"},
		"dynamic.vhd":  {"-O", "vpc"},
		"fixed.vhd":    {"-O", "vpc", "-o", "subformat=fixed,force_size=on"},
		"dynamic.vhdx": {"-O", "vhdx"},
	} {
		mustRun(t, ctx, append(append([]string{"convert", "-f", "raw"}, args...), raw, filepath.Join(dir, name))...)
		cases[name] = args[1]
	}
	for name, want := range cases {
		img, err := Admit(ctx, filepath.Join(dir, name), AdmitOptions{})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if img.Format != want || img.VirtualSize < MiB || !filepath.IsAbs(img.Path) {
			t.Errorf("%s: got %+v, want format %s", name, img, want)
		}
	}
	// A file whose name looks like a protocol is still a file.
	t.Chdir(dir)
	if err := os.Rename("plain.qcow2", "nbd:localhost:10809"); err != nil {
		t.Fatal(err)
	}
	if img, err := Admit(ctx, "nbd:localhost:10809", AdmitOptions{}); err != nil || img.Format != "qcow2" {
		t.Errorf("file named nbd:…: %+v, %v", img, err)
	}
}

// TestAdmitRefuses: images that would make qemu read another file (or a
// device, or a format kiln does not take) are refused by name, each made
// by qemu-img itself or patched from one it made.
func TestAdmitRefuses(t *testing.T) {
	ctx := needQemuImg(t)
	dir := t.TempDir()
	host := filepath.Join(dir, "host-secret.raw") // stands for /etc/shadow
	if err := os.WriteFile(host, make([]byte, MiB), 0o600); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "disk.raw")
	rawDisk(t, raw)
	p := func(name string) string { return filepath.Join(dir, name) }

	mustRun(t, ctx, "create", "-q", "-f", "qcow2", "-o", "data_file="+host+",data_file_raw=on", p("datafile.qcow2"), "1M")
	mustRun(t, ctx, "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b",
		`json:{"driver":"raw","file":{"driver":"file","filename":"`+host+`"}}`, p("json.qcow2"), "1M")
	mustRun(t, ctx, "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "nbd:127.0.0.1:10809", p("nbd.qcow2"), "1M")
	mustRun(t, ctx, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", host, p("overlay.qcow2"))
	mustRun(t, ctx, "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=kiln", "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", p("luks.qcow2"), "1M")
	mustRun(t, ctx, "create", "-q", "-f", "qed", p("disk.qed"), "1M")
	mustRun(t, ctx, "create", "-q", "-f", "vdi", p("disk.vdi"), "1M")
	mustRun(t, ctx, "create", "-q", "-f", "vmdk", p("parent.vmdk"), "1M")
	mustRun(t, ctx, "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", p("parent.vmdk"), p("child.vmdk"))
	mustRun(t, ctx, "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", p("flat.vmdk"), "1M")
	if err := os.WriteFile(p("hostflat.vmdk"), []byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"+
		"createType=\"monolithicFlat\"\n\nRW 2048 FLAT \""+host+"\" 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A sparse vmdk whose capacity is 0 makes qemu open the extents of its
	// embedded descriptor instead: here, the host file.
	mustRun(t, ctx, "create", "-q", "-f", "vmdk", p("cap0.vmdk"), "1M")
	patch(t, p("cap0.vmdk"), 12, make([]byte, 8))
	patch(t, p("cap0.vmdk"), 512, []byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \""+host+"\" 0\n\x00"))
	if out, err := runQemuImg(ctx, "info", "--output=json", "-f", "vmdk", p("cap0.vmdk")); err != nil || !strings.Contains(string(out), host) {
		t.Fatalf("the crafted vmdk does not make qemu-img follow its descriptor (so this case proves nothing): %s %v", out, err)
	}
	// A qcow2 whose header sets the external-data-file bit without naming one.
	mustRun(t, ctx, "create", "-q", "-f", "qcow2", p("databit.qcow2"), "1M")
	patch(t, p("databit.qcow2"), 72+7, []byte{1 << 2})
	// Truncated and bit-flipped headers.
	mustRun(t, ctx, "convert", "-f", "raw", "-O", "qcow2", raw, p("full.qcow2"))
	b, _ := os.ReadFile(p("full.qcow2"))
	os.WriteFile(p("truncated.qcow2"), b[:60], 0o600)
	flipped := append([]byte(nil), b...)
	flipped[20] ^= 0x40 // cluster_bits
	os.WriteFile(p("flipped.qcow2"), flipped, 0o600)
	// Things that are not image files at all.
	if err := syscall.Mknod(p("null"), syscall.S_IFCHR|0o600, int((1<<8)|3)); err != nil {
		t.Logf("mknod (needs root): %v", err)
	}
	if err := syscall.Mkfifo(p("fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(p("folder"), 0o700)
	os.WriteFile(p("notes.txt"), []byte("just some text\n"), 0o600)

	for _, c := range []struct{ file, want string }{
		{"datafile.qcow2", "qcow2 external data file points at " + host},
		{"databit.qcow2", "qcow2 external data file"},
		{"json.qcow2", "qcow2 backing file points at json:{… " + host + " …}"},
		{"json.qcow2", "qemu would open what it names"},
		{"nbd.qcow2", "qcow2 backing file points at nbd:127.0.0.1:10809: qemu would open it as a device"},
		{"overlay.qcow2", "qcow2 backing file points at " + host + ": an overlay on another file"},
		{"luks.qcow2", "qcow2 encryption"},
		{"disk.qed", "format: QED images are not taken"},
		{"disk.vdi", "VirtualBox VDI images are not taken"},
		{"child.vmdk", "vmdk parentFileNameHint points at " + p("parent.vmdk")},
		{"flat.vmdk", "vmdk flat extent points at flat-flat.vmdk"},
		{"hostflat.vmdk", "vmdk flat extent points at " + host},
		{"cap0.vmdk", "vmdk capacity points at 0"},
		{"truncated.qcow2", "qcow2 header"},
		{"flipped.qcow2", "qcow2 cluster size"},
		{"null", "not a regular file (a character device)"},
		{"fifo", "not a regular file (a named pipe)"},
		{"folder", "not a regular file (a folder)"},
		{"notes.txt", "is not a disk image"},
		{"missing.qcow2", "no such file"},
	} {
		if c.file == "null" {
			if _, err := os.Lstat(p("null")); err != nil {
				continue // mknod needs root
			}
		}
		done := make(chan error, 1)
		go func() { _, err := Admit(ctx, p(c.file), AdmitOptions{}); done <- err }()
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: Admit hangs", c.file)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v\nwant an error containing %q", c.file, err, c.want)
		}
	}
	// The host file was never copied, changed or removed.
	if b, err := os.ReadFile(host); err != nil || len(b) != int(MiB) {
		t.Errorf("host file: %d bytes, %v", len(b), err)
	}
}

// TestAdmitStoreChain: an overlay inside the store's blob folder may name
// another blob beside it, and nothing else.
func TestAdmitStoreChain(t *testing.T) {
	ctx := needQemuImg(t)
	blobs := t.TempDir()
	raw := filepath.Join(t.TempDir(), "disk.raw")
	rawDisk(t, raw)
	base := filepath.Join(blobs, strings.Repeat("a", 64))
	mustRun(t, ctx, "convert", "-f", "raw", "-O", "qcow2", raw, base)
	top := filepath.Join(blobs, strings.Repeat("b", 64))
	mustRun(t, ctx, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", filepath.Base(base), top)
	if img, err := Admit(ctx, top, AdmitOptions{BlobDir: blobs}); err != nil || img.Format != "qcow2" {
		t.Errorf("stored overlay: %+v, %v", img, err)
	}
	if _, err := Admit(ctx, top, AdmitOptions{}); err == nil {
		t.Error("stored overlay without BlobDir: want refused")
	}
	// The same overlay outside the blob folder is refused.
	moved := filepath.Join(t.TempDir(), filepath.Base(top))
	b, _ := os.ReadFile(top)
	os.WriteFile(moved, b, 0o600)
	if _, err := Admit(ctx, moved, AdmitOptions{BlobDir: blobs}); err == nil || !strings.Contains(err.Error(), "an overlay on another file") {
		t.Errorf("overlay outside the store: %v", err)
	}
	// A blob naming a blob that is not there.
	gone := filepath.Join(blobs, strings.Repeat("c", 64))
	mustRun(t, ctx, "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", strings.Repeat("d", 64), gone, "1M")
	if _, err := Admit(ctx, gone, AdmitOptions{BlobDir: blobs}); err == nil || !strings.Contains(err.Error(), "not in the store") {
		t.Errorf("missing backing blob: %v", err)
	}
}

// TestAdmitErrorIsRefused: callers can tell a refusal from a failure.
func TestAdmitErrorIsRefused(t *testing.T) {
	ctx := needQemuImg(t)
	p := filepath.Join(t.TempDir(), "x.qcow2")
	mustRun(t, ctx, "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "/etc/passwd", p, "1M")
	_, err := Admit(context.Background(), p, AdmitOptions{})
	var re *RefusedError
	if !errors.As(err, &re) || re.Field != "qcow2 backing file" || re.Value != "/etc/passwd" || re.Path != p {
		t.Errorf("got %#v", err)
	}
}
