package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/kiln-dev/kiln/baseimage"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/qemu"
)

// doctorTools are what kiln runs, with the package that provides each and
// what it is needed for.
var doctorTools = []struct{ cmd, pkg, use string }{
	{"qemu-system-x86_64", "qemu-system-x86", "booting VMs"},
	{"qemu-img", "qemu-utils", "disks and images"},
	{"mmdebstrap", "mmdebstrap", "kiln base debian"},
	{"mkfs.ext4", "e2fsprogs", "kiln base debian"},
	{"grub-mkimage", "grub-common", "kiln base debian"},
	{"ssh", "openssh-client", "optional: ssh into a kept VM"},
}

func cmdDoctor(ctx context.Context, args []string) error {
	fs := newFlags("doctor", "doctor")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ok := true
	for _, t := range doctorTools {
		path, err := exec.LookPath(t.cmd)
		if err != nil {
			fmt.Printf("  missing  %-20s for %s: apt-get install %s\n", t.cmd, t.use, t.pkg)
			if !strings.HasPrefix(t.use, "optional") {
				ok = false
			}
			continue
		}
		fmt.Printf("  ok       %-20s %s %s\n", t.cmd, path, toolVersion(ctx, path))
	}
	if err := baseimage.CheckHost(); err != nil {
		fmt.Printf("  note     base images: %v\n", err)
	}
	a := qemu.DetectAccel()
	fmt.Printf("accelerator: %s\n", a)
	if w := qemu.AccelWarning(a); w != "" {
		fmt.Printf("  %s\n", w)
	}
	p := images.DefaultPaths()
	fmt.Printf("data: %s\ncache: %s\nruntime: %s\n", p.Data, p.Cache, p.Runtime)
	if !ok {
		return fmt.Errorf("some required tools are missing (see above)")
	}
	return nil
}

func toolVersion(ctx context.Context, path string) string {
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return "(" + strings.TrimSpace(line) + ")"
}
