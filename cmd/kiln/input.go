package main

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/kiln-dev/kiln/disk"
)

// needTools checks that the programs a command runs are installed before it
// makes anything, so a missing QEMU is one line naming the package to
// install rather than a failure halfway through a boot.
func needTools(names ...string) error {
	var missing, pkgs []string
	for _, n := range names {
		if _, err := exec.LookPath(n); err == nil {
			continue
		}
		missing = append(missing, n)
		for _, t := range doctorTools {
			if t.cmd == n {
				pkgs = append(pkgs, t.pkg)
			}
		}
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%s is not installed (not found in PATH): install it with `sudo apt-get install %s`", missing[0], strings.Join(pkgs, " "))
	}
	return fmt.Errorf("%s are not installed (not found in PATH): install them with `sudo apt-get install %s`", strings.Join(missing, " and "), strings.Join(pkgs, " "))
}

// Programs commands need.
const (
	qemuSystem = "qemu-system-x86_64"
	qemuImg    = "qemu-img"
)

// parseSizeFlag reads a size flag such as --disk-size 8G. A bare number is
// refused rather than read as bytes: "--disk-size 8" means 8G to its writer,
// and "--memory 2048" means 2048M.
func parseSizeFlag(flag, value, example string) (int64, error) {
	n, err := disk.ParseSize(value)
	if err != nil {
		return 0, usageError{flag + ": " + err.Error()}
	}
	if n <= 0 {
		return 0, usageError{fmt.Sprintf("%s %s: give a size above zero, e.g. %s", flag, value, example)}
	}
	if !disk.HasUnit(value) {
		t := strings.TrimSpace(value)
		return 0, usageError{fmt.Sprintf("%s %s needs a unit: write e.g. %sM or %sG (K, M, G or T; powers of 1024)", flag, value, t, t)}
	}
	return n, nil
}

// parseMemoryFlag reads --memory: a whole number of MiB, at least 1M, as
// a template's memory is.
func parseMemoryFlag(value string) (int, error) {
	n, err := parseSizeFlag("--memory", value, "1G")
	if err != nil {
		return 0, err
	}
	if n < disk.MiB || n%disk.MiB != 0 {
		return 0, usageError{fmt.Sprintf("--memory %s: give a whole number of MiB, at least 1M, e.g. 512M or 1G", value)}
	}
	return int(n / disk.MiB), nil
}
