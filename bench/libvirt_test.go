package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/instance"
	"github.com/kiln-dev/kiln/internal/libvirttest"
	"github.com/kiln-dev/kiln/libvirthost"
	"github.com/kiln-dev/kiln/qemu"
)

// libvirt measures fleets on libvirt hosts against the local path: the
// bytes that reach a host for hello:1.0.0 and then for the layered
// hello:1.1.0, and the time to place and start one instance (to SSH) on a
// test libvirt host next to instance.Launch on this machine, same image,
// 1 CPU and 512 MiB. It needs root and Debian's libvirt daemon (see
// internal/libvirttest); without them the section says so.
func (b *bencher) libvirt() {
	b.r.Section("Fleets on libvirt hosts")
	if err := libvirttest.Available(); err != nil {
		b.add("libvirt host: skipped", Count, nil, err.Error())
		return
	}
	store, err := images.Open(filepath.Join(b.data, "images"))
	if err != nil {
		b.fail("libvirt: open store", err)
		return
	}
	var chains [][]libvirthost.Layer
	var ms []images.Manifest
	for _, ref := range []string{"hello:1.0.0", "hello:1.1.0"} {
		m, err := b.manifest(ref)
		if err == nil {
			var c []libvirthost.Layer
			if c, err = libvirthost.Chain(store, m); err == nil {
				chains, ms = append(chains, c), append(ms, m)
				continue
			}
		}
		b.fail("libvirt: chain of "+ref, err)
		return
	}
	root, err := os.MkdirTemp("", "kiln-bench-libvirt-")
	if err != nil {
		b.fail("libvirt: temp", err)
		return
	}
	defer os.RemoveAll(root)
	d, err := libvirttest.Start(root, "bench", false)
	if err != nil {
		b.fail("libvirt: start test host", err)
		return
	}
	defer d.Stop()
	ctx := context.Background()
	h := libvirthost.Host{Name: "bench", URI: d.URI}
	c, err := libvirthost.Dial(ctx, h)
	if err != nil {
		b.fail("libvirt: dial", err)
		return
	}
	defer c.Close()
	pool, err := c.EnsurePool()
	if err != nil {
		b.fail("libvirt: pool", err)
		return
	}

	// Bytes moved: hello:1.0.0 on a fresh host, then hello:1.1.0.
	var sent [2]float64
	var upload []float64
	for i, chain := range chains {
		start := time.Now()
		tr, err := pool.EnsureChain(ctx, chain)
		if err != nil {
			b.fail("libvirt: upload "+ms[i].Ref().String(), err)
			return
		}
		sent[i] = float64(tr.BytesSent)
		if i == 0 {
			upload = append(upload, time.Since(start).Seconds())
		}
	}
	b.add("upload hello:1.0.0 to a fresh host (debian:12 + hello layers), bytes sent", Bytes, sent[:1], "each layer read back and hashed too")
	b.add("upload hello:1.0.0, time", Duration, upload, "qemu+tcp on loopback")
	b.add("then hello:1.1.0, bytes sent", Bytes, sent[1:], "only its own layer: the base chain is reused by digest")

	// Place and start, against the local path.
	var remote, local []float64
	top := chains[0][len(chains[0])-1]
	for i := range b.s.fleetRuns {
		start := time.Now()
		// What the supervisor's host launcher does for each instance: ask
		// the host (free memory, kiln's domains there), place, make sure
		// the chain is there, launch with the host's forward address.
		cand := c.Candidate("bench")
		err := cand.Err
		if err == nil {
			_, err = libvirthost.Place([]libvirthost.Candidate{cand}, 1, 512<<20)
		}
		var inst *libvirthost.Instance
		if err == nil {
			_, err = pool.EnsureChain(ctx, chains[0])
		}
		if err == nil {
			inst, err = c.Launch(ctx, pool, libvirthost.LaunchOptions{
				DomainOptions: libvirthost.DomainOptions{
					Fleet: "bench", ID: fmt.Sprintf("bench-%d", i+1), Version: ms[0].Ref().String(),
					Chain: chains[0], CPUs: 1, MemoryMiB: 512, GuestPorts: []int{8080},
					ForwardAddr: libvirthost.ForwardAddr(h),
				},
				Dir: filepath.Join(root, "inst", fmt.Sprint(i)),
			})
		}
		if err != nil {
			b.fail("libvirt: place and start", err)
			return
		}
		remote = append(remote, time.Since(start).Seconds())
		inst.Remove(ctx)

		start = time.Now()
		li, err := instance.Launch(ctx, instance.Options{
			Name: fmt.Sprintf("bench-local-%d", i+1), Image: top.Path, ImageFormat: top.Format,
			Dir: filepath.Join(b.runtime, fmt.Sprintf("libvirt-local-%d", i)), CPUs: 1, MemoryMiB: 512, Accel: qemu.TCG,
		})
		if err != nil {
			b.fail("libvirt: local start", err)
			return
		}
		local = append(local, time.Since(start).Seconds())
		li.Shutdown(ctx, 20*time.Second)
		li.Remove()
	}
	b.add("place and start one instance on a libvirt host, to SSH", Duration, remote, "host info, placement, layers checked, overlay, seed upload, define, start (TCG)")
	b.add("the same on this machine (instance.Launch), to SSH", Duration, local, "overlay, seed, QEMU under TCG, as the test host runs")
}
