package baseimage

import (
	"fmt"
	"os"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// Partition numbers follow Debian's official cloud images: the root comes
// first in the table but last on the disk, so growpart can extend it when the
// virtual disk is resized.
const (
	rootPart = 1
	biosPart = 14
	espPart  = 15

	sectorSize = 512
	biosStart  = 2048 // 1 MiB
	biosSize   = 2048 // 1 MiB of sectors for GRUB's core.img
	espStart   = biosStart + biosSize
	espSize    = 64 * 1024 * 2 // 64 MiB
	rootStart  = espStart + espSize
	gptReserve = 34 // backup GPT header and entries at the end
)

// Layout says where each partition lies, in bytes, on a disk of Size bytes.
type Layout struct {
	Size                 int64
	BIOSOffset, BIOSSize int64
	ESPOffset, ESPSize   int64
	RootOffset, RootSize int64
}

// NewLayout places the partitions on a disk of size bytes.
func NewLayout(size int64) (Layout, error) {
	minSize := int64(rootStart+gptReserve)*sectorSize + 512<<20
	if size < minSize {
		return Layout{}, fmt.Errorf("disk size %d MiB is too small: a base image needs at least %d MiB", size>>20, minSize>>20+1)
	}
	if size%sectorSize != 0 {
		return Layout{}, fmt.Errorf("disk size %d is not a whole number of 512-byte sectors", size)
	}
	rootEnd := size/sectorSize - gptReserve // exclusive
	// Keep the root filesystem a whole number of 4 KiB blocks.
	rootSectors := (rootEnd - rootStart) / 8 * 8
	return Layout{
		Size:       size,
		BIOSOffset: biosStart * sectorSize, BIOSSize: biosSize * sectorSize,
		ESPOffset: espStart * sectorSize, ESPSize: espSize * sectorSize,
		RootOffset: rootStart * sectorSize, RootSize: rootSectors * sectorSize,
	}, nil
}

// writePartitions creates the raw disk file with its GPT and an empty FAT32
// ESP, then calls fillESP to put files on the ESP.
func writePartitions(path string, l Layout, fillESP func(filesystem.FileSystem) error) error {
	_ = os.Remove(path)
	d, err := diskfs.Create(path, l.Size, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer d.Close()
	sec := func(b int64) uint64 { return uint64(b / sectorSize) }
	table := &gpt.Table{
		LogicalSectorSize:  sectorSize,
		PhysicalSectorSize: sectorSize,
		ProtectiveMBR:      true,
		Partitions: []*gpt.Partition{
			{Index: rootPart, Start: sec(l.RootOffset), End: sec(l.RootOffset+l.RootSize) - 1, Type: gpt.LinuxRootX86_64, Name: "root"},
			{Index: biosPart, Start: sec(l.BIOSOffset), End: sec(l.BIOSOffset+l.BIOSSize) - 1, Type: gpt.BIOSBoot, Name: "bios"},
			{Index: espPart, Start: sec(l.ESPOffset), End: sec(l.ESPOffset+l.ESPSize) - 1, Type: gpt.EFISystemPartition, Name: "esp"},
		},
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("write partition table: %w", err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: espPart, FSType: filesystem.TypeFat32, VolumeLabel: "UEFI"})
	if err != nil {
		return fmt.Errorf("create ESP: %w", err)
	}
	return fillESP(fs)
}
