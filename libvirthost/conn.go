package libvirthost

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// Conn is an open connection to one host's libvirt daemon.
type Conn struct {
	Host Host
	lv   *libvirt.Libvirt

	lost     chan struct{} // closed when a call went unanswered (see bounded)
	lostOnce sync.Once
}

// hostErr names the host in an error, as every error of this package does:
// with several hosts, "connection refused" alone says nothing.
func (c *Conn) hostErr(format string, args ...any) error {
	return fmt.Errorf("%s: %w", c.Host, fmt.Errorf(format, args...))
}

// Dial connects to h with go-libvirt's dialer for its URI's transport (unix
// socket, TCP, TLS or SSH with the user's known_hosts). ctx bounds the wait.
func Dial(ctx context.Context, h Host) (*Conn, error) {
	u, err := ParseURI(h.URI)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h, err)
	}
	type result struct {
		lv  *libvirt.Libvirt
		err error
	}
	ch := make(chan result, 1)
	go func() {
		lv, err := libvirt.ConnectToURI(u)
		ch <- result{lv, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("%s: unreachable: %w", h, r.err)
		}
		return &Conn{Host: h, lv: r.lv, lost: make(chan struct{})}, nil
	case <-ctx.Done():
		go func() { // the dial may still succeed; do not leak its connection
			if r := <-ch; r.err == nil {
				r.lv.Disconnect()
			}
		}()
		return nil, fmt.Errorf("%s: unreachable: %w", h, ctx.Err())
	}
}

// Close ends the connection; domains keep running.
func (c *Conn) Close() error { return c.lv.Disconnect() }

// Disconnected is closed when the connection to the daemon is lost.
func (c *Conn) Disconnected() <-chan struct{} { return c.lv.Disconnected() }

// Lost reports whether the host is gone: its connection dropped, or a
// call went unanswered for callTimeout. A lost Conn is dialled again.
func (c *Conn) Lost() bool {
	select {
	case <-c.lv.Disconnected():
		return true
	case <-c.lost:
		return true
	default:
		return false
	}
}

// Info is what `kiln hosts ls` shows of a host.
type Info struct {
	Hostname       string
	LibvirtVersion string
	QEMUVersion    string
	Arch           string
	Accel          string   // "kvm" or "tcg": what the host's capabilities offer
	DomainType     string   // libvirt's name for it: "kvm" or "qemu"
	Machines       []string // machine types the host's QEMU offers for Arch, canonical names included
	FreeMemory     uint64   // bytes
	MemoryTotal    uint64   // bytes
	CPUs           int
}

// Info asks the host for its versions, accelerator, machine types and memory.
func (c *Conn) Info() (Info, error) {
	var in Info
	var err error
	if in.Hostname, err = c.lv.ConnectGetHostname(); err != nil {
		return in, c.hostErr("hostname: %w", err)
	}
	lib, err := c.lv.ConnectGetLibVersion()
	if err != nil {
		return in, c.hostErr("libvirt version: %w", err)
	}
	in.LibvirtVersion = versionString(lib)
	hv, err := c.lv.ConnectGetVersion()
	if err != nil {
		return in, c.hostErr("QEMU version: %w", err)
	}
	in.QEMUVersion = versionString(hv)
	capsXML, err := c.lv.ConnectGetCapabilities()
	if err != nil {
		return in, c.hostErr("capabilities: %w", err)
	}
	if err := in.fromCaps(capsXML); err != nil {
		return in, c.hostErr("%w", err)
	}
	if in.FreeMemory, err = c.lv.NodeGetFreeMemory(); err != nil {
		return in, c.hostErr("free memory: %w", err)
	}
	_, memKiB, cpus, _, _, _, _, _, err := c.lv.NodeGetInfo()
	if err != nil {
		return in, c.hostErr("node info: %w", err)
	}
	in.MemoryTotal, in.CPUs = memKiB*1024, int(cpus)
	return in, nil
}

// versionString turns libvirt's packed version (major*1e6 + minor*1e3 +
// release) into "9.0.0".
func versionString(v uint64) string {
	return fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000)
}

// fromCaps reads the accelerator and machine types from the host's
// capabilities XML: KVM when the host's QEMU offers a kvm domain for the
// host's own architecture, TCG (libvirt's "qemu" domain type) otherwise.
func (in *Info) fromCaps(capsXML string) error {
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(capsXML); err != nil {
		return fmt.Errorf("capabilities: %w", err)
	}
	in.Arch = caps.Host.CPU.Arch
	for _, g := range caps.Guests {
		if g.OSType != "hvm" || g.Arch.Name != in.Arch {
			continue
		}
		for _, m := range g.Arch.Machines {
			in.Machines = append(in.Machines, m.Name)
			if m.Canonical != "" {
				in.Machines = append(in.Machines, m.Canonical)
			}
		}
		for _, d := range g.Arch.Domains {
			switch {
			case d.Type == "kvm":
				in.Accel, in.DomainType = "kvm", "kvm"
			case d.Type == "qemu" && in.DomainType == "":
				in.Accel, in.DomainType = "tcg", "qemu"
			}
		}
	}
	slices.Sort(in.Machines)
	in.Machines = slices.Compact(in.Machines)
	if in.DomainType == "" {
		return fmt.Errorf("its QEMU offers no hvm guest for %s: install the QEMU system emulator for it (Debian: qemu-system-x86)", orUnknown(in.Arch))
	}
	return nil
}

// HasMachine reports whether the host's QEMU offers machine type m (e.g.
// "pc", "q35" or a versioned "pc-i440fx-7.2").
func (in Info) HasMachine(m string) bool { return slices.Contains(in.Machines, m) }

func orUnknown(s string) string {
	if strings.TrimSpace(s) == "" {
		return "an unknown architecture"
	}
	return s
}

// libvirtCode reports whether err is a libvirt error with one of codes.
func libvirtCode(err error, codes ...libvirt.ErrorNumber) bool {
	var e libvirt.Error
	return errors.As(err, &e) && slices.Contains(codes, libvirt.ErrorNumber(e.Code))
}

// notFound reports libvirt's "no such domain, pool or volume".
func notFound(err error) bool {
	return libvirtCode(err, libvirt.ErrNoDomain, libvirt.ErrNoStoragePool, libvirt.ErrNoStorageVol)
}

// ForwardAddr is the address on h that its domains' forwarded ports listen
// on and that kiln dials them at: loopback for the local daemon, and for a
// remote host the very address kiln reaches its libvirtd at (loopback there
// would be reachable only from the host itself). Guest ports of a remote
// host are therefore open to whoever reaches that address: keep such hosts
// on a lab or management network, as their libvirtd already is.
func ForwardAddr(h Host) string {
	u, err := ParseURI(h.URI)
	if err != nil || u.Hostname() == "" {
		return DefaultForwardAddr
	}
	return u.Hostname()
}

// callTimeout bounds one libvirt call that polls a host: go-libvirt waits
// for an answer until the connection drops, and a host that vanished from
// the network (no reset, no FIN) takes TCP minutes to notice.
const callTimeout = 10 * time.Second

// errNoAnswer is a host that did not answer a call within callTimeout.
var errNoAnswer = fmt.Errorf("unreachable: no answer from its libvirtd in %s", callTimeout)

// bounded runs fn, giving up after callTimeout. A call that timed out
// marks the connection lost (and closes it as far as go-libvirt can): to
// kiln the host is then gone, as if it had crashed.
func (c *Conn) bounded(fn func() error) error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	select {
	case err := <-ch:
		return err
	case <-time.After(callTimeout):
		c.lostOnce.Do(func() { close(c.lost) })
		// Disconnect itself asks the daemon first, so it may hang as long
		// as the host does; it must not hold anyone up.
		go c.lv.Disconnect()
		return errNoAnswer
	}
}
