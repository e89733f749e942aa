package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/libvirthost"
	"github.com/kiln-dev/kiln/qemu"
)

// site is one libvirt host as the host launcher uses it. libvirtSite is the
// real one; tests fake it, so the launcher's decisions (where, what to
// upload, what a lost host means) are tested without a host.
type site interface {
	Name() string
	// Candidate is the host as placement sees it; an unreachable host
	// comes back with Err set, so placement skips it and says why.
	Candidate(ctx context.Context, fleet string) libvirthost.Candidate
	// EnsureChain makes the image's layers present and verified there.
	EnsureChain(ctx context.Context, chain []libvirthost.Layer) (libvirthost.Transfer, error)
	Launch(ctx context.Context, o libvirthost.LaunchOptions) (member, error)
	Adopt(ctx context.Context, rec InstanceRecord) (member, error)
	// RemoveFleet removes the fleet's domains and volumes there but keep's.
	RemoveFleet(ctx context.Context, fleet string, keep map[string]bool) ([]string, error)
}

// hostLauncher runs a fleet's instances as libvirt domains on the hosts the
// fleet names (fleet up --host), instead of QEMU processes on this machine.
type hostLauncher struct {
	spec  Spec
	dirs  Dirs
	store *images.Store
	sites []site
	log   func(format string, args ...any)
	life  context.Context // instances run under the supervisor's lifetime

	mu     sync.Mutex
	nextID func() int
	// uploading serialises EnsureChain per host, so two launches on one
	// host never upload the same layer at once: the second finds it there.
	uploading map[string]*sync.Mutex
	moved     map[string]int64 // bytes uploaded to each host so far
}

var _ machines = (*hostLauncher)(nil)

func newHostLauncher(spec Spec, dirs Dirs, store *images.Store, sites []site, life context.Context,
	log func(string, ...any), nextID func() int) *hostLauncher {
	l := &hostLauncher{spec: spec, dirs: dirs, store: store, sites: sites, life: life, log: log, nextID: nextID,
		uploading: map[string]*sync.Mutex{}, moved: map[string]int64{}}
	for _, s := range sites {
		l.uploading[s.Name()] = &sync.Mutex{}
	}
	return l
}

// guestPorts are the guest ports every instance forwards: the fleet's and
// its check's.
func (l *hostLauncher) guestPorts() []int {
	var ports []int
	for _, p := range l.spec.Ports {
		ports = append(ports, p.Guest)
	}
	if l.spec.Check != nil && l.spec.Check.Port != 0 && !slices.Contains(ports, l.spec.Check.Port) {
		ports = append(ports, l.spec.Check.Port)
	}
	return ports
}

func (l *hostLauncher) site(name string) (site, bool) {
	i := slices.IndexFunc(l.sites, func(s site) bool { return s.Name() == name })
	if i < 0 {
		return nil, false
	}
	return l.sites[i], true
}

// candidates asks every host at once, so one slow host costs its own
// timeout, not the sum of all.
func (l *hostLauncher) candidates(ctx context.Context) []libvirthost.Candidate {
	out := make([]libvirthost.Candidate, len(l.sites))
	var wg sync.WaitGroup
	for i, s := range l.sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = s.Candidate(ctx, l.spec.Name)
			out[i].Name = s.Name()
		}()
	}
	wg.Wait()
	return out
}

// Launch places n instances of version over the fleet's hosts (spread, then
// least used; unreachable hosts skipped), makes sure each chosen host has
// the image's layers (once per host, under its lock), and starts the
// instances in parallel. On error the ones that did start are stopped.
func (l *hostLauncher) Launch(ctx context.Context, version string, n int) ([]member, error) {
	// Revoked images are allowed here, as on this machine: the CLI and the
	// rollout refused them already unless forced.
	img, err := l.store.Use(version, true)
	if err != nil {
		return nil, err
	}
	m := img.Manifest
	chain, err := libvirthost.Chain(l.store, m)
	if err != nil {
		return nil, err
	}
	placed, err := libvirthost.Place(l.candidates(ctx), n, uint64(l.spec.MemoryMiB)<<20)
	if err != nil {
		return nil, fmt.Errorf("fleet %s: %w", l.spec.Name, err)
	}
	results := make(chan launched, n)
	for _, host := range placed {
		l.mu.Lock()
		id := fmt.Sprintf("%s-%d", l.spec.Name, l.nextID())
		l.mu.Unlock()
		s, _ := l.site(host)
		go func() {
			// As on the local path, the domain outlives the request that
			// asked for it; ctx only cuts the wait short.
			life, cancel := context.WithCancel(l.life)
			stop := context.AfterFunc(ctx, cancel)
			defer stop()
			if err := l.ensureChain(life, s, chain); err != nil {
				results <- launched{err: fmt.Errorf("instance %s: %w", id, err)}
				return
			}
			inst, err := s.Launch(life, libvirthost.LaunchOptions{
				DomainOptions: libvirthost.DomainOptions{
					Fleet: l.spec.Name, ID: id, Version: m.Ref().String(), Chain: chain,
					CPUs: l.spec.CPUs, MemoryMiB: l.spec.MemoryMiB, GuestPorts: l.guestPorts(),
				},
				Dir: string(l.dirs.Instance(id)), Log: l.log, BootTimeout: hostBootTimeout,
			})
			if err != nil {
				err = fmt.Errorf("instance %s: %w", id, err)
			}
			results <- launched{inst, err}
		}()
	}
	return gatherBatch(ctx, len(placed), results, l.Stop)
}

// ensureChain uploads what the host lacks of chain, one upload at a time
// per host, and logs what moved.
func (l *hostLauncher) ensureChain(ctx context.Context, s site, chain []libvirthost.Layer) error {
	lock := l.uploading[s.Name()]
	lock.Lock()
	defer lock.Unlock()
	t, err := s.EnsureChain(ctx, chain)
	l.mu.Lock()
	l.moved[s.Name()] += t.BytesSent
	total := l.moved[s.Name()]
	l.mu.Unlock()
	// One line per layer moved: what an operator (and the e2e test) counts
	// to see that an image travels to each host once.
	for _, d := range t.Uploaded {
		l.log("host %s: uploaded layer %s", s.Name(), d)
	}
	if len(t.Uploaded) > 0 {
		l.log("host %s: %d bytes (%s) sent, %d layer(s) reused; %d bytes sent to it by this supervisor",
			s.Name(), t.BytesSent, disk.FormatSize(t.BytesSent), len(t.Reused), total)
	}
	return err
}

// Moved is the number of bytes this launcher uploaded to each host.
func (l *hostLauncher) Moved() map[string]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int64{}
	for k, v := range l.moved {
		out[k] = v
	}
	return out
}

// Stop removes the instance: its domain and volumes on the host, its folder
// here. A host that is gone is no error to wait on: RemoveFleet (Reap,
// fleet down) removes the rest when it answers again.
func (l *hostLauncher) Stop(ctx context.Context, m member) error { return m.remove() }

// Adopt re-attaches to a domain a previous supervisor recorded, through the
// host the record names: the domain must be kiln's and running, and its
// guest must answer SSH with the host key pinned at its first boot.
func (l *hostLauncher) Adopt(ctx context.Context, rec InstanceRecord) (member, error) {
	if rec.Host == "" {
		return nil, errors.New("no host was recorded for it")
	}
	s, ok := l.site(rec.Host)
	if !ok {
		return nil, fmt.Errorf("its host %s is not one of the fleet's", rec.Host)
	}
	return s.Adopt(ctx, rec)
}

// Reconnect has nothing left to do: Adopt verified SSH already.
func (l *hostLauncher) Reconnect(ctx context.Context, m member) error { return nil }

// reapTimeout bounds removing leftovers from all hosts.
const reapTimeout = 2 * time.Minute

// Reap removes, on every host, the fleet's domains and volumes that were
// not adopted, and their folders here.
func (l *hostLauncher) Reap(keep map[string]bool) {
	ctx, cancel := context.WithTimeout(l.life, reapTimeout)
	defer cancel()
	for _, s := range l.sites {
		removed, err := s.RemoveFleet(ctx, l.spec.Name, keep)
		if len(removed) > 0 {
			l.log("host %s: removed %d instance(s) left by an earlier supervisor: %v", s.Name(), len(removed), removed)
		}
		if err != nil {
			l.log("host %s: removing leftovers: %v", s.Name(), err)
		}
	}
	killStale(l.dirs, keep) // the instances' local folders (keys, known hosts)
}

// SetAccel does nothing: a host runs domains under what its capabilities
// offer (kvm where it can, else TCG).
func (l *hostLauncher) SetAccel(qemu.Choice) {}

// SetCold does nothing: instances on hosts always boot (saved guests stay
// on this machine).
func (l *hostLauncher) SetCold() {}

// remoteVM is a fleet instance running as a libvirt domain.
type remoteVM struct {
	*libvirthost.Instance
	host    string
	site    *libvirtSite
	started time.Time
}

var _ member = (*remoteVM)(nil)

func (r *remoteVM) record(guests []int) InstanceRecord {
	ports := map[int]int{}
	for _, g := range guests {
		ports[g] = r.HostPort(g)
	}
	return InstanceRecord{ID: r.ID(), Version: r.Version(), Host: r.host, Domain: r.Name, Address: r.Meta.Address,
		Dir: r.Dir, SSHPort: r.HostPort(22), Ports: ports, Started: r.started.UTC()}
}

func (r *remoteVM) remove() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := r.Remove(ctx)
	if err != nil && r.HostLost() && r.site != nil {
		// Its QEMU may well run on: the domain goes as soon as the host
		// answers again, instead of lingering until the fleet goes down.
		r.site.removeLater(r.ID())
	}
	return err
}

// hostBootTimeout bounds a guest's wait for SSH on a host: longer than on
// this machine, since a host may run its domains under TCG beside other
// fleets' (a loaded TCG host has taken over five minutes).
const hostBootTimeout = 12 * time.Minute

// hostDialTimeout bounds connecting to a host; a host that does not answer
// in time is unreachable for this round and asked again on the next.
const hostDialTimeout = 15 * time.Second

// libvirtSite is a real libvirt host: one connection, dialled again when
// it is lost, and kiln's storage pool there.
type libvirtSite struct {
	host libvirthost.Host

	mu      sync.Mutex
	conn    *libvirthost.Conn
	pool    *libvirthost.Pool
	pending []string // instances given up on while the host was lost
}

func (s *libvirtSite) removeLater(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.pending, id) {
		s.pending = append(s.pending, id)
	}
}

func (s *libvirtSite) Name() string { return s.host.Name }

func (s *libvirtSite) connect(ctx context.Context) (*libvirthost.Conn, *libvirthost.Pool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && !s.conn.Lost() {
		return s.conn, s.pool, nil
	}
	if s.conn != nil {
		go s.conn.Close() // may hang as long as the lost host does
		s.conn, s.pool = nil, nil
	}
	dctx, cancel := context.WithTimeout(ctx, hostDialTimeout)
	defer cancel()
	c, err := libvirthost.Dial(dctx, s.host)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.EnsurePool()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	s.conn, s.pool = c, p
	var still []string
	for _, id := range s.pending {
		if err := c.RemoveInstance(ctx, p, id); err != nil {
			still = append(still, id)
		}
	}
	s.pending = still
	return c, p, nil
}

func (s *libvirtSite) Candidate(ctx context.Context, fleet string) libvirthost.Candidate {
	c, _, err := s.connect(ctx)
	if err != nil {
		return libvirthost.Candidate{Name: s.host.Name, Err: err}
	}
	return c.Candidate(fleet)
}

func (s *libvirtSite) EnsureChain(ctx context.Context, chain []libvirthost.Layer) (libvirthost.Transfer, error) {
	_, p, err := s.connect(ctx)
	if err != nil {
		return libvirthost.Transfer{}, err
	}
	return p.EnsureChain(ctx, chain)
}

func (s *libvirtSite) Launch(ctx context.Context, o libvirthost.LaunchOptions) (member, error) {
	c, p, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	o.ForwardAddr = libvirthost.ForwardAddr(s.host)
	inst, err := c.Launch(ctx, p, o)
	if err != nil {
		return nil, err
	}
	return &remoteVM{Instance: inst, host: s.host.Name, site: s, started: time.Now()}, nil
}

func (s *libvirtSite) Adopt(ctx context.Context, rec InstanceRecord) (member, error) {
	c, p, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	inst, err := c.Adopt(ctx, p, rec.ID, rec.Dir)
	if err != nil {
		return nil, err
	}
	return &remoteVM{Instance: inst, host: s.host.Name, site: s, started: rec.Started}, nil
}

func (s *libvirtSite) RemoveFleet(ctx context.Context, fleet string, keep map[string]bool) ([]string, error) {
	c, p, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	return c.RemoveFleet(ctx, p, fleet, keep)
}

// FleetHosts looks up the hosts a fleet names in the hosts file, so a
// misspelt or removed host fails with its name before anything starts.
func FleetHosts(hostsFile string, names []string) ([]libvirthost.Host, error) {
	hs, err := libvirthost.LoadHosts(hostsFile)
	if err != nil {
		return nil, err
	}
	var out []libvirthost.Host
	for _, n := range names {
		h, ok := hs.Get(n)
		if !ok {
			return nil, fmt.Errorf("no host called %s: add it with `kiln hosts add %s URI` (kiln hosts ls lists them)", n, n)
		}
		out = append(out, h)
	}
	return out, nil
}

// RemoveFromHosts removes everything kiln made for fleet on each host (what
// `kiln fleet down` does after the supervisor has stopped its instances, so
// nothing outlives the fleet even when the supervisor was dead). It returns
// one error per host it could not clean, naming the host.
func RemoveFromHosts(ctx context.Context, hosts []libvirthost.Host, fleet string) ([]string, error) {
	var removed []string
	var errs []error
	for _, h := range hosts {
		s := &libvirtSite{host: h}
		ids, err := s.RemoveFleet(ctx, fleet, nil)
		removed = append(removed, ids...)
		if err != nil {
			errs = append(errs, err)
		}
		if s.conn != nil {
			s.conn.Close()
		}
	}
	return removed, errors.Join(errs...)
}

// UsesHost reports whether the fleet runs (or may run) instances on host.
func (s Spec) UsesHost(host string) bool { return slices.Contains(s.Hosts, host) }

// hostMachines is the launcher of a fleet that runs on libvirt hosts.
func hostMachines(data string, spec Spec, dirs Dirs, store *images.Store, life context.Context,
	log func(string, ...any), nextID func() int) (machines, error) {
	hosts, err := FleetHosts(layout.Home{Data: data}.HostsFile(), spec.Hosts)
	if err != nil {
		return nil, err
	}
	var sites []site
	for _, h := range hosts {
		sites = append(sites, &libvirtSite{host: h})
	}
	return newHostLauncher(spec, dirs, store, sites, life, log, nextID), nil
}
