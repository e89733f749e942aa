package libvirthost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"golang.org/x/crypto/ssh"

	"github.com/kiln-dev/kiln/instance"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/provision"
)

// KilnDomains lists the domains on the host that kiln made (those with
// kiln's metadata), of fleet or of every fleet when fleet is "": what a
// restarted supervisor adopts and what `kiln fleet down` must remove.
func (c *Conn) KilnDomains(fleet string) ([]Metadata, error) {
	doms, _, err := c.lv.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, c.hostErr("list domains: %w", err)
	}
	var out []Metadata
	for _, d := range doms {
		if !strings.HasPrefix(d.Name, DomainPrefix) {
			continue
		}
		x, err := c.lv.DomainGetXMLDesc(d, 0)
		if notFound(err) {
			continue // gone meanwhile
		}
		if err != nil {
			return nil, c.hostErr("domain %s: %w", d.Name, err)
		}
		m, ok, err := ParseMetadata(x)
		if err != nil {
			return nil, c.hostErr("domain %s: %w", d.Name, err)
		}
		if ok && (fleet == "" || m.Fleet == fleet) {
			out = append(out, m)
		}
	}
	return out, nil
}

// AdoptDomain attaches to a running kiln domain, as a restarted supervisor
// does: its ports and volumes come from the domain's own metadata.
func (c *Conn) AdoptDomain(pool *Pool, id string) (*Domain, error) {
	name := DomainName(id)
	dom, err := c.lv.DomainLookupByName(name)
	if err != nil {
		return nil, c.hostErr("domain %s: %w", name, err)
	}
	x, err := c.lv.DomainGetXMLDesc(dom, 0)
	if err != nil {
		return nil, c.hostErr("domain %s: %w", name, err)
	}
	m, ok, err := ParseMetadata(x)
	if err != nil || !ok {
		return nil, c.hostErr("domain %s has no kiln metadata: kiln did not make it (%v)", name, err)
	}
	state, _, err := c.lv.DomainGetState(dom, 0)
	if err != nil {
		return nil, c.hostErr("domain %s: %w", name, err)
	}
	if libvirt.DomainState(state) != libvirt.DomainRunning {
		return nil, c.hostErr("domain %s is not running (state %d)", name, state)
	}
	d := &Domain{c: c, pool: pool, dom: dom, Name: name, Meta: m, done: make(chan struct{}), unwatch: make(chan struct{}),
		volumes: []string{c.overlayVolume(id), c.seedVolume(id), c.serialVolume(id)}}
	go d.watch()
	return d, nil
}

// Adopt attaches to a running kiln instance: its domain, and SSH with the
// key and pinned host key Launch left in dir.
func (c *Conn) Adopt(ctx context.Context, pool *Pool, id, dir string) (*Instance, error) {
	d, err := c.AdoptDomain(pool, id)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(layout.VM(dir).Key())
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("instance %s: key in %s: %w", id, dir, err)
	}
	known, err := os.ReadFile(layout.VM(dir).KnownHosts())
	if err != nil {
		return nil, err
	}
	hostKey := strings.TrimSpace(strings.TrimPrefix(string(known), knownHostsAlias+" "))
	cl, err := provision.Dial(ctx, provision.Target{
		Addr: d.Addr(22), User: instance.User, Signer: signer, HostKeys: []string{hostKey},
	}, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("instance %s on %s: %w", id, c.Host, err)
	}
	return &Instance{Domain: d, id: id, version: d.Meta.Version, Dir: dir, SSH: cl}, nil
}

// RemoveFleet removes what kiln made on the host for fleet, but the
// instances in keep: each domain (destroyed and undefined) and each volume
// of the fleet's instances, including those a crashed kiln left without a
// domain. The image layers stay: other fleets and later versions share
// them. It returns the instance ids it removed.
func (c *Conn) RemoveFleet(ctx context.Context, pool *Pool, fleet string, keep map[string]bool) ([]string, error) {
	doms, err := c.KilnDomains(fleet)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, m := range doms {
		if keep[m.Instance] {
			continue
		}
		d, err := c.definedDomain(pool, m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := d.Stop(ctx, 0); err != nil {
			errs = append(errs, err)
		}
		removed = append(removed, m.Instance)
	}
	vols, err := pool.Volumes()
	if err != nil {
		return removed, errors.Join(append(errs, err)...)
	}
	for _, v := range vols {
		id, ok := FleetVolume(fleet, v)
		if ok && !keep[id] {
			errs = append(errs, pool.DeleteVolume(v))
		}
	}
	return removed, errors.Join(errs...)
}

// definedDomain is a kiln domain in whatever state, for removal.
func (c *Conn) definedDomain(pool *Pool, m Metadata) (*Domain, error) {
	name := DomainName(m.Instance)
	dom, err := c.lv.DomainLookupByName(name)
	if err != nil {
		return nil, c.hostErr("domain %s: %w", name, err)
	}
	return &Domain{c: c, pool: pool, dom: dom, Name: name, Meta: m, done: make(chan struct{}), unwatch: make(chan struct{}),
		volumes: []string{c.overlayVolume(m.Instance), c.seedVolume(m.Instance), c.serialVolume(m.Instance)}}, nil
}

// FleetVolume reports whether volume is one of fleet's instances' own
// volumes (overlay, seed, serial log) and of which instance. Instance ids
// are the fleet's name and a number, so fleet web does not claim web-2's.
func FleetVolume(fleet, volume string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(volume, DomainPrefix+fleet+"-")
	if !ok {
		return "", false
	}
	for _, suffix := range []string{".qcow2", "-seed.iso", "-serial.log"} {
		if n, cut := strings.CutSuffix(rest, suffix); cut && n != "" && strings.Trim(n, "0123456789") == "" {
			return fleet + "-" + n, true
		}
	}
	return "", false
}

// RemoveInstance removes one instance's domain and volumes from the host,
// whatever state it is in; a missing one is no error. It is how kiln
// removes an instance it had to give up on while its host was unreachable.
func (c *Conn) RemoveInstance(ctx context.Context, pool *Pool, id string) error {
	d, err := c.definedDomain(pool, Metadata{Instance: id})
	if err != nil && !notFound(err) {
		return err
	}
	if err != nil { // no domain: its volumes may still be there
		d = &Domain{c: c, pool: pool, Name: DomainName(id), done: make(chan struct{}), unwatch: make(chan struct{}),
			volumes: []string{c.overlayVolume(id), c.seedVolume(id), c.serialVolume(id)}}
		return d.removeVolumes()
	}
	return d.Stop(ctx, 0)
}

// HostLost reports whether the domain's host is gone (see Conn.Lost).
func (d *Domain) HostLost() bool { return d.c.Lost() }
