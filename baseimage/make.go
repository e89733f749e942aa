package baseimage

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/filesystem"

	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/fileutil"
)

// Make builds the image, or reuses the cached one for the same inputs, and
// writes it to o.Output with a .sha256 file beside it. Nothing is written to
// o.Output until the image is complete.
func Make(ctx context.Context, o Options) (Result, error) {
	if o.Suite == "" {
		o.Suite = "bookworm"
	}
	if o.Mirror == "" {
		o.Mirror = DefaultMirror
	}
	if o.Size == 0 {
		o.Size = 2 << 30
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if _, err := NewLayout(o.Size); err != nil {
		return Result{}, err
	}
	if o.Cache != "" {
		if sum, err := readChecksumFile(o.CachedPath()); err == nil {
			if o.Output == "" || o.Output == o.CachedPath() {
				return Result{Path: o.CachedPath(), SHA256: sum, Cached: true}, nil
			}
			if err := publish(o.CachedPath(), o.Output, sum); err != nil {
				return Result{}, err
			}
			return Result{Path: o.Output, SHA256: sum, Cached: true}, nil
		}
	}
	if err := CheckHost(); err != nil {
		return Result{}, err
	}
	work, err := os.MkdirTemp(o.Work, "kiln-base-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(work)

	qcow, err := makeImage(ctx, o, work)
	if err != nil {
		return Result{}, err
	}
	sum, err := fileSHA256(qcow)
	if err != nil {
		return Result{}, err
	}
	dest := o.Output
	if o.Cache != "" {
		if err := publish(qcow, o.CachedPath(), sum); err != nil {
			return Result{}, err
		}
		qcow = o.CachedPath()
	}
	if dest == "" {
		dest = qcow
	}
	if dest != qcow {
		if err := publish(qcow, dest, sum); err != nil {
			return Result{}, err
		}
	}
	return Result{Path: dest, SHA256: sum}, nil
}

func makeImage(ctx context.Context, o Options, work string) (string, error) {
	layout, err := NewLayout(o.Size)
	if err != nil {
		return "", err
	}
	rootUUID := newUUID()
	tree := filepath.Join(work, "tree")

	start := time.Now()
	o.Log("installing %s packages from %s (mmdebstrap)", o.Suite, o.Mirror)
	hook := filepath.Join(work, "customize.sh")
	sources := filepath.Join(work, "sources.list")
	if err := os.WriteFile(hook, customizeScript, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(sources, []byte(aptSources(o)), 0o644); err != nil {
		return "", err
	}
	err = run(ctx, "mmdebstrap", "--variant=apt", "--mode=root", "--format=directory",
		"--include="+strings.Join(Packages, ","),
		"--setup-hook=mkdir -p \"$1/etc/initramfs-tools/conf.d\" && echo FSTYPE=ext4 > \"$1/etc/initramfs-tools/conf.d/kiln-fstype\"",
		"--customize-hook=sh "+hook+" \"$1\" "+rootUUID+" "+sources,
		o.Suite, tree, o.Mirror)
	if err != nil {
		return "", fmt.Errorf("install packages: %w", err)
	}
	o.Log("packages installed in %s", time.Since(start).Round(time.Second))

	start = time.Now()
	raw := filepath.Join(work, "disk.raw")
	efi, err := grubImage(ctx, work, "x86_64-efi", grubConfig(rootUUID, kernelCmdline))
	if err != nil {
		return "", err
	}
	core, err := grubImage(ctx, work, "i386-pc", grubConfig(rootUUID, kernelCmdline))
	if err != nil {
		return "", err
	}
	err = writePartitions(raw, layout, func(fs filesystem.FileSystem) error {
		if err := fs.Mkdir("/EFI/BOOT"); err != nil {
			return err
		}
		f, err := fs.OpenFile("/EFI/BOOT/BOOTX64.EFI", os.O_CREATE|os.O_RDWR)
		if err != nil {
			return err
		}
		if _, err := f.Write(efi); err != nil {
			return err
		}
		return f.Close()
	})
	if err != nil {
		return "", fmt.Errorf("partition disk: %w", err)
	}
	err = run(ctx, "mkfs.ext4", "-F", "-q", "-d", tree, "-U", rootUUID, "-L", "root",
		"-E", fmt.Sprintf("offset=%d", layout.RootOffset), raw, fmt.Sprintf("%dk", layout.RootSize/1024))
	if err != nil {
		return "", fmt.Errorf("write root filesystem: %w", err)
	}
	bootImg, err := os.ReadFile(filepath.Join(grubDir, "i386-pc", "boot.img"))
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(raw, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	err = installBIOSBoot(f, layout, bootImg, core)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("install GRUB: %w", err)
	}
	o.Log("disk laid out in %s", time.Since(start).Round(time.Second))

	start = time.Now()
	qcow := filepath.Join(work, "disk.qcow2")
	if err := run(ctx, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd", raw, qcow); err != nil {
		return "", fmt.Errorf("compress image: %w", err)
	}
	o.Log("compressed in %s", time.Since(start).Round(time.Second))
	return qcow, nil
}

// customizeScript runs in mmdebstrap's customize hook as
// `sh customize.sh TREE ROOT_UUID SOURCES_FILE`. It makes the tree a generic
// cloud image: boot configuration, cloud-init limited to NoCloud, and
// nothing that belongs to one machine.
//
//go:embed customize.sh
var customizeScript []byte

// aptSources is the guest's /etc/apt/sources.list.
func aptSources(o Options) string {
	sources := fmt.Sprintf("deb %s %s main\n", o.Mirror, o.Suite)
	if o.Suite == "sid" || o.Suite == "unstable" {
		return sources
	}
	sources += fmt.Sprintf("deb %s %s-updates main\n", o.Mirror, o.Suite)
	if o.Mirror == DefaultMirror {
		sources += fmt.Sprintf("deb http://deb.debian.org/debian-security %s-security main\n", o.Suite)
	}
	return sources
}

// publish copies src to dst through a temporary name, then writes dst.sha256.
func publish(src, dst, sum string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := fileutil.CopyAtomic(src, dst, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	line := fmt.Sprintf("%s  %s\n", sum, filepath.Base(dst))
	return writeAtomic(dst+".sha256", []byte(line))
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".partial"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readChecksumFile returns the checksum recorded beside path, if both exist.
func readChecksumFile(path string) (string, error) {
	if _, err := os.Stat(path); err != nil {
		return "", err
	}
	b, err := os.ReadFile(path + ".sha256")
	if err != nil {
		return "", err
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 || len(fields[0]) != 64 {
		return "", errors.New("malformed checksum file " + path + ".sha256")
	}
	return fields[0], nil
}

func fileSHA256(path string) (string, error) {
	d, err := images.FileDigest(path)
	return strings.TrimPrefix(d, "sha256:"), err
}
