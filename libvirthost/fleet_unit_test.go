package libvirthost

import "testing"

// TestFleetVolume: fleet web claims its instances' volumes and no other
// fleet's, not even web-2's, whose instance ids also start with "web-".
func TestFleetVolume(t *testing.T) {
	for _, c := range []struct {
		fleet, vol, id string
		ok             bool
	}{
		{"web", "kiln-web-3.qcow2", "web-3", true},
		{"web", "kiln-web-3-seed.iso", "web-3", true},
		{"web", "kiln-web-12-serial.log", "web-12", true},
		{"web", "kiln-web-2-1.qcow2", "", false}, // fleet web-2's instance 1
		{"web-2", "kiln-web-2-1.qcow2", "web-2-1", true},
		{"web", "kiln-web-.qcow2", "", false},
		{"web", "kiln-web-3.raw", "", false},
		{"web", "0123abcd", "", false}, // an image layer
		{"web", "kiln-web-3.qcow2.verified", "", false},
	} {
		id, ok := FleetVolume(c.fleet, c.vol)
		if id != c.id || ok != c.ok {
			t.Errorf("FleetVolume(%q, %q) = %q, %v; want %q, %v", c.fleet, c.vol, id, ok, c.id, c.ok)
		}
	}
}

// TestForwardAddr: a local host's forwards stay on loopback; a remote
// host's listen where kiln reaches its libvirtd.
func TestForwardAddr(t *testing.T) {
	for uri, want := range map[string]string{
		"qemu:///system":                     "127.0.0.1",
		"qemu+unix:///system":                "127.0.0.1",
		"qemu+tcp://127.0.0.1:16509/system":  "127.0.0.1",
		"qemu+tcp://10.200.3.2:16509/system": "10.200.3.2",
		"qemu+ssh://root@lab1/system":        "lab1",
		"qemu+tls://[fd00::2]/system":        "fd00::2",
	} {
		if got := ForwardAddr(Host{Name: "h", URI: uri}); got != want {
			t.Errorf("ForwardAddr(%s) = %s, want %s", uri, got, want)
		}
	}
}
