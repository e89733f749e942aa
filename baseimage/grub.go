package baseimage

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// grubDir is where Debian's grub-pc-bin and grub-efi-amd64-bin put modules.
var grubDir = "/usr/lib/grub"

// grubConfig is embedded in both GRUB images. It finds the root filesystem
// by UUID and boots the /vmlinuz and /initrd.img links Debian's kernel
// packages keep current, so kernel upgrades inside the guest keep booting
// without a grub.cfg to regenerate.
func grubConfig(rootUUID, cmdline string) string {
	return strings.Join([]string{
		"set timeout=0",
		"search --no-floppy --fs-uuid --set=root " + rootUUID,
		"linux /vmlinuz root=UUID=" + rootUUID + " " + cmdline,
		"initrd /initrd.img",
		"boot",
		"",
	}, "\n")
}

// kernelCmdline sends the console to the serial port, which kiln logs, as
// the official cloud images do.
const kernelCmdline = "ro console=tty0 console=ttyS0,115200n8 consoleblank=0 net.ifnames=0 biosdevname=0"

var grubModules = map[string][]string{
	"i386-pc":    {"biosdisk", "part_gpt", "ext2", "search", "search_fs_uuid", "linux", "echo", "test", "serial", "terminal"},
	"x86_64-efi": {"part_gpt", "ext2", "fat", "search", "search_fs_uuid", "linux", "echo", "test", "efi_gop", "serial", "terminal"},
}

// grubImage runs grub-mkimage for one platform with the embedded config.
func grubImage(ctx context.Context, work, platform, config string) ([]byte, error) {
	cfg := filepath.Join(work, "grub-"+platform+".cfg")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return nil, err
	}
	out := filepath.Join(work, "grub-"+platform+".img")
	format := platform
	args := []string{"-d", filepath.Join(grubDir, platform), "-O", format, "-o", out, "-c", cfg, "-p", "/boot/grub"}
	args = append(args, grubModules[platform]...)
	if err := run(ctx, "grub-mkimage", args...); err != nil {
		return nil, err
	}
	return os.ReadFile(out)
}

// installBIOSBoot does what grub-bios-setup does for a GPT disk with a BIOS
// boot partition, on a plain file (grub-bios-setup itself refuses files):
// boot.img's code goes into the MBR, keeping the protective partition table;
// the MBR learns where core.img starts; core.img goes into the BIOS boot
// partition and its first sector learns where the rest of it starts.
func installBIOSBoot(f *os.File, l Layout, bootImg, coreImg []byte) error {
	if len(bootImg) != 512 {
		return fmt.Errorf("boot.img is %d bytes, want 512", len(bootImg))
	}
	if int64(len(coreImg)) > l.BIOSSize {
		return fmt.Errorf("GRUB core.img is %d bytes, larger than the BIOS boot partition (%d)", len(coreImg), l.BIOSSize)
	}
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("read MBR: %w", err)
	}
	patchMBR(mbr, bootImg, uint64(l.BIOSOffset/sectorSize))
	core := append([]byte(nil), coreImg...)
	patchCore(core, uint64(l.BIOSOffset/sectorSize))
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return fmt.Errorf("write MBR: %w", err)
	}
	if _, err := f.WriteAt(core, l.BIOSOffset); err != nil {
		return fmt.Errorf("write core.img: %w", err)
	}
	return nil
}

// Offsets inside GRUB's boot.img and diskboot.img (grub/include/grub/i386/pc/boot.h).
const (
	mbrCodeSize      = 440   // boot code; the disk signature and partition table follow
	mbrKernelSector  = 0x5c  // LBA of core.img's first sector
	mbrDriveCheck    = 0x66  // a jump that trusts BIOS's boot drive only for some values
	coreBlocklistLBA = 0x1f4 // LBA of core.img's second sector, in its first sector
)

func patchMBR(mbr, bootImg []byte, coreLBA uint64) {
	copy(mbr[:mbrCodeSize], bootImg[:mbrCodeSize])
	binary.LittleEndian.PutUint64(mbr[mbrKernelSector:], coreLBA)
	mbr[mbrDriveCheck], mbr[mbrDriveCheck+1] = 0x90, 0x90
}

func patchCore(core []byte, coreLBA uint64) {
	binary.LittleEndian.PutUint64(core[coreBlocklistLBA:], coreLBA+1)
}
