package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kiln-dev/kiln/baseimage"
	"github.com/kiln-dev/kiln/layout"
)

// toolNeed says who needs a tool, which decides whether its absence breaks
// what this user can do.
type toolNeed int

const (
	needEveryone  toolNeed = iota // run, build, fleets
	needBaseImage                 // kiln base debian, which needs root anyway
	needOptional                  // conveniences
)

// doctorTools are what kiln runs, with the package that provides each and
// what it is needed for.
var doctorTools = []struct {
	cmd, pkg, use string
	need          toolNeed
}{
	{"qemu-system-x86_64", "qemu-system-x86", "booting VMs", needEveryone},
	{"qemu-img", "qemu-utils", "disks and images", needEveryone},
	{"mmdebstrap", "mmdebstrap", "kiln base debian", needBaseImage},
	{"mkfs.ext4", "e2fsprogs", "kiln base debian", needBaseImage},
	{"grub-mkimage", "grub-common", "kiln base debian", needBaseImage},
	{"ssh", "openssh-client", "kiln fleet ssh, and ssh into a kept VM", needOptional},
}

// sbinDirs hold system tools that are off an ordinary user's PATH on
// Debian (mkfs.ext4 is in /usr/sbin) but installed all the same.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

// findTool looks for name on PATH, then in the sbin folders.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// toolLine is doctor's verdict on one tool; broken says whether its absence
// stops something this user can do (base images need root, so a missing
// base-image tool breaks nothing for other users).
func toolLine(cmd, pkg, use string, need toolNeed, path string, found, root bool) (line string, broken bool) {
	if found {
		return fmt.Sprintf("  ok       %-20s %s", cmd, path), false
	}
	switch {
	case need == needEveryone:
		return fmt.Sprintf("  missing  %-20s needed for %s: apt-get install %s", cmd, use, pkg), true
	case need == needBaseImage && root:
		return fmt.Sprintf("  missing  %-20s needed for %s: apt-get install %s", cmd, use, pkg), true
	case need == needBaseImage:
		return fmt.Sprintf("  missing  %-20s needed only for %s, which runs as root: apt-get install %s", cmd, use, pkg), false
	}
	return fmt.Sprintf("  missing  %-20s optional, for %s: apt-get install %s", cmd, use, pkg), false
}

func cmdDoctor(ctx context.Context, args []string) error {
	fs := newFlags("doctor", "doctor [--probe]")
	fresh := fs.Bool("probe", false, "probe KVM again instead of using the verdict cached for this boot")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	root := os.Geteuid() == 0
	ok := true
	for _, t := range doctorTools {
		path, err := findTool(t.cmd)
		line, broken := toolLine(t.cmd, t.pkg, t.use, t.need, path, err == nil, root)
		if err == nil {
			line += " " + toolVersion(ctx, path)
		}
		fmt.Println(line)
		ok = ok && !broken
	}
	if err := baseimage.CheckHost(); err != nil {
		fmt.Printf("  note     base images: %v\n", err)
	}
	if _, err := findTool(qemuSystem); err == nil {
		printAccel(ctx, *fresh)
	}
	p := layout.Default()
	fmt.Printf("data: %s\ncache: %s\nruntime: %s\n", p.Data, p.Cache, p.Runtime)
	if !ok {
		return fmt.Errorf("some required tools are missing (see above)")
	}
	return nil
}

// printAccel shows what kiln would boot under and the KVM probe behind it.
func printAccel(ctx context.Context, fresh bool) {
	req, err := parseAccel("")
	if err != nil {
		fmt.Printf("accelerator: %v\n", err)
		return
	}
	sel := accelSelector()
	sel.Fresh = fresh
	c, err := sel.Choose(ctx, req.want)
	if err != nil {
		fmt.Printf("accelerator: none (%v)\n", err)
		return
	}
	fmt.Printf("accelerator: %s\n", c.Accel)
	fmt.Printf("  cpu model: %s\n", c.CPUModel())
	if req.from != "" {
		fmt.Printf("  chosen by %s\n", req.from)
	}
	if c.Note != "" {
		fmt.Printf("  %s\n", c.Note)
	}
	if r := c.Probe; r != nil {
		how := "probed now"
		if r.Cached {
			how = "cached for this boot, from " + r.At.Local().Format("15:04:05") + " (kiln doctor --probe runs it again)"
		}
		fmt.Printf("  kvm probe: %s\n", how)
		fmt.Printf("    kvm modules: %s; cpu flags: %s\n", orNone(r.Modules), orNone(r.CPUFlags))
		for _, a := range r.Attempts {
			fmt.Printf("    %s\n", a)
		}
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}

func toolVersion(ctx context.Context, path string) string {
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return "(" + strings.TrimSpace(line) + ")"
}
