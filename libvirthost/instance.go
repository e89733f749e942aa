package libvirthost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-dev/kiln/cloudinit"
	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/instance"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/provision"
)

// knownHostsAlias names the guest in the instance folder's known_hosts, as
// package instance does for local guests.
const knownHostsAlias = "kiln-guest"

// Instance is a fleet instance running as a libvirt domain: the domain, and
// a verified SSH connection to the guest through its forwarded port.
type Instance struct {
	*Domain
	id, version string
	Dir         string // local folder with the instance's key and known host key
	SSH         *provision.Client
	BootTime    time.Duration
}

var _ fleet.Instance = (*Instance)(nil)

func (i *Instance) ID() string      { return i.id }
func (i *Instance) Version() string { return i.version }

// Host names the host the instance runs on.
func (i *Instance) Host() Host { return i.c.Host }

// Exec runs cmd in the guest over SSH, for exec health checks.
func (i *Instance) Exec(ctx context.Context, cmd string) (int, error) {
	return i.SSH.Run(ctx, cmd, nil, nil, nil)
}

// LaunchOptions says what instance to start on a host.
type LaunchOptions struct {
	DomainOptions
	Dir         string // local folder for the key and known host key; created 0700
	UserData    []byte // extra cloud-config merged into kiln's
	BootTimeout time.Duration
	Log         func(format string, args ...any)
}

// Launch starts an instance on the host, as instance.Launch does on this
// machine: a fresh key pair and a host key kiln generated (so SSH is
// verified from the first connection), a seed with its own instance id and
// hostname, the domain, and a wait until SSH answers with that host key. The
// chain must already be in pool (EnsureChain). On error nothing is left
// running, on the host or here.
func (c *Conn) Launch(ctx context.Context, pool *Pool, o LaunchOptions) (_ *Instance, err error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = instance.DefaultBootTimeout
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	inst := &Instance{id: o.ID, version: o.Version, Dir: o.Dir}
	defer func() {
		if err != nil {
			inst.Remove(context.WithoutCancel(ctx))
		}
	}()
	key, err := provision.NewKeyPair("kiln@" + o.ID)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(layout.VM(o.Dir).Key(), key.PrivatePEM, 0o600); err != nil {
		return nil, err
	}
	hostKey, err := cloudinit.NewHostKey()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(layout.VM(o.Dir).KnownHosts(), []byte(knownHostsAlias+" "+hostKey.Public+"\n"), 0o600); err != nil {
		return nil, err
	}
	seed := layout.VM(o.Dir).Seed()
	if err := cloudinit.WriteISO(seed, cloudinit.Config{
		InstanceID:     cloudinit.NewInstanceID(),
		Hostname:       o.ID,
		User:           instance.User,
		AuthorizedKeys: []string{key.AuthorizedKey},
		HostKeys:       []cloudinit.HostKey{hostKey},
		UserData:       o.UserData,
	}); err != nil {
		return nil, err
	}
	do := o.DomainOptions
	do.Seed = seed
	do.GuestPorts = append([]int{22}, without(do.GuestPorts, 22)...)
	start := time.Now()
	if inst.Domain, err = c.StartDomain(ctx, pool, do); err != nil {
		return nil, err
	}
	// The seed holds the guest's host private key: once on the host, the
	// local copy goes.
	os.Remove(seed)
	o.Log("boot %s on %s, ssh on %s", inst.Name, c.Host, inst.Addr(22))
	inst.SSH, err = provision.WaitForSSH(ctx, provision.Target{
		Addr: inst.Addr(22), User: instance.User, Signer: key.Signer, HostKeys: []string{hostKey.Public},
		SerialLog: fmt.Sprintf("%s on %s", filepath.Join(pool.Path, c.serialVolume(o.ID)), c.Host),
	}, o.BootTimeout, inst.Done())
	if err != nil {
		if derr := inst.Err(); derr != nil {
			err = fmt.Errorf("%w (%v)", err, derr)
		}
		tail := inst.SerialTail(2048)
		if tail != "" {
			tail = "; its console ended with:\n" + tail
		}
		return nil, fmt.Errorf("instance %s on %s: %w%s", o.ID, c.Host, err, tail)
	}
	inst.BootTime = time.Since(start)
	o.Log("ssh ready on %s in %.1fs", inst.Name, inst.BootTime.Seconds())
	return inst, nil
}

// Remove stops the instance's domain (ACPI, then destroy), removes its
// volumes on the host and its local folder.
func (i *Instance) Remove(ctx context.Context) error {
	var errs []error
	if i.SSH != nil {
		i.SSH.Close()
	}
	if i.Domain != nil {
		errs = append(errs, i.Domain.Stop(ctx, 20*time.Second))
	}
	errs = append(errs, os.RemoveAll(i.Dir))
	return errors.Join(errs...)
}

func without(ports []int, p int) []int {
	var out []int
	for _, x := range ports {
		if x != p {
			out = append(out, x)
		}
	}
	return out
}
