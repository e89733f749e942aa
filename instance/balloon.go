package instance

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Giving a guest's free memory back to the host (see qemu.Machine.Balloon).

const (
	// balloonKeep is the free memory left to the guest while the balloon
	// is inflated, so that it never has to drop its page cache for it.
	balloonKeep = 32 << 20
	// balloonStall ends an inflation that has stopped moving: the guest
	// gives what it can.
	balloonStall = 500 * time.Millisecond
	// balloonSlack is how far short of its target an inflation may end:
	// the guest's free memory moves a little between reading and inflating.
	balloonSlack = 8 << 20
)

// balloonBound bounds each of inflating and deflating (a variable for
// tests).
var balloonBound = 20 * time.Second

// giveBackFree inflates the balloon over free bytes of the guest's free
// memory, less balloonKeep, and deflates it again: the pages the guest
// put in it are returned to the host, and come back to the guest free. An
// inflation that does not get far is only noted; a balloon that does not
// deflate is an error, as the guest would be left short of memory.
func (i *Instance) giveBackFree(ctx context.Context, free int64) error {
	return giveBackFree(ctx, i.VM, free)
}

// balloon is the part of a QEMU machine giveBackFree uses.
type balloon interface {
	Balloon(ctx context.Context, bytes int64) error
	BalloonActual(ctx context.Context) (int64, error)
}

func giveBackFree(ctx context.Context, vm balloon, free int64) error {
	if free <= 2*balloonKeep {
		return nil
	}
	start := time.Now()
	full, err := vm.BalloonActual(ctx)
	if err != nil {
		slog.Debug("no memory balloon", "err", err)
		return nil
	}
	target := full - (free - balloonKeep)
	if err := vm.Balloon(ctx, target); err != nil {
		return fmt.Errorf("inflate the memory balloon: %w", err)
	}
	reached, inflateErr := waitBalloon(ctx, vm, func(actual int64) bool { return actual <= target+balloonSlack }, true)
	if err := vm.Balloon(ctx, full); err != nil {
		return fmt.Errorf("deflate the memory balloon: %w", err)
	}
	if _, err := waitBalloon(ctx, vm, func(actual int64) bool { return actual >= full }, false); err != nil {
		return fmt.Errorf("deflate the memory balloon: %w", err)
	}
	slog.Debug("gave the guest's free memory back", "asked", (free-balloonKeep)>>20, "MiB given", (full-reached)>>20,
		"took", time.Since(start).Round(time.Millisecond), "inflate", inflateErr)
	return nil
}

// waitBalloon polls the balloon until done says its size is reached and
// returns the last size. With stall, a size that stops changing for
// balloonStall ends the wait too (the guest has nothing more to give).
func waitBalloon(ctx context.Context, vm balloon, done func(int64) bool, stall bool) (int64, error) {
	deadline := time.Now().Add(balloonBound)
	last, lastChange := int64(-1), time.Now()
	for {
		actual, err := vm.BalloonActual(ctx)
		if err != nil {
			return last, err
		}
		if done(actual) {
			return actual, nil
		}
		if actual != last {
			last, lastChange = actual, time.Now()
		} else if stall && time.Since(lastChange) > balloonStall {
			return actual, fmt.Errorf("the guest stopped at %d MiB", actual>>20)
		}
		if time.Now().After(deadline) {
			return actual, fmt.Errorf("the balloon is at %d MiB after %s", actual>>20, balloonBound)
		}
		select {
		case <-ctx.Done():
			return actual, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
