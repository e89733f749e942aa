package main

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/qemu"
)

func TestRequestedAccelPrecedence(t *testing.T) {
	for _, tc := range []struct {
		flag, env string
		want      qemu.Accel
		from      string
		bad       string // part of the usage error, "" = none
	}{
		{"", "", qemu.Auto, "", ""},
		{"", "tcg", qemu.TCG, "KILN_ACCEL=tcg", ""},
		{"kvm", "tcg", qemu.KVM, "--accel kvm", ""}, // the flag wins
		{"auto", "kvm", qemu.Auto, "--accel auto", ""},
		{"TCG", "", qemu.TCG, "--accel tcg", ""},
		{"xen", "", "", "", `--accel "xen"`},
		{"", "xen", "", "", "KILN_ACCEL=xen"},
		{"tcg", "xen", qemu.TCG, "--accel tcg", ""}, // a bad env value does not matter under a flag
	} {
		r, err := requestedAccel(tc.flag, func(k string) string {
			if k == accelEnv {
				return tc.env
			}
			return ""
		})
		if tc.bad != "" {
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("flag %q env %q: %v, want a usage error naming %s", tc.flag, tc.env, err, tc.bad)
			}
			continue
		}
		if err != nil || r.want != tc.want || r.from != tc.from {
			t.Errorf("flag %q env %q: %+v, %v; want %s from %q", tc.flag, tc.env, r, err, tc.want, tc.from)
		}
	}
}

func TestDoctorToolLines(t *testing.T) {
	for _, tc := range []struct {
		need   toolNeed
		found  bool
		root   bool
		broken bool
		says   string
	}{
		{needEveryone, true, false, false, "ok"},
		{needEveryone, false, false, true, "needed for booting VMs"},
		{needBaseImage, false, false, false, "needed only for kiln base debian, which runs as root"},
		{needBaseImage, false, true, true, "needed for kiln base debian"},
		{needOptional, false, true, false, "optional"},
	} {
		use := "booting VMs"
		if tc.need == needBaseImage {
			use = "kiln base debian"
		}
		line, broken := toolLine("tool", "pkg", use, tc.need, "/usr/sbin/tool", tc.found, tc.root)
		if broken != tc.broken || !strings.Contains(line, tc.says) {
			t.Errorf("%+v: %q broken=%v", tc, line, broken)
		}
	}
}

// TestFindToolLooksInSbin: mkfs.ext4 is in /usr/sbin on Debian, off an
// ordinary user's PATH, and is still found.
func TestFindToolLooksInSbin(t *testing.T) {
	t.Setenv("PATH", "/nonexistent")
	if _, err := findTool("mkfs.ext4"); err != nil {
		if _, serr := findTool("sh"); serr == nil {
			t.Fatal("sh found with an empty PATH?")
		}
		for _, d := range sbinDirs {
			if p := d + "/mkfs.ext4"; fileExists(p) {
				t.Fatalf("%s exists but findTool missed it: %v", p, err)
			}
		}
		t.Skip("e2fsprogs is not installed here")
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
