package libvirthost

import (
	"crypto/rand"
	"encoding/xml"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// MetadataNS is the XML namespace of kiln's element in a domain's
// <metadata>, which says what the domain belongs to.
const MetadataNS = "https://github.com/kiln-dev/kiln/xmlns/libvirt/1"

// DomainPrefix starts the name of every domain kiln defines.
const DomainPrefix = "kiln-"

// DomainName is the libvirt name of a fleet's instance ("web-3" →
// "kiln-web-3"), so `virsh list` shows at a glance what is kiln's and
// whose.
func DomainName(instanceID string) string { return DomainPrefix + instanceID }

// Forward is one guest TCP port reachable on the host.
type Forward struct {
	Guest int `xml:"guest,attr"`
	Host  int `xml:"host,attr"`
}

// Metadata is kiln's record in a domain's XML: enough to tell, from the host
// alone, which fleet and version a domain runs and where its ports are.
type Metadata struct {
	XMLName  xml.Name  `xml:"https://github.com/kiln-dev/kiln/xmlns/libvirt/1 instance"`
	Fleet    string    `xml:"fleet"`
	Instance string    `xml:"id"`
	Version  string    `xml:"version"`
	Digest   string    `xml:"digest"`
	Address  string    `xml:"address"` // where the forwards listen on the host
	Forwards []Forward `xml:"forward"`
}

// DomainSpec is everything a kiln domain is made of.
type DomainSpec struct {
	Meta       Metadata
	DomainType string // "kvm" or "qemu" (TCG), as the host offers
	Machine    string // QEMU machine type, e.g. "pc"
	CPUs       int
	MemoryMiB  int
	Disk       string // qcow2 overlay volume's path on the host
	Seed       string // the seed ISO's path on the host; "" = none
	SerialLog  string // the serial console's file on the host; "" = none
	MAC        string // the NIC's own MAC; NewMAC makes one
}

var macRE = regexp.MustCompile(`^52:54:00(:[0-9a-f]{2}){3}$`)

// NewMAC returns a random MAC in QEMU's locally administered 52:54:00 range.
func NewMAC() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}

// netdevID names the user-mode network in QEMU's arguments.
const netdevID = "kilnnet0"

// nicSlot is the PCI slot of the NIC kiln adds through QEMU's command line:
// libvirt hands out slots from 2 up to the devices it knows of, so kiln's
// own device takes one far above them.
const nicSlot = "0x10"

// Validate checks what would otherwise fail late, on the host.
func (s DomainSpec) Validate() error {
	switch {
	case s.Meta.Fleet == "" || s.Meta.Instance == "":
		return fmt.Errorf("domain spec: fleet and instance id are required")
	case s.DomainType != "kvm" && s.DomainType != "qemu":
		return fmt.Errorf("domain spec: domain type %q is neither kvm nor qemu", s.DomainType)
	case s.Machine == "":
		return fmt.Errorf("domain spec: no machine type")
	case s.CPUs < 1 || s.MemoryMiB < 16:
		return fmt.Errorf("domain spec: %d CPUs and %d MiB are too few", s.CPUs, s.MemoryMiB)
	case s.Disk == "":
		return fmt.Errorf("domain spec: no disk")
	case !macRE.MatchString(s.MAC):
		return fmt.Errorf("domain spec: MAC %q is not 52:54:00:xx:xx:xx", s.MAC)
	case s.Meta.Address == "" && len(s.Meta.Forwards) > 0:
		return fmt.Errorf("domain spec: forwards need an address to listen on")
	}
	for _, f := range s.Meta.Forwards {
		if f.Guest < 1 || f.Guest > 65535 || f.Host < 1 || f.Host > 65535 {
			return fmt.Errorf("domain spec: forward %d->%d is out of range", f.Host, f.Guest)
		}
	}
	return nil
}

// pciBus is the root bus QEMU names for the machine type.
func pciBus(machine string) string {
	if strings.Contains(machine, "q35") {
		return "pcie.0"
	}
	return "pci.0"
}

// NetdevArgs are QEMU's arguments for the user-mode NIC with its port
// forwards. Debian's libvirt has no passt backend, and <interface
// type='user'> cannot forward ports, so the NIC goes through
// <qemu:commandline>.
func (s DomainSpec) NetdevArgs() []string {
	netdev := "user,id=" + netdevID
	for _, f := range s.Meta.Forwards {
		netdev += fmt.Sprintf(",hostfwd=tcp:%s:%d-:%d", s.Meta.Address, f.Host, f.Guest)
	}
	return []string{
		"-netdev", netdev,
		"-device", fmt.Sprintf("virtio-net-pci,netdev=%s,mac=%s,bus=%s,addr=%s", netdevID, s.MAC, pciBus(s.Machine), nicSlot),
	}
}

// DomainXML is the libvirt domain definition for s.
func DomainXML(s DomainSpec) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	meta, err := xml.Marshal(s.Meta)
	if err != nil {
		return "", err
	}
	d := &libvirtxml.Domain{
		Type:        s.DomainType,
		Name:        DomainName(s.Meta.Instance),
		Title:       fmt.Sprintf("kiln fleet %s: %s", s.Meta.Fleet, s.Meta.Version),
		Description: "Made by kiln; removed by kiln fleet down " + s.Meta.Fleet + ".",
		Metadata:    &libvirtxml.DomainMetadata{XML: string(meta)},
		Memory:      &libvirtxml.DomainMemory{Value: uint(s.MemoryMiB), Unit: "MiB"},
		VCPU:        &libvirtxml.DomainVCPU{Value: uint(s.CPUs)},
		OS: &libvirtxml.DomainOS{
			Type:        &libvirtxml.DomainOSType{Arch: "x86_64", Machine: s.Machine, Type: "hvm"},
			BootDevices: []libvirtxml.DomainBootDevice{{Dev: "hd"}},
		},
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}},
		Clock:      &libvirtxml.DomainClock{Offset: "utc"},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Disks: []libvirtxml.DomainDisk{{
				Device: "disk",
				Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "qcow2"},
				Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: s.Disk}},
				Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"},
			}},
		},
		QEMUCommandline: &libvirtxml.DomainQEMUCommandline{},
	}
	// As on the local path: TCG emulates the most capable CPU it can, and
	// the guest gets entropy from the host.
	if s.DomainType == "qemu" {
		d.CPU = &libvirtxml.DomainCPU{Mode: "maximum"}
	}
	d.Devices.RNGs = []libvirtxml.DomainRNG{{
		Model:   "virtio",
		Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
	}}
	if s.Seed != "" {
		d.Devices.Disks = append(d.Devices.Disks, libvirtxml.DomainDisk{
			Device:   "disk",
			Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
			Source:   &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: s.Seed}},
			Target:   &libvirtxml.DomainDiskTarget{Dev: "vdb", Bus: "virtio"},
			ReadOnly: &libvirtxml.DomainDiskReadOnly{},
		})
	}
	if s.SerialLog != "" {
		d.Devices.Serials = []libvirtxml.DomainSerial{{
			Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: s.SerialLog}},
		}}
	}
	for _, a := range s.NetdevArgs() {
		d.QEMUCommandline.Args = append(d.QEMUCommandline.Args, libvirtxml.DomainQEMUCommandlineArg{Value: a})
	}
	return d.Marshal()
}

// ParseMetadata reads kiln's record from a domain's XML; ok is false for a
// domain kiln did not make.
func ParseMetadata(domainXML string) (m Metadata, ok bool, err error) {
	var d libvirtxml.Domain
	if err := d.Unmarshal(domainXML); err != nil {
		return m, false, err
	}
	if d.Metadata == nil || !strings.Contains(d.Metadata.XML, MetadataNS) {
		return m, false, nil
	}
	dec := xml.NewDecoder(strings.NewReader(d.Metadata.XML))
	for {
		tok, err := dec.Token()
		if err != nil {
			return m, false, nil
		}
		if se, isStart := tok.(xml.StartElement); isStart && se.Name.Space == MetadataNS && se.Name.Local == "instance" {
			if err := dec.DecodeElement(&m, &se); err != nil {
				return m, false, fmt.Errorf("kiln metadata: %w", err)
			}
			return m, true, nil
		}
	}
}

// portString lists forwards for messages: "22->41234, 8080->40011".
func portString(fw []Forward) string {
	var parts []string
	for _, f := range fw {
		parts = append(parts, strconv.Itoa(f.Guest)+"->"+strconv.Itoa(f.Host))
	}
	return strings.Join(parts, ", ")
}
