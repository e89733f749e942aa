package bench

import (
	"fmt"

	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/savedstate"
)

// echoTemplate is a build whose only provisioner is `echo hello`, on the
// boot inputs of examples/hello, so it resumes hello's saved guest.
const echoTemplate = "e2e/testdata/warm/warm.kiln.hcl"

// ---- warm starts ----

// warmBuilds measures builds that resume a saved guest, beside the cold
// builds above: the first warm-enabled build (which boots and saves), then
// BENCH_BUILD_RUNS builds of hello and of the echo template that resume.
func (b *bencher) warmBuilds() {
	b.r.Section("Warm builds (resume the guest the first build saved)")
	save, err := b.build("--version", "1.0.0-save")
	if err == nil && save.m.Boot != "saved" {
		err = fmt.Errorf("the first warm-enabled build did not save its guest (boot %q)", save.m.Boot)
	}
	if err != nil {
		b.fail("saving build", err)
		return
	}
	if len(b.coldBuilds) > 0 {
		b.add("first build's extra cost (saves the guest)", Duration, []float64{save.res.wall().Seconds() - Median(b.coldBuilds)},
			"its wall clock minus the cold builds' median; the save itself pauses the guest while its disk is copied")
		b.add("first build's extra cost outside provisioning", Duration, []float64{save.outsideProvisioning() - Median(b.coldOutside)},
			"the same, each build's provisioning left out: apt's time on the network varies by more than the save costs")
	}
	if s, ok, err := savedstate.Open(layout.Default().Cache).Lookup(save.m.SavedState); ok && err == nil {
		b.add("saved state size (debian:12, 2 CPUs, 1 GiB)", Bytes, []float64{float64(s.Size)}, "overlay with the machine's memory inside, seed, keys")
	}
	var hello, restore, echo, provisioning, outside []float64
	for i := range b.s.buildRuns {
		br, err := b.build("--version", fmt.Sprintf("1.0.0-warm%d", i))
		if err == nil && br.m.Boot != "resumed" {
			err = fmt.Errorf("a warm build booted (%q)", br.m.Boot)
		}
		if err != nil {
			b.fail("warm build", err)
			continue
		}
		hello = append(hello, br.res.wall().Seconds())
		if boot, ok := br.phase("boot"); ok {
			restore = append(restore, boot)
		}
		if p, ok := br.phase("provision"); ok {
			provisioning = append(provisioning, p)
		}
		outside = append(outside, br.outsideProvisioning())
		er, err := b.buildTemplate(echoTemplate, "--var", fmt.Sprintf("version=0.0.%d-echo", i))
		if err == nil && er.m.Boot != "resumed" {
			err = fmt.Errorf("the echo build booted (%q)", er.m.Boot)
		}
		if err != nil {
			b.fail("warm echo build", err)
			continue
		}
		echo = append(echo, er.res.wall().Seconds())
	}
	b.add("warm build of hello: restore to SSH login", Duration, restore, "the boot step: copy the state, QEMU -loadvm, SSH with the resume key, new build key, clock, entropy")
	b.add("warm build of hello: total", Duration, hello, "")
	if len(hello) > 0 && len(b.coldBuilds) > 0 {
		b.add("warm build of hello: total ÷ cold build's", Count, []float64{Median(hello) / Median(b.coldBuilds)}, "a ratio of the medians")
	}
	b.add("warm build of hello: provisioning", Duration, provisioning, "the same provisioners as the cold builds'; apt's time on the network varies from run to run")
	if len(outside) > 0 && len(b.coldOutside) > 0 {
		b.add("warm build of hello outside provisioning ÷ cold build's", Count, []float64{Median(outside) / Median(b.coldOutside)},
			"a ratio of the medians, each build's provisioning left out: what resuming saves")
	}
	b.add("warm build whose only provisioner is `echo hello`", Duration, echo, echoTemplate)
}

// warmFleets measures fleets whose instances resume a saved guest of
// their image: one instance of each image first (it boots and saves), then
// a fleet of 4 and a 2-instance rollout that only resume.
func (b *bencher) warmFleets() {
	b.r.Section("Warm fleets (instances resume a saved guest of their image)")
	var first []float64
	for _, ref := range []string{"hello:1.0.0", "hello:1.1.0"} {
		f, err := b.fleetOnce("warmsave", ref, 1, false, false, nil)
		if err != nil {
			b.fail("warm fleet (saving) of "+ref, err)
			continue
		}
		first = append(first, f.healthy.Seconds())
	}
	b.add("N=1, first instance of an image: until healthy", Duration, first, "boots, saves the guest, takes a new identity; one sample per image")
	f, err := b.fleetOnce("warm4", "hello:1.0.0", 4, false, false, nil)
	if err != nil {
		b.fail("warm fleet of 4", err)
	} else {
		b.add("N=4 warm: until all healthy", Duration, []float64{f.healthy.Seconds()}, "from the start of `kiln fleet up`; every instance resumed")
		b.add("QEMU memory per resumed instance (VmRSS)", Bytes, f.qemuRSS, "--memory 512M, once healthy and settled (each gives its free memory back in the background); compare the cold figure above")
	}
	var ro rolloutStats
	if _, err := b.fleetOnce("warmro", "hello:1.0.0", 2, true, false, &ro); err != nil {
		b.fail("warm rollout", err)
		return
	}
	b.add("N=2 warm rollout total (kiln rollout, --bake 5s)", Duration, ro.total, "green resumes beside blue, checks, switch, bake, drain")
	b.add("failed requests during the warm rollout", Count, ro.failures, "")
}
