// Package fleet runs local fleets of instances made from image versions:
// health checks, a TCP load balancer in front of them and blue/green
// rollouts with automatic rollback. Everything here talks to instances
// through the Instance and Launcher interfaces, so the logic is tested
// without booting VMs; the QEMU-backed implementation lives with the
// supervisor that owns the VMs.
package fleet

import "context"

// Instance is one running server of a fleet. Real ones are QEMU VMs; tests
// use fakes.
type Instance interface {
	ID() string      // e.g. "web-3"
	Version() string // image ref, e.g. "hello:1.1.0"
	// Addr is the "127.0.0.1:PORT" the host reaches guestPort on, or "" when
	// that guest port is not forwarded.
	Addr(guestPort int) string
	// Exec runs cmd in the guest, for exec health checks.
	Exec(ctx context.Context, cmd string) (exitStatus int, err error)
	// Done is closed when the instance died (or was stopped).
	Done() <-chan struct{}
}

// Launcher starts and stops instances; a rollout uses it to create green
// and remove blue.
type Launcher interface {
	// Launch starts n instances of version. On error none are left running.
	Launch(ctx context.Context, version string, n int) ([]Instance, error)
	// Stop stops inst gracefully and removes it. Stopping an instance that
	// is already stopped or gone must return nil: a rollout may stop an
	// instance that has already died, and a restore repeats earlier stops.
	Stop(ctx context.Context, inst Instance) error
}

// ids lists the instances' ids, in order.
func ids(insts []Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.ID()
	}
	return out
}

// addrs lists the host addresses of guestPort on insts, skipping instances
// that do not forward it (they cannot take traffic).
func addrs(insts []Instance, guestPort int) []string {
	out := make([]string, 0, len(insts))
	for _, in := range insts {
		if a := in.Addr(guestPort); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// isDone reports whether inst has died, without blocking.
func isDone(inst Instance) bool {
	select {
	case <-inst.Done():
		return true
	default:
		return false
	}
}
