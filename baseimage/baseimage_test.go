package baseimage

import (
	"encoding/binary"
	"strings"
	"testing"
)

func TestNewLayout(t *testing.T) {
	l, err := NewLayout(2 << 30)
	if err != nil {
		t.Fatal(err)
	}
	if l.BIOSOffset != 1<<20 || l.ESPOffset != 2<<20 || l.RootOffset != 66<<20 {
		t.Errorf("offsets = %+v", l)
	}
	if l.RootSize%4096 != 0 || l.RootOffset+l.RootSize > l.Size-34*512 {
		t.Errorf("root %d+%d does not fit before the backup GPT of a %d disk", l.RootOffset, l.RootSize, l.Size)
	}
	if _, err := NewLayout(100 << 20); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("a 100 MiB disk: err = %v", err)
	}
	if _, err := NewLayout(2<<30 + 1); err == nil {
		t.Error("a size that is not whole sectors was accepted")
	}
}

func TestGRUBBootPatches(t *testing.T) {
	boot := make([]byte, 512)
	for i := range boot {
		boot[i] = 0xAA
	}
	mbr := make([]byte, 512)
	mbr[446] = 0xEE // protective partition entry must survive
	mbr[510], mbr[511] = 0x55, 0xAA
	patchMBR(mbr, boot, 2048)
	if got := binary.LittleEndian.Uint64(mbr[0x5c:]); got != 2048 {
		t.Errorf("kernel sector = %d", got)
	}
	if mbr[0x66] != 0x90 || mbr[0x67] != 0x90 {
		t.Error("drive check not NOPed")
	}
	if mbr[446] != 0xEE || mbr[510] != 0x55 || mbr[440] != 0 {
		t.Error("partition table or disk signature overwritten")
	}
	core := make([]byte, 1024)
	patchCore(core, 2048)
	if got := binary.LittleEndian.Uint64(core[0x1f4:]); got != 2049 {
		t.Errorf("core blocklist start = %d", got)
	}
}

func TestKeyDependsOnInputs(t *testing.T) {
	a := Options{Suite: "bookworm", Mirror: DefaultMirror, Size: 2 << 30}
	b := a
	b.Size = 3 << 30
	if a.Key() != a.Key() || a.Key() == b.Key() {
		t.Error("the cache key must be stable and change with the inputs")
	}
	if Version("bookworm") != "12" || Version("sid") != "sid" {
		t.Error("suite versions")
	}
}

func TestGrubConfigBootsByUUID(t *testing.T) {
	cfg := grubConfig("1234-abcd", kernelCmdline)
	for _, want := range []string{"search --no-floppy --fs-uuid --set=root 1234-abcd", "linux /vmlinuz root=UUID=1234-abcd", "console=ttyS0", "initrd /initrd.img"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
}

func TestAptSources(t *testing.T) {
	s := aptSources(Options{Suite: "bookworm", Mirror: DefaultMirror})
	if !strings.Contains(s, "bookworm-updates") || !strings.Contains(s, "bookworm-security") {
		t.Errorf("sources:\n%s", s)
	}
	s = aptSources(Options{Suite: "bookworm", Mirror: "http://127.0.0.1:3142/debian"})
	if strings.Contains(s, "security") {
		t.Errorf("a private mirror got the public security archive:\n%s", s)
	}
}
