package qemu

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// pairs turns argv into "flag value" strings so tests can look for whole
// options without caring about order.
func pairs(argv []string) []string {
	var out []string
	for i := 0; i < len(argv); i++ {
		if strings.HasPrefix(argv[i], "-") && i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-") {
			out = append(out, argv[i]+" "+argv[i+1])
			i++
		} else {
			out = append(out, argv[i])
		}
	}
	return out
}

func wantAll(t *testing.T, argv []string, want ...string) {
	t.Helper()
	p := pairs(argv)
	for _, w := range want {
		if !slices.Contains(p, w) {
			t.Errorf("argv lacks %q\nargv: %q", w, argv)
		}
	}
}

func TestArgvTCG(t *testing.T) {
	c := Config{
		Name:     "web,1",
		Dir:      "/run/kiln/web",
		Disk:     "/img/disk.qcow2",
		Seed:     "/run/kiln/web/seed.iso",
		Accel:    TCG,
		Forwards: []Forward{{GuestPort: 22}, {HostPort: 8080, GuestPort: 80}},
	}
	argv := Argv(c, []int{23456, 0})
	wantAll(t, argv,
		"-name web,,1",
		"-machine q35",
		"-accel tcg,thread=multi,tb-size=256",
		"-cpu max",
		"-smp 2",
		"-m 1024",
		"-nodefaults",
		"-no-user-config",
		"-display none",
		"-drive file=/img/disk.qcow2,format=qcow2,if=virtio,cache=writeback,discard=unmap,detect-zeroes=unmap",
		"-drive file=/run/kiln/web/seed.iso,if=virtio,media=cdrom,readonly=on,format=raw",
		"-netdev user,id=net0,hostfwd=tcp:127.0.0.1:23456-:22,hostfwd=tcp:127.0.0.1:8080-:80",
		"-device virtio-net-pci,netdev=net0",
		"-device virtio-rng-pci",
		"-chardev file,id=serial0,path=/run/kiln/web/serial.log",
		"-serial chardev:serial0",
		"-chardev socket,id=qmp0,path=/run/kiln/web/qmp.sock,server=on,wait=off",
		"-mon chardev=qmp0,mode=control",
		"-pidfile /run/kiln/web/qemu.pid",
	)
	if slices.Contains(argv, "-bios") || strings.Contains(strings.Join(argv, " "), "pflash") {
		t.Errorf("BIOS boot should not pass firmware: %q", argv)
	}
	// The disk must come before the seed so it is /dev/vda.
	j := strings.Join(argv, " ")
	if strings.Index(j, "disk.qcow2") > strings.Index(j, "seed.iso") {
		t.Errorf("seed before disk: %s", j)
	}
}

func TestTBSize(t *testing.T) {
	for _, c := range []struct{ mem, want int }{{128, 64}, {512, 128}, {1024, 256}, {8192, 256}} {
		if got := tbSizeMiB(c.mem); got != c.want {
			t.Errorf("tbSizeMiB(%d) = %d, want %d", c.mem, got, c.want)
		}
	}
	argv := strings.Join(Argv(Config{Dir: "/r", Accel: TCG, MemoryMiB: 512}, nil), " ")
	if !strings.Contains(argv, "-accel tcg,thread=multi,tb-size=128 ") {
		t.Errorf("a 512 MiB guest's argv: %s", argv)
	}
}

func TestArgvKVM(t *testing.T) {
	c := Config{
		Dir:        "/r",
		Disk:       "/d.raw",
		DiskFormat: "raw",
		CPUs:       4,
		MemoryMiB:  4096,
		Accel:      KVM,
		Forwards:   []Forward{{GuestPort: 22}},
		Firmware:   "/usr/share/OVMF/OVMF_CODE_4M.fd",
		ExtraArgs:  []string{"-S"},
	}
	argv := Argv(c, []int{30000})
	wantAll(t, argv,
		"-machine q35",
		"-accel kvm",
		"-cpu host",
		"-smp 4",
		"-m 4096",
		"-drive file=/d.raw,format=raw,if=virtio,cache=writeback,discard=unmap,detect-zeroes=unmap",
		"-netdev user,id=net0,hostfwd=tcp:127.0.0.1:30000-:22",
		"-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
		"-drive if=pflash,format=raw,unit=1,file=/r/efivars.fd",
	)
	if argv[len(argv)-1] != "-S" {
		t.Errorf("ExtraArgs not last: %q", argv)
	}
	if j := strings.Join(argv, " "); strings.Contains(j, "seed") || strings.Contains(j, "tcg") {
		t.Errorf("unexpected seed or tcg: %s", j)
	}

	c.Firmware = "/usr/share/ovmf/OVMF.fd"
	c.Accel = HVF
	wantAll(t, Argv(c, nil), "-bios /usr/share/ovmf/OVMF.fd", "-accel hvf", "-cpu host",
		"-netdev user,id=net0,hostfwd=tcp:127.0.0.1:0-:22")

	c.Firmware = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	wantAll(t, Argv(c, nil), "-machine q35,smm=on", "-global driver=cfi.pflash01,property=secure,value=on")
	if v, ok := splitFirmware(c.Firmware); !ok || v != "/usr/share/OVMF/OVMF_VARS_4M.secboot.fd" {
		t.Errorf("splitFirmware = %q, %v", v, ok)
	}
}

func TestArgvCPUModel(t *testing.T) {
	c := Config{Dir: "/r", Accel: KVM, CPU: "host,-arch-capabilities"}
	wantAll(t, Argv(c, nil), "-accel kvm", "-cpu host,-arch-capabilities")
	c.Accel, c.CPU = TCG, ""
	wantAll(t, Argv(c, nil), "-cpu max")
}

func TestPickPorts(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		avoid := pickPorts(r, 50, nil)
		got := pickPorts(r, 20, avoid)
		if len(got) != 20 {
			t.Fatalf("got %d ports", len(got))
		}
		seen := map[int]bool{}
		for _, p := range got {
			if p < portMin || p > portMax || seen[p] || slices.Contains(avoid, p) {
				t.Fatalf("bad port %d in %v (avoid %v)", p, got, avoid)
			}
			seen[p] = true
		}
	}
	if len(randomPorts(0, nil)) != 0 {
		t.Error("want no ports")
	}
}

func TestResolvePorts(t *testing.T) {
	fw := []Forward{{GuestPort: 22}, {HostPort: 8080, GuestPort: 80}, {GuestPort: 443}}
	var gotAvoid []int
	pick := func(n int, avoid []int) []int {
		gotAvoid = avoid
		return []int{21000, 21001}[:n]
	}
	all, picked := resolvePorts(fw, pick, []int{25000})
	if !slices.Equal(all, []int{21000, 8080, 21001}) || !slices.Equal(picked, []int{21000, 21001}) {
		t.Errorf("all %v picked %v", all, picked)
	}
	if !slices.Contains(gotAvoid, 25000) || !slices.Contains(gotAvoid, 8080) {
		t.Errorf("avoid %v should hold failed and fixed ports", gotAvoid)
	}
}

func TestFailedForwardPort(t *testing.T) {
	// Captured from QEMU 7.2 with the port already bound.
	msg := "qemu-system-x86_64: -netdev user,id=net0,hostfwd=tcp:127.0.0.1:34567-:22: Could not set up host forwarding rule 'tcp:127.0.0.1:34567-:22'\n"
	if p, ok := failedForwardPort(msg); !ok || p != 34567 {
		t.Errorf("got %d, %v", p, ok)
	}
	if p, ok := failedForwardPort("Could not set up host forwarding rule 'weird'"); !ok || p != 0 {
		t.Errorf("unparseable: got %d, %v", p, ok)
	}
	if _, ok := failedForwardPort("qemu-system-x86_64: -drive file=x: Could not open 'x'"); ok {
		t.Error("false positive")
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 10}
	b.Write([]byte("0123456789abc"))
	b.Write([]byte("de"))
	if got := b.String(); got != "56789abcde" {
		t.Errorf("got %q", got)
	}
}
