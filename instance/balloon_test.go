package instance

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeBalloon is a guest's balloon driver: each query moves the balloon
// step bytes towards the target, but never below floor (what the guest
// cannot give); deflateFails makes it refuse to give memory back.
type fakeBalloon struct {
	mu                  sync.Mutex
	full, actual, floor int64
	target, step        int64
	targets             []int64
	deflateFails        bool
	noDevice            bool
}

func (f *fakeBalloon) Balloon(_ context.Context, bytes int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.target = bytes
	f.targets = append(f.targets, bytes)
	return nil
}

func (f *fakeBalloon) BalloonActual(context.Context) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noDevice {
		return 0, errors.New("No balloon device has been activated")
	}
	switch {
	case f.target != 0 && f.actual > f.target:
		f.actual = max(f.actual-f.step, f.target, f.floor)
	case f.target != 0 && f.actual < f.target && !f.deflateFails:
		f.actual = min(f.actual+f.step, f.target)
	}
	return f.actual, nil
}

const mib = 1 << 20

func TestGiveBackFreeInflatesOverFreeMemoryThenDeflates(t *testing.T) {
	f := &fakeBalloon{full: 512 * mib, actual: 512 * mib, step: 64 * mib}
	if err := giveBackFree(context.Background(), f, 300*mib); err != nil {
		t.Fatal(err)
	}
	want := []int64{512*mib - (300*mib - balloonKeep), 512 * mib}
	if len(f.targets) != 2 || f.targets[0] != want[0] || f.targets[1] != want[1] {
		t.Errorf("balloon targets = %v, want %v", f.targets, want)
	}
	if f.actual != f.full {
		t.Errorf("the guest was left %d MiB of %d", f.actual/mib, f.full/mib)
	}
}

// A guest that gives less than asked stalls the inflation, which is only
// noted: the balloon still deflates in full.
func TestGiveBackFreeStalledGuestStillDeflates(t *testing.T) {
	f := &fakeBalloon{full: 512 * mib, actual: 512 * mib, step: 64 * mib, floor: 400 * mib}
	if err := giveBackFree(context.Background(), f, 300*mib); err != nil {
		t.Fatal(err)
	}
	if f.actual != f.full {
		t.Errorf("the guest was left %d MiB of %d", f.actual/mib, f.full/mib)
	}
}

// A balloon that does not deflate leaves the guest short: an error.
func TestGiveBackFreeBalloonThatDoesNotDeflateFails(t *testing.T) {
	defer func(b time.Duration) { balloonBound = b }(balloonBound)
	balloonBound = 300 * time.Millisecond
	f := &fakeBalloon{full: 512 * mib, actual: 512 * mib, step: 512 * mib, deflateFails: true}
	err := giveBackFree(context.Background(), f, 300*mib)
	if err == nil || !strings.Contains(err.Error(), "deflate") {
		t.Fatalf("err = %v, want a deflate error", err)
	}
}

// Little free memory, or no balloon in the machine: nothing to do.
func TestGiveBackFreeNothingToDo(t *testing.T) {
	f := &fakeBalloon{full: 512 * mib, actual: 512 * mib, step: mib}
	if err := giveBackFree(context.Background(), f, 2*balloonKeep); err != nil || len(f.targets) != 0 {
		t.Errorf("small free: err %v, targets %v", err, f.targets)
	}
	f.noDevice = true
	if err := giveBackFree(context.Background(), f, 300*mib); err != nil || len(f.targets) != 0 {
		t.Errorf("no device: err %v, targets %v", err, f.targets)
	}
}
