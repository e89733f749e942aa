// Package baseimage makes a Debian cloud image from Debian packages, so kiln
// can bake images offline and in CI without downloading an official one.
//
// The result behaves like Debian's genericcloud image: a GPT disk with a BIOS
// boot partition (14), an ESP (15) and the root filesystem (1) last so
// growpart can extend it; GRUB boots it through SeaBIOS or UEFI; cloud-init
// reads the NoCloud datasource; there are no users, no SSH host keys and an
// empty machine-id, so every instance boots unique.
package baseimage

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kiln-dev/kiln/layout"
)

// recipeVersion changes whenever the way an image is made changes outside
// customize.sh (whose bytes are part of the key anyway), so a cached image
// from an older recipe is not reused.
const recipeVersion = "3"

// DefaultMirror is Debian's own redirector.
const DefaultMirror = "http://deb.debian.org/debian"

// Packages are installed on top of mmdebstrap's apt variant. They match what
// a genericcloud image needs to boot, take cloud-init's seed, grow its root
// filesystem and serve SSH with SFTP, plus the few tools provisioners expect.
var Packages = []string{
	"linux-image-cloud-amd64", "systemd-sysv", "udev", "dbus", "cloud-init",
	"openssh-server", "sudo", "ifupdown", "isc-dhcp-client", "netbase",
	"ca-certificates", "e2fsprogs", "cloud-guest-utils", "fdisk", "curl",
	"less", "iproute2", "procps", "netcat-openbsd",
}

// suiteVersions maps Debian code names to the version kiln stores them as.
var suiteVersions = map[string]string{"bullseye": "11", "bookworm": "12", "trixie": "13"}

// Options says which image to make.
type Options struct {
	Suite  string // Debian code name, e.g. "bookworm"
	Mirror string // apt mirror URL
	Size   int64  // virtual disk size in bytes
	Output string // where to write the qcow2; a .sha256 file goes beside it
	Cache  string // folder for cached results; "" disables the cache
	Work   string // scratch folder; "" means os.TempDir()
	Log    func(format string, args ...any)
}

// Version is the Debian version of a suite ("12" for bookworm), used as the
// stored image's version.
func Version(suite string) string {
	if v, ok := suiteVersions[suite]; ok {
		return v
	}
	return suite
}

// Key fingerprints the inputs, naming the cached result.
func (o Options) Key() string {
	h := sha256.New()
	fmt.Fprintf(h, "recipe %s\nsuite %s\nmirror %s\nsize %d\npackages %s\ncustomize %x\n",
		recipeVersion, o.Suite, o.Mirror, o.Size, strings.Join(Packages, ","), sha256.Sum256(customizeScript))
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// CachedPath is where the cache keeps the image for these inputs.
func (o Options) CachedPath() string {
	return layout.Home{Cache: o.Cache}.BaseImage(o.Suite, o.Key())
}

// Result tells what Make produced.
type Result struct {
	Path   string
	SHA256 string
	Cached bool // the same inputs had been built before
}

// Requirements lists the host commands making an image needs, with the
// Debian package that provides each.
var Requirements = map[string]string{
	"mmdebstrap":   "mmdebstrap",
	"mkfs.ext4":    "e2fsprogs",
	"grub-mkimage": "grub-common",
	"qemu-img":     "qemu-utils",
}

// grubPlatforms must exist under grubDir; their Debian packages.
var grubPlatforms = map[string]string{"i386-pc": "grub-pc-bin", "x86_64-efi": "grub-efi-amd64-bin"}

// CheckHost says, in one error, what is missing to make an image here.
func CheckHost() error {
	var missing []string
	for cmd, pkg := range Requirements {
		if _, err := exec.LookPath(cmd); err != nil {
			missing = append(missing, pkg)
		}
	}
	for platform, pkg := range grubPlatforms {
		if _, err := os.Stat(filepath.Join(grubDir, platform, "boot.img")); platform == "i386-pc" && err != nil {
			missing = append(missing, pkg)
		} else if _, err := os.Stat(filepath.Join(grubDir, platform, "linux.mod")); err != nil {
			missing = append(missing, pkg)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("making a base image needs packages that are not installed: run `apt-get install %s`", strings.Join(dedupe(missing), " "))
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("making a base image needs root: mmdebstrap installs packages in a chroot and mkfs reads root-only files such as /etc/shadow; run it with sudo")
	}
	return nil
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// run executes a command under ctx and, on failure, returns an error holding
// the last lines it printed.
func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s: %w\n%s", name, err, tail(out.String(), 15))
	}
	return nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
