package disk

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	good := []struct {
		in   string
		want int64
	}{
		{"4G", 4 * GiB},
		{"4g", 4 * GiB},
		{"512M", 512 * MiB},
		{"10GiB", 10 * GiB},
		{"10GB", 10 * GiB},
		{"1T", TiB},
		{"64K", 64 * KiB},
		{"64KiB", 64 * KiB},
		{"1048576", 1048576},
		{"1048576B", 1048576},
		{" 2 G ", 2 * GiB},
		{"1.5G", 3 * GiB / 2},
		{"0", 0},
		{"4Gi", 4 * GiB},
		{"1.5M", 3 << 19},
		{"512B", 512},
		{"1k", 1024},
	}
	for _, c := range good {
		got, err := ParseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	bad := []string{"", "4X", "G", "-1G", "4 GiBB", "1.2.3G", "1.5", "iB", "4IB", "4iB", "99999999999999999999", "2000000000T",
		".5G", "1.G", "0.1", "0.3K", "four", "9999999T"}
	for _, in := range bad {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", in, got)
		}
	}
	_, err := ParseSize("4X")
	if want := `invalid size "4X": unknown unit "X"; use K, M, G or T`; err == nil || err.Error() != want {
		t.Errorf("ParseSize(4X) error = %v, want %q", err, want)
	}
}

func TestFormatSize(t *testing.T) {
	cases := []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{512, "512 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{4 * GiB, "4.0 GiB"},
		{3 * GiB / 2, "1.5 GiB"},
		{MiB - 1, "1.0 MiB"},
		{2 * TiB, "2.0 TiB"},
		{-2 * MiB, "-2.0 MiB"},
	}
	for _, c := range cases {
		if got := FormatSize(c.in); got != c.want {
			t.Errorf("FormatSize(%d) = %q, want %q", c.in, got, c.want)
		}
	}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The testdata JSON was captured from qemu-img 7.2 (Debian 12).
func TestParseInfo(t *testing.T) {
	cases := []struct {
		file string
		want Info
	}{
		{"base.qcow2.json", Info{Filename: "base.qcow2", Format: "qcow2", VirtualSize: 64 * MiB, ActualSize: 200704, ClusterSize: 65536, Compression: "zlib"}},
		{"overlay.qcow2.json", Info{Filename: "ov.qcow2", Format: "qcow2", VirtualSize: 128 * MiB, ActualSize: 200704, ClusterSize: 65536, Compression: "zlib",
			BackingFilename: "/tmp/qi/base.qcow2", FullBackingFilename: "/tmp/qi/base.qcow2", BackingFormat: "qcow2"}},
		{"zstd.qcow2.json", Info{Filename: "z.qcow2", Format: "qcow2", VirtualSize: 64 * MiB, ActualSize: 200704, ClusterSize: 65536, Compression: "zstd"}},
		{"dirty.qcow2.json", Info{Filename: "dirty.qcow2", Format: "qcow2", VirtualSize: 64 * MiB, ActualSize: 4460544, ClusterSize: 65536, Compression: "zlib", DirtyFlag: true}},
		{"raw.json", Info{Filename: "r.img", Format: "raw", VirtualSize: 2 * MiB}},
		{"vmdk.json", Info{Filename: "v.vmdk", Format: "vmdk", VirtualSize: 64 * MiB, ActualSize: 12288, ClusterSize: 65536, CreateType: "monolithicSparse"}},
	}
	for _, c := range cases {
		got, err := ParseInfo(readTestdata(t, c.file))
		if err != nil {
			t.Errorf("%s: %v", c.file, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.file, got, c.want)
		}
	}
	// --backing-chain output is an array; the first entry is the top image.
	chain := "[" + string(readTestdata(t, "overlay.qcow2.json")) + "," + string(readTestdata(t, "base.qcow2.json")) + "]"
	if got, err := ParseInfo([]byte(chain)); err != nil || got.Filename != "ov.qcow2" {
		t.Errorf("chain: got %+v, %v", got, err)
	}
	for _, bad := range []string{"", "{", "{}", "[]", "qemu-img: Could not open"} {
		if _, err := ParseInfo([]byte(bad)); err == nil {
			t.Errorf("ParseInfo(%q): want error", bad)
		}
	}
}

func TestTrimStderr(t *testing.T) {
	var b strings.Builder
	for range 1000 {
		b.WriteString("ERROR cluster 5 refcount=0 reference=1\n")
	}
	got := trimStderr(b.String())
	if !strings.Contains(got, "(and 994 more lines)") || len(got) > 2000 {
		t.Errorf("trimStderr = %q", got)
	}
	if got := trimStderr("qemu-img: Could not open 'x': No such file\n"); got != "Could not open 'x': No such file" {
		t.Errorf("trimStderr = %q", got)
	}
}

func needQemuImg(t *testing.T) context.Context {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustRun(t *testing.T, ctx context.Context, args ...string) {
	t.Helper()
	if _, err := runQemuImg(ctx, args...); err != nil {
		t.Fatal(err)
	}
}

func TestQemuImgWorkflow(t *testing.T) {
	ctx := needQemuImg(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	mustRun(t, ctx, "create", "-q", "-f", "qcow2", base, "64M")

	in, err := ReadInfo(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	if in.Format != "qcow2" || in.VirtualSize != 64*MiB || in.BackingFilename != "" {
		t.Fatalf("base info %+v", in)
	}

	// Overlay with a relative base path: the stored path must be absolute.
	ov := filepath.Join(dir, "run", "disk.qcow2")
	if err := os.Mkdir(filepath.Dir(ov), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	if err := CreateOverlay(ctx, "base.qcow2", "qcow2", ov, 0); err != nil {
		t.Fatal(err)
	}
	in, err = ReadInfo(ctx, ov)
	if err != nil {
		t.Fatal(err)
	}
	if in.BackingFilename != base || in.BackingFormat != "qcow2" || in.VirtualSize != 64*MiB {
		t.Fatalf("overlay info %+v", in)
	}
	if f, err := DetectFormat(ctx, ov); err != nil || f != "qcow2" {
		t.Fatalf("DetectFormat = %q, %v", f, err)
	}

	// Shrinking is refused everywhere.
	err = CreateOverlay(ctx, base, "", filepath.Join(dir, "small.qcow2"), 32*MiB)
	if err == nil || !strings.Contains(err.Error(), "smaller than base") {
		t.Fatalf("small overlay: %v", err)
	}
	if err := CreateOverlay(ctx, base, "raw", filepath.Join(dir, "wrongfmt.qcow2"), 0); err == nil || !strings.Contains(err.Error(), "is qcow2, not raw") {
		t.Fatalf("wrong base format: %v", err)
	}
	if err := CreateOverlay(ctx, base, "", filepath.Join(dir, "big.qcow2"), 128*MiB); err != nil {
		t.Fatal(err)
	}
	if err := Resize(ctx, ov, 32*MiB); err == nil || !strings.Contains(err.Error(), "cannot shrink") {
		t.Fatalf("shrink: %v", err)
	}
	if err := Resize(ctx, ov, 100*MiB+1); err != nil { // odd size is rounded up
		t.Fatal(err)
	}
	if in, err = ReadInfo(ctx, ov); err != nil || in.VirtualSize != 100*MiB+512 {
		t.Fatalf("after resize %+v, %v", in, err)
	}
	if err := Resize(ctx, ov, 100*MiB+512); err != nil { // same size: no-op
		t.Fatal(err)
	}

	// Put some data in so compression has something to do.
	raw := filepath.Join(dir, "data.raw")
	data := make([]byte, 4*MiB)
	for i := range data {
		data[i] = byte(i / 4096)
	}
	data[510], data[511] = 0x55, 0xAA
	if err := os.WriteFile(raw, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err := DetectFormat(ctx, raw); err != nil || f != "raw" {
		t.Fatalf("DetectFormat(raw) = %q, %v", f, err)
	}

	for _, comp := range []string{"zstd", "zlib", "none", ""} {
		dst := filepath.Join(dir, "out-"+comp+".qcow2")
		if err := Convert(ctx, raw, dst, ConvertOptions{Compression: comp}); err != nil {
			t.Fatalf("convert %s: %v", comp, err)
		}
		in, err := ReadInfo(ctx, dst)
		if err != nil {
			t.Fatal(err)
		}
		want := comp
		if comp == "none" || comp == "" {
			want = "zlib" // qcow2's default header type; nothing is compressed
		}
		if in.Format != "qcow2" || in.Compression != want || in.VirtualSize != 4*MiB {
			t.Errorf("convert %s: %+v", comp, in)
		}
		if _, err := os.Stat(dst + ".partial"); !os.IsNotExist(err) {
			t.Errorf("partial left behind: %v", err)
		}
		if err := Check(ctx, dst); err != nil {
			t.Errorf("check %s: %v", dst, err)
		}
	}

	// Other formats; vmdk must carry its final name inside.
	for _, f := range []string{"raw", "vmdk", "vpc", "vhdx"} {
		dst := filepath.Join(dir, "out."+f)
		if err := Convert(ctx, ov, dst, ConvertOptions{Format: f}); err != nil {
			t.Fatalf("convert %s: %v", f, err)
		}
		if got, err := ReadInfo(ctx, dst); err != nil || got.Format != f {
			t.Errorf("convert %s: %+v, %v", f, got, err)
		}
		if _, err := os.Stat(dst + ".partial"); !os.IsNotExist(err) {
			t.Errorf("partial left behind for %s: %v", f, err)
		}
	}
	vmdk, _ := os.ReadFile(filepath.Join(dir, "out.vmdk"))
	if !strings.Contains(string(vmdk), `SPARSE "out.vmdk"`) {
		t.Errorf("vmdk descriptor does not name out.vmdk")
	}

	// Keep an overlay on its base instead of flattening.
	kept := filepath.Join(dir, "run", "kept.qcow2")
	if err := Convert(ctx, ov, kept, ConvertOptions{Compression: "zstd", BackingFile: base}); err != nil {
		t.Fatal(err)
	}
	if in, err := ReadInfo(ctx, kept); err != nil || in.BackingFilename != base || in.BackingFormat != "qcow2" {
		t.Fatalf("kept overlay: %+v, %v", in, err)
	}
	// A relative backing path is relative to dst's folder.
	rel := filepath.Join(dir, "run", "rel.qcow2")
	if err := Convert(ctx, ov, rel, ConvertOptions{BackingFile: "../base.qcow2"}); err != nil {
		t.Fatal(err)
	}
	if in, err := ReadInfo(ctx, rel); err != nil || in.BackingFilename != "../base.qcow2" || filepath.Clean(in.FullBackingFilename) != base {
		t.Fatalf("relative overlay: %+v, %v", in, err)
	}

	// Errors carry qemu-img's stderr or a clear reason.
	if err := Convert(ctx, raw, filepath.Join(dir, "x.vmdk"), ConvertOptions{Format: "vmdk", Compression: "zstd"}); err == nil {
		t.Error("zstd vmdk: want error")
	}
	if err := Convert(ctx, raw, filepath.Join(dir, "x.img"), ConvertOptions{Format: "iso"}); err == nil {
		t.Error("iso: want error")
	}
	err = Convert(ctx, raw, filepath.Join(dir, "bad.qcow2"), ConvertOptions{Options: []string{"no_such_option=1"}})
	var ee *ExecError
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), "no_such_option") {
		t.Errorf("bad option: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.qcow2.partial")); !os.IsNotExist(err) {
		t.Errorf("partial left after failure: %v", err)
	}
	if _, err := ReadInfo(ctx, filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing: %v", err)
	}
}

func TestConvertCancel(t *testing.T) {
	ctx := needQemuImg(t)
	dir := t.TempDir()
	// Incompressible data so compressing it takes a while.
	f, err := os.OpenFile(filepath.Join(dir, "src.raw"), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MiB)
	x := uint32(1)
	for range 128 {
		for i := range buf {
			x = x*1664525 + 1013904223
			buf[i] = byte(x >> 24)
		}
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	dst := filepath.Join(dir, "out.qcow2")
	err = Convert(cctx, filepath.Join(dir, "src.raw"), dst, ConvertOptions{Compression: "zlib"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	for _, p := range []string{dst, dst + ".partial"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s exists after cancel: %v", p, err)
		}
	}
}

func TestDetectFormatNotDisk(t *testing.T) {
	ctx := needQemuImg(t)
	dir := t.TempDir()
	cases := map[string][]byte{
		"text.txt":  []byte("hello\n"),
		"blank.img": make([]byte, 4096), // no partition table
	}
	for name, b := range cases {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := DetectFormat(ctx, p)
		if err == nil || !strings.Contains(err.Error(), p+" is not a disk image") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestCheckCorrupt(t *testing.T) {
	ctx := needQemuImg(t)
	p := filepath.Join(t.TempDir(), "c.qcow2")
	mustRun(t, ctx, "create", "-q", "-f", "qcow2", p, "64M")
	if err := Check(ctx, p); err != nil {
		t.Fatal(err)
	}
	// Zero the refcount of cluster 0 (the header): qemu-img check then sees a
	// cluster in use with refcount 0, i.e. corruption.
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	if _, err := f.ReadAt(b[:], 48); err != nil { // refcount_table_offset
		t.Fatal(err)
	}
	if _, err := f.ReadAt(b[:], int64(binary.BigEndian.Uint64(b[:]))); err != nil { // first refcount block
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0, 0}, int64(binary.BigEndian.Uint64(b[:]))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	err = Check(ctx, p)
	var ce *CheckError
	if !errors.As(err, &ce) || ce.Corruptions == 0 {
		t.Fatalf("Check = %v, want corruption", err)
	}
	t.Log(err)

	raw := filepath.Join(t.TempDir(), "r.img")
	if err := os.WriteFile(raw, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Check(ctx, raw); err != nil {
		t.Errorf("raw: %v", err)
	}
}
