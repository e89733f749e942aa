package libvirthost

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

func TestParseURI(t *testing.T) {
	for _, tt := range []struct{ uri, err string }{
		{"qemu:///system", ""},
		{"qemu+unix:///system?socket=/run/x.sock", ""},
		{"qemu+ssh://root@lab1/system", ""},
		{"qemu+ssh://root@lab1:2222/system?keyfile=/k", ""},
		{"qemu+tcp://10.0.0.2:16509/system", ""},
		{"qemu+tls://lab1/system", ""},
		{"qemu:///session", "end the URI with /system"},
		{"qemu+ssh:///system", "needs a host name"},
		{"qemu://lab1/system", "is local"},
		{"xen:///system", "scheme xen is not one of"},
		{"lab1", "not a URI"},
		{"", "not a URI"},
	} {
		_, err := ParseURI(tt.uri)
		if (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ParseURI(%q) = %v, want %q", tt.uri, err, tt.err)
		}
	}
}

func TestHostsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", HostsFile)
	hs, err := LoadHosts(path)
	if err != nil || len(hs.Hosts) != 0 {
		t.Fatalf("missing file: %v, %v", hs, err)
	}
	if err := hs.Add(Host{Name: "lab1", URI: "qemu+ssh://root@lab1/system"}); err != nil {
		t.Fatal(err)
	}
	if err := hs.Add(Host{Name: "lab2", URI: "qemu+tcp://lab2/system"}); err != nil {
		t.Fatal(err)
	}
	if err := hs.Add(Host{Name: "lab1", URI: "qemu:///system"}); err == nil || !strings.Contains(err.Error(), "already known as qemu+ssh://root@lab1/system") {
		t.Errorf("a taken name: %v", err)
	}
	if err := hs.Add(Host{Name: "LAB 3", URI: "qemu:///system"}); err == nil {
		t.Error("a bad name was added")
	}
	again, err := LoadHosts(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again.Hosts, hs.Hosts) || len(again.Hosts) != 2 {
		t.Errorf("reloaded %v, want %v", again.Hosts, hs.Hosts)
	}
	if err := again.Remove("lab1"); err != nil {
		t.Fatal(err)
	}
	if err := again.Remove("lab1"); err == nil {
		t.Error("removing a missing host succeeded")
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("hosts file mode: %v %v", st, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left beside the hosts file: %v", entries)
	}

	// A damaged file is refused, named, and left as it is.
	if err := os.WriteFile(path, []byte(`{"version":1,"hosts":[{"name":"x","uri":"http://x/system"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadHosts(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("bad URI in file: %v", err)
	}
	if err := os.WriteFile(path, []byte(`{"version":2}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadHosts(path); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("newer file: %v", err)
	}
}

func TestLayerVolume(t *testing.T) {
	hex := strings.Repeat("0a", 32)
	if got, err := LayerVolume("sha256:" + hex); err != nil || got != hex {
		t.Errorf("LayerVolume = %q, %v", got, err)
	}
	for _, bad := range []string{hex, "sha256:" + hex[:62], "sha256:" + strings.ToUpper(hex), "sha256:../" + hex[3:], "sha512:" + hex} {
		if _, err := LayerVolume(bad); err == nil {
			t.Errorf("LayerVolume(%q) accepted", bad)
		}
	}
}

// capsXML is the shape of `virsh capabilities`, cut to what Info reads.
func capsXML(domains ...string) string {
	var b strings.Builder
	b.WriteString(`<capabilities><host><cpu><arch>x86_64</arch></cpu></host>
<guest><os_type>hvm</os_type><arch name='i686'><machine>pc-i440fx-7.2</machine><domain type='qemu'/><domain type='kvm'/></arch></guest>
<guest><os_type>hvm</os_type><arch name='x86_64'><wordsize>64</wordsize>
<machine maxCpus='255'>pc-i440fx-7.2</machine><machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine><machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine>`)
	for _, d := range domains {
		b.WriteString(`<domain type='` + d + `'/>`)
	}
	b.WriteString(`</arch></guest></capabilities>`)
	return b.String()
}

func TestAccelFromCapabilities(t *testing.T) {
	for _, tt := range []struct {
		domains           []string
		accel, domainType string
		err               string
	}{
		{[]string{"qemu"}, "tcg", "qemu", ""},
		{[]string{"qemu", "kvm"}, "kvm", "kvm", ""},
		{[]string{"kvm", "qemu"}, "kvm", "kvm", ""},
		// Only the i686 guest offers KVM: the host's own architecture decides.
		{nil, "", "", "offers no hvm guest for x86_64"},
	} {
		var in Info
		err := in.fromCaps(capsXML(tt.domains...))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%v: error %v, want %q", tt.domains, err, tt.err)
			}
			continue
		}
		if err != nil || in.Accel != tt.accel || in.DomainType != tt.domainType {
			t.Errorf("%v: %s/%s, %v; want %s/%s", tt.domains, in.Accel, in.DomainType, err, tt.accel, tt.domainType)
		}
		if !in.HasMachine("pc") || !in.HasMachine("pc-q35-7.2") || in.HasMachine("virt") {
			t.Errorf("machines %v", in.Machines)
		}
	}
}

func TestDomainXMLReadBack(t *testing.T) {
	spec := DomainSpec{
		Meta: Metadata{
			Fleet: "web", Instance: "web-3", Version: "hello:1.1.0", Digest: "sha256:" + strings.Repeat("1", 64),
			Address: "127.0.0.1", Forwards: []Forward{{Guest: 22, Host: 40022}, {Guest: 8080, Host: 40080}},
		},
		DomainType: "qemu", Machine: "pc", CPUs: 2, MemoryMiB: 512,
		Disk: "/pool/kiln-web-3.qcow2", Seed: "/pool/kiln-web-3-seed.iso", SerialLog: "/pool/kiln-web-3-serial.log",
		MAC: "52:54:00:ab:cd:ef",
	}
	x, err := DomainXML(spec)
	if err != nil {
		t.Fatal(err)
	}
	var d libvirtxml.Domain
	if err := d.Unmarshal(x); err != nil {
		t.Fatal(err)
	}
	if d.Name != "kiln-web-3" || d.Type != "qemu" || d.OS.Type.Machine != "pc" || d.VCPU.Value != 2 || d.Memory.Value != 512 || d.Memory.Unit != "MiB" {
		t.Errorf("domain %s type %s machine %s vcpu %d memory %d %s", d.Name, d.Type, d.OS.Type.Machine, d.VCPU.Value, d.Memory.Value, d.Memory.Unit)
	}
	if d.Features == nil || d.Features.ACPI == nil {
		t.Error("no ACPI: the guest could not be powered off gracefully")
	}
	disks := d.Devices.Disks
	if len(disks) != 2 {
		t.Fatalf("%d disks", len(disks))
	}
	if disks[0].Source.File.File != spec.Disk || disks[0].Driver.Type != "qcow2" || disks[0].Target.Bus != "virtio" || disks[0].ReadOnly != nil {
		t.Errorf("system disk %+v", disks[0])
	}
	if disks[1].Source.File.File != spec.Seed || disks[1].Driver.Type != "raw" || disks[1].ReadOnly == nil {
		t.Errorf("seed disk must be read-only raw: %+v", disks[1])
	}
	if len(d.Devices.Interfaces) != 0 {
		t.Errorf("libvirt interfaces %v: the NIC is kiln's own, on QEMU's command line", d.Devices.Interfaces)
	}
	var args []string
	for _, a := range d.QEMUCommandline.Args {
		args = append(args, a.Value)
	}
	want := []string{
		"-netdev", "user,id=kilnnet0,hostfwd=tcp:127.0.0.1:40022-:22,hostfwd=tcp:127.0.0.1:40080-:8080",
		"-device", "virtio-net-pci,netdev=kilnnet0,mac=52:54:00:ab:cd:ef,bus=pci.0,addr=0x10",
	}
	if !slices.Equal(args, want) {
		t.Errorf("QEMU args\n%q\nwant\n%q", args, want)
	}
	if d.Devices.Serials[0].Source.File.Path != spec.SerialLog {
		t.Errorf("serial %+v", d.Devices.Serials[0].Source)
	}
	meta, ok, err := ParseMetadata(x)
	if err != nil || !ok {
		t.Fatalf("metadata: %v %v", ok, err)
	}
	if meta.Fleet != "web" || meta.Instance != "web-3" || meta.Version != "hello:1.1.0" || meta.Digest != spec.Meta.Digest || !slices.Equal(meta.Forwards, spec.Meta.Forwards) || meta.Address != "127.0.0.1" {
		t.Errorf("metadata read back %+v", meta)
	}
	if _, ok, _ := ParseMetadata(`<domain type='kvm'><name>not-kiln</name></domain>`); ok {
		t.Error("a domain kiln did not make has kiln metadata")
	}

	q35 := spec
	q35.Machine = "q35"
	x, _ = DomainXML(q35)
	if !strings.Contains(x, "bus=pcie.0") {
		t.Error("q35's NIC must sit on pcie.0")
	}
	for _, bad := range []func(*DomainSpec){
		func(s *DomainSpec) { s.DomainType = "xen" },
		func(s *DomainSpec) { s.MAC = "00:11:22:33:44:55" },
		func(s *DomainSpec) { s.Machine = "" },
		func(s *DomainSpec) { s.Meta.Forwards[0].Host = 70000 },
		func(s *DomainSpec) { s.Meta.Address = "" },
	} {
		s := spec
		s.Meta.Forwards = slices.Clone(spec.Meta.Forwards)
		bad(&s)
		if _, err := DomainXML(s); err == nil {
			t.Errorf("DomainXML accepted %+v", s)
		}
	}
	if !macRE.MatchString(NewMAC()) {
		t.Error("NewMAC is not in 52:54:00")
	}
}
