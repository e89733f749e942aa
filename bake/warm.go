package bake

import (
	"context"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/instance"
	"github.com/kiln-dev/kiln/savedstate"
)

// Warm starts: the first build of a base saves the booted guest once SSH
// and cloud-init are done (before any provisioner), and later builds with
// the same boot inputs resume it instead of booting. A state that does not
// resume is dropped and the build boots cold.

// Boot kinds recorded in the manifest.
const (
	bootCold    = "cold"    // booted; nothing saved
	bootSaved   = "saved"   // booted, then saved for later builds
	bootResumed = "resumed" // resumed a saved state
)

// coldReason says why this build must not use or make a saved state, or "".
func (b *builder) coldReason() string {
	switch {
	case b.opts.Cold:
		return "--cold"
	case !b.spec.Warm:
		return "warm = false"
	case b.spec.Seed != nil || b.spec.Login != nil:
		return "the template brings its own seed and login"
	case b.spec.SkipCloudInitWait:
		return "kiln does not wait for this template's cloud-init, and saves a guest only once it is done"
	}
	for _, s := range b.secrets {
		if s != "" && strings.Contains(string(b.spec.UserData), s) {
			// A saved state outlives the build; secrets must not.
			return "the template's cloud-init holds a sensitive variable"
		}
	}
	return ""
}

// bootWarm resumes a saved state for o when there is one that works. It
// returns false when the build should boot cold, having said why if a
// state was there, and sets b.saveAs when the cold boot should be saved.
func (b *builder) bootWarm(ctx context.Context, o instance.Options) (bool, error) {
	if why := b.coldReason(); why != "" {
		b.say("booting cold (%s)", why)
		return false, nil
	}
	in, err := instance.StateInputs(ctx, o, b.source.base.Checksum, "build")
	if err != nil {
		b.say("booting cold: cannot tell which saved state fits (%v)", err)
		return false, nil
	}
	states := savedstate.Open(b.opts.CacheDir)
	states.ReclaimPending(time.Hour)
	key := in.Key()
	s, found, err := states.Lookup(key)
	if found && err == nil {
		inst, rerr := instance.Resume(ctx, o, s)
		if rerr == nil {
			b.inst, b.bootKind, b.savedState = inst, bootResumed, key
			return true, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		err = rerr
	}
	if found {
		states.Drop(key)
		b.say("warning: saved state %s does not resume (%v); dropped it, booting cold", key, err)
	}
	b.saveAs = &in
	return false, nil
}

// saveState saves the freshly booted guest for later builds. A failed save
// only costs later builds their warm start, unless it left the guest
// unreachable.
func (b *builder) saveState(ctx context.Context) error {
	start := time.Now()
	states := savedstate.Open(b.opts.CacheDir)
	p, err := states.Begin()
	if err == nil {
		// Its free memory as it is: a build's guest has a lot of it (1 GiB
		// for hello, ~750 MiB free), zeroing it took 4 s under TCG, and
		// would make the state ~70 MiB smaller.
		err = b.inst.Save(ctx, p, instance.KeepFreeMemory)
	}
	if err != nil {
		if p != nil {
			p.Abort()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if _, perr := b.inst.SSH.Output(ctx, "true"); perr != nil {
			return err
		}
		b.say("could not save the booted guest for warm starts (%v); the build goes on", err)
		return nil
	}
	m := savedstate.Meta{
		Inputs: *b.saveAs, Base: b.source.base.Source, BasePath: b.source.path,
		InstanceID: b.inst.InstanceID, Saved: time.Now().UTC(),
	}
	if b.source.parent != nil {
		m.Base, m.BaseStored = b.source.parent.Ref, true
	}
	if err := p.Commit(m); err != nil {
		b.say("could not keep the saved guest (%v); the build goes on", err)
		return nil
	}
	key := b.saveAs.Key()
	b.bootKind, b.savedState = bootSaved, key
	size := ""
	if s, ok, err := states.Lookup(key); ok && err == nil {
		size = " (" + disk.FormatSize(s.Size) + ")"
	}
	b.say("saved the booted guest as %s%s in %s: later builds resume it", key, size, durationString(time.Since(start)))
	return nil
}
