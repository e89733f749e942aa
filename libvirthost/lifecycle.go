package libvirthost

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// DefaultMachine is the QEMU machine type kiln's local path runs (package
// qemu's -machine q35), so an image behaves the same on every host.
const DefaultMachine = "q35"

// DefaultForwardAddr is where a domain's forwarded ports listen on its
// host: loopback only, as on the local path.
const DefaultForwardAddr = "127.0.0.1"

// DomainOptions says what domain to make from an uploaded chain.
type DomainOptions struct {
	Fleet      string
	ID         string // the fleet's instance id, e.g. "web-3"
	Version    string // image ref, recorded in the metadata
	Chain      []Layer
	DiskSize   int64 // virtual size of the overlay; 0 = the image's
	CPUs       int
	MemoryMiB  int
	GuestPorts []int  // guest TCP ports to forward to the host
	Seed       string // a local seed ISO to upload with the domain; "" = none
	// ForwardAddr is the host address the forwards listen on, and the one
	// kiln dials; "" = 127.0.0.1, which only kiln on that host reaches.
	ForwardAddr string
	Machine     string // "" = DefaultMachine
}

// Domain is a kiln domain running on a host.
type Domain struct {
	c       *Conn
	pool    *Pool
	dom     libvirt.Domain
	Name    string
	Meta    Metadata
	volumes []string // the domain's own volumes: overlay, seed

	done     chan struct{}
	doneOnce sync.Once
	stopOnce sync.Once
	unwatch  chan struct{}
	reason   error // why done closed; set before it closes
}

func (c *Conn) overlayVolume(id string) string { return DomainName(id) + ".qcow2" }
func (c *Conn) seedVolume(id string) string    { return DomainName(id) + "-seed.iso" }
func (c *Conn) serialVolume(id string) string  { return DomainName(id) + "-serial.log" }

// StartDomain creates the domain's overlay on the chain's top layer, uploads
// its seed, defines the domain and starts it. On error nothing it made is
// left on the host.
func (c *Conn) StartDomain(ctx context.Context, pool *Pool, o DomainOptions) (_ *Domain, err error) {
	if len(o.Chain) == 0 {
		return nil, errors.New("start domain: no image layers")
	}
	if o.Machine == "" {
		o.Machine = DefaultMachine
	}
	if o.ForwardAddr == "" {
		o.ForwardAddr = DefaultForwardAddr
	}
	info, err := c.Info()
	if err != nil {
		return nil, err
	}
	if !info.HasMachine(o.Machine) {
		return nil, c.hostErr("its QEMU (%s) cannot run machine type %s that the image needs (it offers %s)",
			info.QEMUVersion, o.Machine, strings.Join(info.Machines, ", "))
	}
	name := DomainName(o.ID)
	if _, err := c.lv.DomainLookupByName(name); err == nil {
		return nil, c.hostErr("a domain %s already exists: another kiln owns it, or an earlier one left it (virsh undefine %s)", name, name)
	}
	d := &Domain{c: c, pool: pool, Name: name, done: make(chan struct{}), unwatch: make(chan struct{})}
	defer func() {
		if err != nil {
			d.removeVolumes()
		}
	}()
	top := o.Chain[len(o.Chain)-1]
	topName, err := LayerVolume(top.Digest)
	if err != nil {
		return nil, err
	}
	topPath, err := pool.VolumePath(topName)
	if err != nil {
		return nil, err
	}
	size := max(o.DiskSize, top.VirtualSize)
	overlay, err := d.createOverlay(c.overlayVolume(o.ID), topPath, top.Format, size)
	if err != nil {
		return nil, err
	}
	var seed string
	if o.Seed != "" {
		if seed, err = d.uploadFile(ctx, c.seedVolume(o.ID), o.Seed); err != nil {
			return nil, err
		}
	}
	spec := DomainSpec{
		Meta: Metadata{
			Fleet: o.Fleet, Instance: o.ID, Version: o.Version, Digest: top.Digest,
			Address: o.ForwardAddr,
		},
		DomainType: info.DomainType, Machine: o.Machine, CPUs: max(o.CPUs, 1), MemoryMiB: o.MemoryMiB,
		Disk: overlay, Seed: seed, MAC: NewMAC(),
		// The console goes to a file in kiln's pool: a folder that exists on
		// every host, listed by virsh vol-list, removed with the domain.
		SerialLog: pool.Path + "/" + c.serialVolume(o.ID),
	}
	d.volumes = append(d.volumes, c.serialVolume(o.ID))
	// kiln cannot see which ports are free on a remote host, so it picks
	// random ones and picks again when QEMU could not bind them.
	for attempt := 1; ; attempt++ {
		spec.Meta.Forwards = spec.Meta.Forwards[:0]
		for _, g := range o.GuestPorts {
			spec.Meta.Forwards = append(spec.Meta.Forwards, Forward{Guest: g, Host: 20000 + rand.IntN(30000)})
		}
		err = d.defineAndStart(spec)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "forwarding rule") {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	d.Meta = spec.Meta
	go d.watch()
	return d, nil
}

func (d *Domain) createOverlay(name, backing, backingFormat string, size int64) (string, error) {
	if err := d.pool.DeleteVolume(name); err != nil { // a crashed kiln's leftover of this very instance
		return "", err
	}
	x, err := (&libvirtxml.StorageVolume{
		Name:         name,
		Capacity:     &libvirtxml.StorageVolumeSize{Value: uint64(size)},
		Target:       &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "qcow2"}},
		BackingStore: &libvirtxml.StorageVolumeBackingStore{Path: backing, Format: &libvirtxml.StorageVolumeTargetFormat{Type: backingFormat}},
	}).Marshal()
	if err != nil {
		return "", err
	}
	if _, err := d.c.lv.StorageVolCreateXML(d.pool.pool, x, 0); err != nil {
		return "", d.c.hostErr("create overlay volume %s: %w", name, err)
	}
	d.volumes = append(d.volumes, name)
	return d.pool.VolumePath(name)
}

// uploadFile uploads a small local file (the seed) as a raw volume.
func (d *Domain) uploadFile(ctx context.Context, name, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if err := d.pool.DeleteVolume(name); err != nil {
		return "", err
	}
	x, err := (&libvirtxml.StorageVolume{
		Name:     name,
		Capacity: &libvirtxml.StorageVolumeSize{Value: uint64(st.Size())},
		Target: &libvirtxml.StorageVolumeTarget{
			Format: &libvirtxml.StorageVolumeTargetFormat{Type: "raw"},
			// The seed holds the guest's host private key.
			Permissions: &libvirtxml.StorageVolumeTargetPermissions{Mode: "0600"},
		},
	}).Marshal()
	if err != nil {
		return "", err
	}
	vol, err := d.c.lv.StorageVolCreateXML(d.pool.pool, x, 0)
	if err != nil {
		return "", d.c.hostErr("create volume %s: %w", name, err)
	}
	d.volumes = append(d.volumes, name)
	if err := d.c.lv.StorageVolUpload(vol, &countingReader{ctx: ctx, r: f}, 0, uint64(st.Size()), 0); err != nil {
		return "", d.c.hostErr("upload %s: %w", name, err)
	}
	return d.pool.VolumePath(name)
}

func (d *Domain) defineAndStart(spec DomainSpec) error {
	x, err := DomainXML(spec)
	if err != nil {
		return err
	}
	dom, err := d.c.lv.DomainDefineXML(x)
	if err != nil {
		return d.c.hostErr("define domain %s: %w", d.Name, err)
	}
	if err := d.c.lv.DomainCreate(dom); err != nil {
		d.c.lv.DomainUndefine(dom)
		return d.c.hostErr("start domain %s: %w", d.Name, err)
	}
	d.dom = dom
	return nil
}

// watchEvery is how often a domain's state is polled.
const watchEvery = time.Second

// watch closes done when the domain stops running, disappears, or the host
// can no longer be reached: to a fleet, all three are an instance that died.
func (d *Domain) watch() {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-d.unwatch:
			d.finish(errors.New("stopped"))
			return
		case <-d.c.Disconnected():
			d.finish(d.c.hostErr("connection lost"))
			return
		case <-d.c.lost:
			d.finish(d.c.hostErr("%w", errNoAnswer))
			return
		case <-t.C:
			var state int32
			err := d.c.bounded(func() (err error) {
				state, _, err = d.c.lv.DomainGetState(d.dom, 0)
				return err
			})
			switch {
			case errors.Is(err, errNoAnswer):
				d.finish(d.c.hostErr("%w", err))
				return
			case notFound(err):
				d.finish(d.c.hostErr("domain %s is gone", d.Name))
				return
			case err != nil:
				d.finish(d.c.hostErr("domain %s: %w", d.Name, err))
				return
			case libvirt.DomainState(state) != libvirt.DomainRunning && libvirt.DomainState(state) != libvirt.DomainBlocked:
				d.finish(d.c.hostErr("domain %s is no longer running (state %d)", d.Name, state))
				return
			}
		}
	}
}

func (d *Domain) finish(reason error) {
	d.doneOnce.Do(func() {
		d.reason = reason
		close(d.done)
	})
}

// Done is closed when the domain has stopped, vanished or its host became
// unreachable; Err then says which.
func (d *Domain) Done() <-chan struct{} { return d.done }

// Err is why Done closed, or nil while it is open.
func (d *Domain) Err() error {
	select {
	case <-d.done:
		return d.reason
	default:
		return nil
	}
}

// HostPort is the host port guest port g is forwarded to, or 0.
func (d *Domain) HostPort(g int) int {
	for _, f := range d.Meta.Forwards {
		if f.Guest == g {
			return f.Host
		}
	}
	return 0
}

// Addr is where kiln reaches guest port g, or "" when it is not forwarded.
func (d *Domain) Addr(g int) string {
	if p := d.HostPort(g); p != 0 {
		return net.JoinHostPort(d.Meta.Address, strconv.Itoa(p))
	}
	return ""
}

// Stop powers the domain off through ACPI, destroys it if it has not gone
// within timeout, undefines it and deletes its overlay and seed volumes.
// Stopping a domain that is already gone is no error.
func (d *Domain) Stop(ctx context.Context, timeout time.Duration) error {
	var errs []error
	d.stopOnce.Do(func() {
		close(d.unwatch)
		if d.c.Lost() {
			// Every call would wait on a host that is gone; what is left
			// there goes when it answers again (RemoveFleet).
			errs = append(errs, d.c.hostErr("unreachable: domain %s and its volumes stay there until kiln can remove them", d.Name))
			return
		}
		if err := d.c.lv.DomainShutdown(d.dom); err == nil {
			deadline := time.Now().Add(timeout)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				state, _, err := d.c.lv.DomainGetState(d.dom, 0)
				if err != nil || libvirt.DomainState(state) == libvirt.DomainShutoff {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		if err := d.c.lv.DomainDestroy(d.dom); err != nil && !notFound(err) && !isNotRunning(err) {
			errs = append(errs, d.c.hostErr("destroy domain %s: %w", d.Name, err))
		}
		if err := d.c.lv.DomainUndefine(d.dom); err != nil && !notFound(err) {
			errs = append(errs, d.c.hostErr("undefine domain %s: %w", d.Name, err))
		}
		errs = append(errs, d.removeVolumes())
	})
	return errors.Join(errs...)
}

func (d *Domain) removeVolumes() error {
	// The serial log is a file QEMU made: the pool learns of it on refresh.
	var errs []error
	if err := d.c.lv.StoragePoolRefresh(d.pool.pool, 0); err != nil {
		errs = append(errs, d.c.hostErr("refresh storage pool %s: %w", d.pool.Name, err))
	}
	for _, v := range d.volumes {
		errs = append(errs, d.pool.DeleteVolume(v))
	}
	d.volumes = nil
	return errors.Join(errs...)
}

// isNotRunning reports libvirt's "domain is not running" (destroying a
// domain that already powered off).
func isNotRunning(err error) bool {
	return libvirtCode(err, libvirt.ErrOperationInvalid)
}

// SerialTail returns the last bytes (up to n) of the domain's serial
// console, read from the host through the pool, for errors: the guest's own
// account of why it did not come up.
func (d *Domain) SerialTail(n int64) string {
	if err := d.c.lv.StoragePoolRefresh(d.pool.pool, 0); err != nil {
		return ""
	}
	vol, ok, err := d.pool.lookup(DomainPrefix + d.Meta.Instance + "-serial.log")
	if err != nil || !ok {
		return ""
	}
	_, capacity, _, err := d.c.lv.StorageVolGetInfo(vol)
	if err != nil || capacity == 0 {
		return ""
	}
	off := uint64(0)
	if capacity > uint64(n) {
		off = capacity - uint64(n)
	}
	var b strings.Builder
	if err := d.c.lv.StorageVolDownload(vol, &b, off, capacity-off, 0); err != nil {
		return ""
	}
	return b.String()
}
