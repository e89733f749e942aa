// Package qemu runs one QEMU virtual machine: it builds the command line,
// starts qemu-system-x86_64 with collision-free localhost port forwards,
// talks QMP to it, and stops it without leaving processes behind.
package qemu

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kiln-dev/kiln/layout"
)

// Forward asks for a host TCP port on 127.0.0.1 that reaches GuestPort.
type Forward struct {
	HostPort  int // 0 = pick a free one
	GuestPort int
}

// Config describes one VM.
type Config struct {
	Name       string // shown in the process title (-name)
	Dir        string // run folder (exists, 0700): qmp.sock, serial.log, qemu.pid go here
	Disk       string // disk image path; "" = no disk (only useful for tests)
	DiskFormat string // "qcow2" (default) or "raw"
	Seed       string // cloud-init seed ISO path, optional
	CPUs       int    // default 2
	MemoryMiB  int    // default 1024
	Accel      Accel  // required: see Selector.Choose
	CPU        string // -cpu; "" = host under KVM and HVF, max under TCG
	Forwards   []Forward
	// Firmware is "" for BIOS (SeaBIOS), else an OVMF file for UEFI. A
	// split build (name containing "CODE", e.g. OVMF_CODE_4M.fd) is mapped
	// read-only and gets a private copy of the matching VARS file
	// (OVMF_VARS_4M.fd next to it) in Dir as efivars.fd, so boot entries
	// persist per VM; any other file (e.g. OVMF.fd) is passed as -bios.
	Firmware  string
	Binary    string // "" = qemu-system-x86_64 from PATH
	ExtraArgs []string

	// SerialLog is where the guest's serial console goes; "" means
	// Dir/serial.log. Callers put it elsewhere to keep it after Dir is gone.
	SerialLog string

	// pickPorts overrides the random host-port chooser (tests force
	// collisions with it).
	pickPorts func(n int, avoid []int) []int
}

func (c Config) withDefaults() Config {
	if c.DiskFormat == "" {
		c.DiskFormat = "qcow2"
	}
	if c.CPUs <= 0 {
		c.CPUs = 2
	}
	if c.MemoryMiB <= 0 {
		c.MemoryMiB = 1024
	}
	return c
}

// tbSizeMiB is the TCG translation cache for a guest of memMiB: a quarter
// of its memory, from 64 MiB to 256 MiB. Code translated once is reused
// from it; a guest running more code than fits is translated again.
func tbSizeMiB(memMiB int) int { return min(max(memMiB/4, 64), 256) }

// optEscape escapes a value inside a QEMU -opt list, where a comma ends the
// value unless doubled.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// splitFirmware reports whether fw is a split OVMF CODE file, and the VARS
// template that goes with it.
func splitFirmware(fw string) (vars string, split bool) {
	base := filepath.Base(fw)
	if !strings.Contains(base, "CODE") {
		return "", false
	}
	return filepath.Join(filepath.Dir(fw), strings.Replace(base, "CODE", "VARS", 1)), true
}

// Argv is the full QEMU command line (without the binary) for c, with
// hostPorts[i] used as the host port of c.Forwards[i] (a missing or zero
// entry falls back to Forwards[i].HostPort). It is pure: Start resolves
// ports before calling it.
func Argv(c Config, hostPorts []int) []string {
	c = c.withDefaults()
	var a []string
	add := func(s ...string) { a = append(a, s...) }

	if c.Name != "" {
		add("-name", optEscape(c.Name))
	}
	secure := strings.Contains(filepath.Base(c.Firmware), "secboot")
	add(platformArgs(c)...)
	add("-smp", strconv.Itoa(c.CPUs), "-m", strconv.Itoa(c.MemoryMiB))
	add("-nodefaults", "-no-user-config", "-display", "none")

	if c.Firmware != "" {
		if _, split := splitFirmware(c.Firmware); split {
			if secure {
				add("-global", "driver=cfi.pflash01,property=secure,value=on")
			}
			add("-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+optEscape(c.Firmware))
			add("-drive", "if=pflash,format=raw,unit=1,file="+optEscape(layout.VM(c.Dir).EFIVars()))
		} else {
			add("-bios", c.Firmware)
		}
	}

	if c.Disk != "" {
		// discard/detect-zeroes let fstrim in the guest free host blocks, so
		// images stay small. writeback (not unsafe) so guest flushes reach the
		// qcow2 metadata: a VM that has to be killed keeps a consistent image.
		add("-drive", "file="+optEscape(c.Disk)+",format="+c.DiskFormat+
			",if=virtio,cache=writeback,discard=unmap,detect-zeroes=unmap")
	}
	if c.Seed != "" {
		// virtio, not ide: Debian's cloud kernel has no AHCI/IDE driver, so an
		// ide cdrom on q35 is invisible to cloud-init.
		add("-drive", "file="+optEscape(c.Seed)+",if=virtio,media=cdrom,readonly=on,format=raw")
	}

	netdev := "user,id=net0"
	for i, f := range c.Forwards {
		hp := f.HostPort
		if i < len(hostPorts) && hostPorts[i] != 0 {
			hp = hostPorts[i]
		}
		// 127.0.0.1 only: the guest's sshd must not be reachable from the LAN.
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", hp, f.GuestPort)
	}
	add("-netdev", netdev, "-device", "virtio-net-pci,netdev=net0")
	add("-device", "virtio-rng-pci") // entropy for sshd key generation at first boot
	// A balloon for its free page reporting: the guest tells QEMU which
	// large free blocks it holds and QEMU drops them, so the host does not
	// keep a booted guest's freed memory, a saved state leaves most of it
	// out, and a resumed fleet instance can give back what loading the
	// state made resident (it frees its memory again: see the instance
	// package). kiln never inflates it; deflate-on-oom would give the
	// guest its memory back first if anything did.
	add("-device", "virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=on")

	// -chardev rather than "-serial file:" / "-qmp unix:" so paths with
	// commas are escaped the same way everywhere.
	add("-chardev", "file,id=serial0,path="+optEscape(c.serialLog()),
		"-serial", "chardev:serial0")
	add("-chardev", "socket,id=qmp0,path="+optEscape(layout.VM(c.Dir).QMP())+",server=on,wait=off",
		"-mon", "chardev=qmp0,mode=control")
	add("-pidfile", layout.VM(c.Dir).Pid())
	add(c.ExtraArgs...)
	return a
}

func (c Config) serialLog() string {
	if c.SerialLog != "" {
		return c.SerialLog
	}
	return layout.VM(c.Dir).Serial()
}
