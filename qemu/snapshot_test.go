package qemu

import (
	"slices"
	"strings"
	"testing"
)

// ShapeArgs keeps what a snapshot depends on and leaves out what differs
// between the VM that saved it and the one that resumes it.
func TestShapeArgs(t *testing.T) {
	c := Config{Name: "a", Dir: "/run/one", Disk: "/run/one/disk.qcow2", Seed: "/run/one/seed.iso",
		CPUs: 2, MemoryMiB: 1024, Accel: TCG, Forwards: []Forward{{HostPort: 2222, GuestPort: 22}}}
	d := c
	d.Name, d.Dir, d.Disk, d.Seed = "b", "/run/two", "/run/two/disk.qcow2", "/run/two/seed.iso"
	d.Forwards = []Forward{{HostPort: 3333, GuestPort: 22}, {GuestPort: 8080}}
	got := ShapeArgs(c)
	if !slices.Equal(got, ShapeArgs(d)) {
		t.Errorf("names, paths and ports change the shape:\n%q\n%q", got, ShapeArgs(d))
	}
	text := strings.Join(got, " ")
	for _, want := range []string{"-machine q35", "-cpu max", "-smp 2", "-m 1024", "-accel tcg", "virtio-net-pci", "virtio-rng-pci", "media=cdrom"} {
		if !strings.Contains(text, want) {
			t.Errorf("shape lacks %q: %s", want, text)
		}
	}
	for _, leak := range []string{"/run/", "2222", "file="} {
		if strings.Contains(text, leak) {
			t.Errorf("shape holds %q: %s", leak, text)
		}
	}
	for name, change := range map[string]func(*Config){
		"cpus":     func(c *Config) { c.CPUs = 4 },
		"memory":   func(c *Config) { c.MemoryMiB = 2048 },
		"accel":    func(c *Config) { c.Accel = KVM },
		"firmware": func(c *Config) { c.Firmware = "/usr/share/OVMF/OVMF.fd" },
	} {
		e := c
		change(&e)
		if slices.Equal(ShapeArgs(e), got) {
			t.Errorf("changing %s leaves the shape as it was", name)
		}
	}
}

func TestSnapshotListed(t *testing.T) {
	table := `List of snapshots present on all disks:
ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT
--        kiln-warm          294 MiB 2026-12-01 20:00:00 00:00:55.000
`
	if !snapshotListed(table, "kiln-warm") || snapshotListed(table, "kiln") || snapshotListed("There is no snapshot available.", "kiln-warm") {
		t.Error("snapshotListed misreads HMP's table")
	}
}
