package supervisor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/instance"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/savedstate"
)

// Warm starts for fleets: the first instance of an image boots, waits for
// cloud-init, and is saved; every later instance of that image (in this
// fleet or another, in a rollout or a replacement) resumes the saved guest
// and is given its own identity before it takes traffic: machine-id, SSH
// host key, hostname, clock and kernel entropy. Spec.Cold boots every
// instance instead.

// warmHostname is the hostname of the boot that makes a fleet's saved
// state; every instance gets its own name after it resumes, so one state
// serves every fleet of an image.
const warmHostname = "kiln-warm"

// saving holds a channel per saved-state key while an instance boots to
// make that state; instances of the same image wait for it rather than
// all booting.
var saving = struct {
	sync.Mutex
	m map[string]*savingBoot
}{m: map[string]*savingBoot{}}

// savingBoot is one instance booting to make a saved state.
type savingBoot struct {
	done chan struct{}
	err  error // set before done is closed: the boot itself failed
}

// start boots instance o of image m, warm when it can.
func (l *launcher) start(ctx context.Context, m images.Manifest, o instance.Options) (*instance.Instance, error) {
	l.mu.Lock()
	cold := l.spec.Cold
	l.mu.Unlock()
	if cold {
		return instance.Launch(ctx, o)
	}
	shape := o
	shape.Name = warmHostname
	in, err := instance.StateInputs(ctx, shape, m.Digest, "fleet")
	if err != nil {
		l.log("instance %s boots cold: cannot tell which saved state fits (%v)", o.Name, err)
		return instance.Launch(ctx, o)
	}
	states := savedstate.Open(layout.Default().Cache)
	key := in.Key()
	return warmStart(ctx, key, warmSteps[*instance.Instance]{
		lookup: func() (savedstate.State, bool, error) { return states.Lookup(key) },
		resume: func(s savedstate.State) (*instance.Instance, error) {
			inst, err := instance.ResumeAs(ctx, o, s)
			if err == nil {
				l.log("instance %s resumed from saved state %s in %.1fs", o.Name, key, inst.BootTime.Seconds())
			}
			return inst, err
		},
		drop: func(err error) {
			states.Drop(key)
			l.log("warning: saved state %s does not resume (%v); dropped it, instance %s boots cold", key, err, o.Name)
		},
		save: func() (*instance.Instance, error) { return l.bootAndSave(ctx, o, states, in, m) },
		cold: func() (*instance.Instance, error) { return instance.Launch(ctx, o) },
		what: m.Ref().String(),
	})
}

// warmSteps are what warmStart does with a saved state and the instance it
// starts; the supervisor's are real, tests give fakes.
type warmSteps[T any] struct {
	lookup func() (savedstate.State, bool, error) // the saved state of the key, if any
	resume func(savedstate.State) (T, error)
	drop   func(err error)   // the state did not resume (err): remove it, say so
	save   func() (T, error) // boot, save the state, then become the instance
	cold   func() (T, error)
	what   string // the image, for messages
}

// warmStart starts one instance from the saved state of key: it resumes
// the state when there is one (dropping it and booting cold when it does
// not resume); when there is none, the first caller boots and saves it
// while every other caller for the same key waits and then resumes it,
// rather than all booting. If the saving boot fails, the waiters fail
// too (their batch fails with it anyway); if it booted but could not
// save, they boot cold.
func warmStart[T any](ctx context.Context, key string, w warmSteps[T]) (T, error) {
	var zero T
	for waited := false; ; waited = true {
		s, found, err := w.lookup()
		if found && err == nil {
			inst, rerr := w.resume(s)
			if rerr == nil {
				return inst, nil
			}
			if ctx.Err() != nil {
				return zero, ctx.Err()
			}
			err = rerr
		}
		if found {
			w.drop(err)
			return w.cold()
		}
		if waited {
			// The instance that was to save it booted but could not save:
			// do not try again.
			return w.cold()
		}
		saving.Lock()
		sb, busy := saving.m[key]
		if !busy {
			sb = &savingBoot{done: make(chan struct{})}
			saving.m[key] = sb
		}
		saving.Unlock()
		if busy {
			select {
			case <-sb.done:
				if sb.err != nil {
					return zero, fmt.Errorf("the instance that was to save a guest of %s failed: %w", w.what, sb.err)
				}
				continue
			case <-ctx.Done():
				return zero, ctx.Err()
			}
		}
		inst, err := w.save()
		saving.Lock()
		sb.err = err
		close(sb.done)
		delete(saving.m, key)
		saving.Unlock()
		return inst, err
	}
}

// bootAndSave boots o under the neutral hostname, saves it once cloud-init
// is done, and then makes it instance o with an identity of its own.
func (l *launcher) bootAndSave(ctx context.Context, o instance.Options, states savedstate.Cache, in savedstate.Inputs, m images.Manifest) (*instance.Instance, error) {
	so := o
	so.Name = warmHostname
	inst, err := instance.Launch(ctx, so)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*instance.Instance, error) {
		inst.Remove()
		return nil, err
	}
	if err := inst.SSH.WaitCloudInit(ctx); err != nil {
		return fail(err)
	}
	start := time.Now()
	p, err := states.Begin()
	if err == nil {
		// Zeroed: every instance of the image loads this state, and a
		// smaller one loads faster (a hello state 272 -> 217 MiB).
		if err = inst.Save(ctx, p, instance.ZeroFreeMemory); err == nil {
			err = p.Commit(savedstate.Meta{Inputs: in, Base: m.Ref().String(), BaseStored: true,
				BasePath: o.Image, InstanceID: inst.InstanceID, Saved: time.Now().UTC()})
		} else {
			p.Abort()
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		l.log("could not save instance %s for warm starts (%v)", o.Name, err)
	} else {
		l.log("saved the booted %s as %s in %.1fs: its next instances resume it", m.Ref(), in.Key(), time.Since(start).Seconds())
	}
	if err := inst.Reidentify(ctx, o.Name); err != nil {
		return fail(err)
	}
	return inst, nil
}
