// Package libvirthost runs fleet instances on libvirt hosts: the hosts kiln
// knows (a small file in kiln's data folder), a connection to each through
// the pure-Go go-libvirt client, the image's blob chain uploaded once into a
// storage pool there, and one libvirt domain per instance with its own
// overlay, seed and pinned host key. Placement (which host gets the next
// instance) is a pure function in placement.go.
package libvirthost

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/kiln-dev/kiln/internal/fileutil"
	"github.com/kiln-dev/kiln/layout"
)

// HostsFile is the name of the hosts list in kiln's data folder.
const HostsFile = layout.HostsFileName

// Host is one libvirt host kiln may place instances on.
type Host struct {
	Name string `json:"name"`
	URI  string `json:"uri"` // qemu:///system, qemu+ssh://user@host/system, qemu+tcp://…, qemu+tls://…
}

// String names the host the way errors do.
func (h Host) String() string { return fmt.Sprintf("host %s (%s)", h.Name, h.URI) }

var hostNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// schemes are the libvirt URI schemes kiln accepts: the QEMU driver over the
// local socket, SSH, plain TCP (labs and tests) and TLS.
var schemes = []string{"qemu", "qemu+unix", "qemu+ssh", "qemu+tcp", "qemu+tls"}

// Validate reports what is wrong with h in words the user can act on.
func (h Host) Validate() error {
	if !hostNameRE.MatchString(h.Name) {
		return fmt.Errorf("host name %q: use 1-32 lower-case letters, digits and inner hyphens", h.Name)
	}
	_, err := ParseURI(h.URI)
	return err
}

// ParseURI checks a libvirt connection URI: a QEMU driver URI with a
// transport go-libvirt dials, for the system instance.
func ParseURI(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("libvirt URI %q: not a URI; use e.g. qemu:///system or qemu+ssh://user@host/system", s)
	}
	if !slices.Contains(schemes, u.Scheme) {
		return nil, fmt.Errorf("libvirt URI %q: scheme %s is not one of %s", s, u.Scheme, strings.Join(schemes, ", "))
	}
	if u.Path != "/system" {
		return nil, fmt.Errorf("libvirt URI %q: kiln uses the system instance; end the URI with /system", s)
	}
	remote := u.Scheme == "qemu+ssh" || u.Scheme == "qemu+tcp" || u.Scheme == "qemu+tls"
	if remote && u.Hostname() == "" {
		return nil, fmt.Errorf("libvirt URI %q: %s needs a host name", s, u.Scheme)
	}
	if !remote && u.Host != "" {
		return nil, fmt.Errorf("libvirt URI %q: %s is local; give no host (or use qemu+ssh:// for a remote one)", s, u.Scheme)
	}
	return u, nil
}

// hostsDoc is the file's shape; a version field lets a later kiln change it.
type hostsDoc struct {
	Version int    `json:"version"`
	Hosts   []Host `json:"hosts"`
}

// Hosts is the list of libvirt hosts kept in one file.
type Hosts struct {
	path  string
	Hosts []Host
}

// LoadHosts reads the hosts list at path; a missing file is an empty list.
func LoadHosts(path string) (*Hosts, error) {
	hs := &Hosts{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return hs, nil
	}
	if err != nil {
		return nil, err
	}
	var doc hostsDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("hosts file %s: %w; fix or remove it", path, err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("hosts file %s: version %d is not one this kiln reads (1)", path, doc.Version)
	}
	for _, h := range doc.Hosts {
		if err := h.Validate(); err != nil {
			return nil, fmt.Errorf("hosts file %s: %w", path, err)
		}
	}
	hs.Hosts = doc.Hosts
	return hs, nil
}

// Get returns the host called name.
func (hs *Hosts) Get(name string) (Host, bool) {
	i := slices.IndexFunc(hs.Hosts, func(h Host) bool { return h.Name == name })
	if i < 0 {
		return Host{}, false
	}
	return hs.Hosts[i], true
}

// Add adds h and saves the file. A name already taken is refused, so a
// typo cannot silently re-point a host that runs instances.
func (hs *Hosts) Add(h Host) error {
	if err := h.Validate(); err != nil {
		return err
	}
	if old, ok := hs.Get(h.Name); ok {
		return fmt.Errorf("host %s is already known as %s; remove it first (kiln hosts rm %s)", h.Name, old.URI, h.Name)
	}
	hs.Hosts = append(hs.Hosts, h)
	return hs.save()
}

// Remove removes the host called name and saves the file.
func (hs *Hosts) Remove(name string) error {
	i := slices.IndexFunc(hs.Hosts, func(h Host) bool { return h.Name == name })
	if i < 0 {
		return fmt.Errorf("no host called %s (kiln hosts ls lists them)", name)
	}
	hs.Hosts = slices.Delete(hs.Hosts, i, i+1)
	return hs.save()
}

func (hs *Hosts) save() error {
	b, err := json.MarshalIndent(hostsDoc{Version: 1, Hosts: hs.Hosts}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(hs.path), 0o700); err != nil {
		return err
	}
	return fileutil.WriteAtomic(hs.path, append(b, '\n'), 0o600)
}
