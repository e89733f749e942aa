package disk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestExportSize(t *testing.T) {
	cases := []struct {
		format string
		in     int64
		want   int64
	}{
		{"vhd", 10*MiB + 512, 11 * MiB},
		{"vhd", 10*MiB + 1, 11 * MiB},
		{"vhd", 10 * MiB, 10 * MiB},
		{"vhd", MiB - 512, MiB},
		{"vhd", 30 * GiB, 30 * GiB},
		{"vhd", 30*GiB + 64*KiB, 30*GiB + MiB},
		{"vhd", 0, 0},
		{"qcow2", 10*MiB + 512, 10*MiB + 512},
		{"raw", 10*MiB + 512, 10*MiB + 512},
		{"vmdk", 10*MiB + 512, 10*MiB + 512},
		{"vhdx", 10*MiB + 512, 10*MiB + 512},
		{"vhdx", 4 * GiB, 4 * GiB},
	}
	for _, c := range cases {
		if got := ExportSize(c.format, c.in); got != c.want {
			t.Errorf("ExportSize(%q, %d) = %d, want %d", c.format, c.in, got, c.want)
		}
	}
}

func TestParseProgress(t *testing.T) {
	good := map[string]float64{
		"    (0.00/100%)":  0,
		"(12.34/100%)":     12.34,
		"  (100.00/100%) ": 100,
	}
	for in, want := range good {
		if got, ok := parseProgress(in); !ok || got != want {
			t.Errorf("parseProgress(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "(", "12.34", "(12.34/100)", "(x/100%)", "(-1.00/100%)", "(101.00/100%)", "(NaN/100%)", "Formatting 'x'"} {
		if got, ok := parseProgress(in); ok {
			t.Errorf("parseProgress(%q) = %v, want no value", in, got)
		}
	}

	// Updates split across writes, repeats and noise, as from a pipe.
	var got []float64
	w := &progressWriter{fn: func(p float64) { got = append(got, p) }, last: -1}
	stream := "    (0.00/100%)\r    (24.99/100%)\r    (74.98/100%)\r" + strings.Repeat("z", 200) +
		"\r    (100.00/100%)\r    (100.00/100%)\r\n"
	for i := 0; i < len(stream); i += 7 {
		if _, err := w.Write([]byte(stream[i:min(i+7, len(stream))])); err != nil {
			t.Fatal(err)
		}
	}
	if want := []float64{0, 24.99, 74.98, 100}; !slices.Equal(got, want) {
		t.Errorf("progress = %v, want %v", got, want)
	}
}

func TestExportBadOptions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src.qcow2") // never read: options are checked first
	cases := []struct {
		o    ExportOptions
		want string
	}{
		{ExportOptions{Format: "vhdz"}, `unknown export format "vhdz": use qcow2, raw, vmdk, vhd or vhdx`},
		{ExportOptions{}, `unknown export format "": use qcow2, raw, vmdk, vhd or vhdx`},
		{ExportOptions{Format: "vpc"}, `unknown export format "vpc"`},
		{ExportOptions{Format: "raw", Compression: "zlib"}, `compression "zlib" is for qcow2 exports only, not raw`},
		{ExportOptions{Format: "vmdk", Compression: "none"}, `compression "none" is for qcow2 exports only, not vmdk`},
		{ExportOptions{Format: "qcow2", Compression: "lz4"}, `unknown compression "lz4": use zlib, zstd or none`},
	}
	for _, c := range cases {
		sum, err := Export(ctx, src, filepath.Join(dir, "out"), c.o)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || sum != "" {
			t.Errorf("Export(%+v) = %q, %v; want error %q", c.o, sum, err, c.want)
		}
	}
	_, err := Export(ctx, src, filepath.Join(dir, "out"), ExportOptions{Format: "vhdz"})
	if want := `unknown export format "vhdz": use qcow2, raw, vmdk, vhd or vhdx`; err == nil || err.Error() != want {
		t.Errorf("unknown format: %v, want exactly %q", err, want)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}

// exportFixture is a small qcow2 overlay on a qcow2 base whose virtual size
// (10 MiB + 512 bytes) is not a whole MiB, with data in both images.
type exportFixture struct {
	base, ov string
	flat     []byte // what the guest sees through ov
}

func newExportFixture(t *testing.T, ctx context.Context) exportFixture {
	t.Helper()
	dir := t.TempDir()
	data := make([]byte, 10*MiB)
	for i := range 3 * MiB {
		data[i] = byte(i/4096 + i)
	}
	baseRaw := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(baseRaw, data, 0o600); err != nil {
		t.Fatal(err)
	}
	fx := exportFixture{base: filepath.Join(dir, "base.qcow2"), ov: filepath.Join(dir, "ov.qcow2")}
	mustRun(t, ctx, "convert", "-q", "-f", "raw", "-O", "qcow2", baseRaw, fx.base)

	// The overlay replaces 1 MiB inside the base's data and writes past the
	// base's end; the rest reads through to the base.
	fx.flat = append(data, make([]byte, 512)...)
	copy(fx.flat[2*MiB:3*MiB], bytes.Repeat([]byte{0x5a}, int(MiB)))
	copy(fx.flat[10*MiB:], bytes.Repeat([]byte{0x6b}, 512))
	if qemuIO, err := exec.LookPath("qemu-io"); err == nil {
		if err := CreateOverlay(ctx, fx.base, "qcow2", fx.ov, int64(len(fx.flat))); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, qemuIO, "-f", "qcow2",
			"-c", "write -P 0x5a 2M 1M", "-c", "write -P 0x6b 10M 512", fx.ov)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("qemu-io: %v: %s", err, out)
		}
	} else {
		// Without qemu-io the overlay holds all of the data, but it still
		// has a backing file.
		ovRaw := filepath.Join(dir, "ov.raw")
		if err := os.WriteFile(ovRaw, fx.flat, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := Convert(ctx, ovRaw, fx.ov, ConvertOptions{BackingFile: fx.base}); err != nil {
			t.Fatal(err)
		}
	}
	in, err := ReadInfo(ctx, fx.ov)
	if err != nil {
		t.Fatal(err)
	}
	if in.BackingFilename != fx.base || in.VirtualSize != 10*MiB+512 {
		t.Fatalf("overlay is not on base: %+v", in)
	}
	return fx
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// checkExport checks an exported image: its files, checksum, metadata and
// that it holds exactly fx's data.
func checkExport(t *testing.T, ctx context.Context, fx exportFixture, dst, format, sum string) Info {
	t.Helper()
	name := filepath.Base(dst)
	if got, want := dirNames(t, filepath.Dir(dst)), []string{name, name + ".sha256"}; !slices.Equal(got, want) {
		t.Errorf("files = %v, want %v", got, want)
	}
	if got := fileSHA256(t, dst); got != sum {
		t.Errorf("returned sum %s, file has %s", sum, got)
	}
	if b, err := os.ReadFile(dst + ".sha256"); err != nil || string(b) != sum+"  "+name+"\n" {
		t.Errorf("sha256 file = %q, %v", b, err)
	}

	qfmt := exportFormats[format].qemu
	var in Info
	var err error
	if format == "vhd" {
		// A fixed VHD has only a footer, so qemu-img cannot probe it.
		var out []byte
		if out, err = runQemuImg(ctx, "info", "--output=json", "-f", "vpc", dst); err == nil {
			in, err = ParseInfo(out)
		}
	} else {
		in, err = ReadInfo(ctx, dst)
	}
	if err != nil {
		t.Fatal(err)
	}
	wantSize := ExportSize(format, int64(len(fx.flat)))
	if in.Format != qfmt || in.VirtualSize != wantSize || in.BackingFilename != "" {
		t.Errorf("info = %+v, want format %s, virtual size %d, no backing file", in, qfmt, wantSize)
	}
	switch format {
	case "vmdk":
		if in.CreateType != "streamOptimized" {
			t.Errorf("vmdk create type = %q, want streamOptimized", in.CreateType)
		}
	case "vhd":
		// Fixed: all data, then the 512-byte footer.
		if st, err := os.Stat(dst); err != nil || st.Size() != wantSize+512 {
			t.Errorf("vhd is not fixed: %v, %v", st.Size(), err)
		}
	}
	if format != "vhd" { // qemu-img cannot check vpc
		if err := Check(ctx, dst); err != nil {
			t.Error(err)
		}
	}

	// Same data as the source, plus zeros where VHD grew the disk.
	back := filepath.Join(t.TempDir(), "back.raw")
	mustRun(t, ctx, "convert", "-q", "-f", qfmt, "-O", "raw", dst, back)
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(got)) != wantSize || !bytes.Equal(got[:len(fx.flat)], fx.flat) ||
		!bytes.Equal(got[len(fx.flat):], make([]byte, len(got)-len(fx.flat))) {
		t.Errorf("%s holds different data from the source", dst)
	}
	return in
}

func compressedClusters(t *testing.T, ctx context.Context, path string) int {
	t.Helper()
	out, err := runQemuImg(ctx, "check", "--output=json", path)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Compressed int `json:"compressed-clusters"`
	}
	if err := json.Unmarshal(out, &c); err != nil {
		t.Fatal(err)
	}
	return c.Compressed
}

func TestExport(t *testing.T) {
	ctx := needQemuImg(t)
	fx := newExportFixture(t, ctx)
	t.Run("formats", func(t *testing.T) { testExportFormats(t, ctx, fx) })
	t.Run("replaces", func(t *testing.T) { testExportReplaces(t, ctx, fx) })
	t.Run("failures", func(t *testing.T) { testExportFailures(t, ctx, fx) })
	t.Run("cancel", func(t *testing.T) { testExportCancel(t, ctx, fx) })
}

func testExportFormats(t *testing.T, ctx context.Context, fx exportFixture) {
	srcSums := []string{fileSHA256(t, fx.base), fileSHA256(t, fx.ov)}

	cases := []struct{ format, compression string }{
		{"qcow2", ""}, {"qcow2", "zstd"}, {"qcow2", "none"},
		{"raw", ""}, {"vmdk", ""}, {"vhd", ""}, {"vhdx", ""},
	}
	for _, c := range cases {
		t.Run(c.format+"-"+c.compression, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "disk."+c.format)
			var progress []float64
			sum, err := Export(ctx, fx.ov, dst, ExportOptions{Format: c.format, Compression: c.compression,
				Progress: func(p float64) { progress = append(progress, p) }})
			if err != nil {
				t.Fatal(err)
			}
			in := checkExport(t, ctx, fx, dst, c.format, sum)
			if len(progress) == 0 || progress[len(progress)-1] != 100 || !slices.IsSorted(progress) || progress[0] < 0 {
				t.Errorf("progress = %v", progress)
			}
			if c.format == "qcow2" {
				want := c.compression
				if want == "" || want == "none" {
					want = "zlib"
				}
				n := compressedClusters(t, ctx, dst)
				if in.Compression != want || (c.compression == "none") != (n == 0) {
					t.Errorf("compression %q: header %q, %d compressed clusters", c.compression, in.Compression, n)
				}
			}
		})
	}

	// The source chain is read, never written (VHD went through an overlay).
	if got := []string{fileSHA256(t, fx.base), fileSHA256(t, fx.ov)}; !slices.Equal(got, srcSums) {
		t.Error("export changed the source images")
	}
}

func testExportReplaces(t *testing.T, ctx context.Context, fx exportFixture) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "disk.raw")
	for p, b := range map[string]string{dst: "old image", dst + ".sha256": "old sum", dst + ".partial/junk": "x"} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Relative paths, no progress callback.
	t.Chdir(dir)
	rel, err := filepath.Rel(dir, fx.ov)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Export(ctx, rel, "disk.raw", ExportOptions{Format: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	// A folder of the user's that happens to be named like kiln's old
	// partial output is not kiln's to remove.
	if b, err := os.ReadFile(dst + ".partial/junk"); err != nil || string(b) != "x" {
		t.Errorf("the user's %s.partial/junk: %q, %v; want it untouched", dst, b, err)
	}
	os.RemoveAll(dst + ".partial")
	checkExport(t, ctx, fx, dst, "raw", sum)

	// Exporting over the source or its base would destroy them.
	before := fileSHA256(t, fx.base)
	for _, d := range []string{fx.ov, fx.base} {
		if _, err := Export(ctx, fx.ov, d, ExportOptions{Format: "raw"}); err == nil {
			t.Errorf("export onto %s: want error", d)
		}
	}
	if fileSHA256(t, fx.base) != before {
		t.Error("base changed")
	}
	if _, err := os.Stat(fx.base + ".partial"); !os.IsNotExist(err) {
		t.Errorf("partial left: %v", err)
	}
}

func testExportFailures(t *testing.T, ctx context.Context, fx exportFixture) {
	dir := t.TempDir()

	_, err := Export(ctx, fx.ov, filepath.Join(dir, "missing", "disk.vmdk"), ExportOptions{Format: "vmdk"})
	if err == nil || !strings.Contains(err.Error(), "missing does not exist") {
		t.Errorf("missing folder: %v", err)
	}
	if _, err := Export(ctx, filepath.Join(dir, "nope.qcow2"), filepath.Join(dir, "disk.raw"), ExportOptions{Format: "raw"}); err == nil {
		t.Error("missing source: want error")
	}

	// qemu-img fails after creating its output (and here after Export made
	// the resize overlay): VHD cannot hold 3 TiB. Nothing may remain.
	huge := filepath.Join(t.TempDir(), "huge.qcow2")
	mustRun(t, ctx, "create", "-q", "-f", "qcow2", huge, "3298534883840") // 3 TiB + 512
	_, err = Export(ctx, huge, filepath.Join(dir, "huge.vhd"), ExportOptions{Format: "vhd"})
	var ee *ExecError
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), "too large") {
		t.Errorf("huge vhd: %v", err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}

func testExportCancel(t *testing.T, ctx context.Context, fx exportFixture) {
	// Cancel as soon as qemu-img starts, and once it is done (while Export
	// hashes and renames).
	for _, at := range []float64{0, 100} {
		for _, format := range []string{"qcow2", "vhd"} {
			dir := t.TempDir()
			cctx, cancel := context.WithCancel(ctx)
			sum, err := Export(cctx, fx.ov, filepath.Join(dir, "disk."+format), ExportOptions{Format: format,
				Progress: func(p float64) {
					if p >= at {
						cancel()
					}
				}})
			cancel()
			if !errors.Is(err, context.Canceled) || sum != "" {
				t.Errorf("%s cancelled at %v%%: %q, %v", format, at, sum, err)
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("%s cancelled at %v%%: left %v", format, at, names)
			}
		}
	}
}
