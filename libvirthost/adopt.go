package libvirthost

import (
	"context"
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
