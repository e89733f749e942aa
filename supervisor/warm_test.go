package supervisor

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/savedstate"
)

// fakeWarm is a saved-state cache and the boots warmStart asks for,
// counting each; save blocks until release is closed, so callers for the
// same key pile up behind it.
type fakeWarm struct {
	mu                 sync.Mutex
	saved              bool
	saves, colds, drop atomic.Int32
	resumes            atomic.Int32
	resumeErr          error
	saveErr            error
	saveKeeps          bool // the saving boot really leaves a state
	release            chan struct{}
}

func (f *fakeWarm) steps() warmSteps[string] {
	return warmSteps[string]{
		lookup: func() (savedstate.State, bool, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return savedstate.State{}, f.saved, nil
		},
		resume: func(savedstate.State) (string, error) {
			f.resumes.Add(1)
			if f.resumeErr != nil {
				return "", f.resumeErr
			}
			return "resumed", nil
		},
		drop: func(error) { f.drop.Add(1) },
		save: func() (string, error) {
			f.saves.Add(1)
			if f.release != nil {
				<-f.release
			}
			if f.saveErr != nil {
				return "", f.saveErr
			}
			f.mu.Lock()
			f.saved = f.saveKeeps
			f.mu.Unlock()
			return "booted and saved", nil
		},
		cold: func() (string, error) { f.colds.Add(1); return "cold", nil },
		what: "hello:1.0.0",
	}
}

// startMany runs n warmStarts for one key at once; the first is running
// save (blocked on release) before the others start.
func startMany(t *testing.T, ctx context.Context, f *fakeWarm, key string, n int) ([]string, []error) {
	t.Helper()
	f.release = make(chan struct{})
	got, errs := make([]string, n), make([]error, n)
	var wg sync.WaitGroup
	wg.Go(func() { got[0], errs[0] = warmStart(ctx, key, f.steps()) })
	for f.saves.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < n; i++ {
		wg.Go(func() { got[i], errs[i] = warmStart(ctx, key, f.steps()) })
	}
	// The waiters are parked on the saving boot: none of them booted.
	time.Sleep(50 * time.Millisecond)
	if s, c := f.saves.Load(), f.colds.Load(); s != 1 || c != 0 {
		t.Errorf("while the first instance saves: %d saves, %d cold boots; want 1 and 0", s, c)
	}
	close(f.release)
	wg.Wait()
	return got, errs
}

func TestWarmStartResumesASavedState(t *testing.T) {
	f := &fakeWarm{saved: true}
	got, err := warmStart(t.Context(), "k-resume", f.steps())
	if err != nil || got != "resumed" || f.saves.Load() != 0 || f.colds.Load() != 0 {
		t.Fatalf("got %q, %v; %d saves, %d colds", got, err, f.saves.Load(), f.colds.Load())
	}
}

func TestWarmStartDropsAStateThatDoesNotResume(t *testing.T) {
	f := &fakeWarm{saved: true, resumeErr: errors.New("QEMU refused -loadvm")}
	got, err := warmStart(t.Context(), "k-corrupt", f.steps())
	if err != nil || got != "cold" || f.drop.Load() != 1 {
		t.Fatalf("got %q, %v, %d drops; want a cold boot after one drop", got, err, f.drop.Load())
	}
}

func TestWarmStartOneBootSavesForTheOthers(t *testing.T) {
	f := &fakeWarm{saveKeeps: true}
	got, errs := startMany(t, t.Context(), f, "k-share", 4)
	for i := range got {
		if errs[i] != nil {
			t.Fatalf("instance %d: %v", i, errs[i])
		}
	}
	if got[0] != "booted and saved" || f.saves.Load() != 1 || f.resumes.Load() != 3 || f.colds.Load() != 0 {
		t.Errorf("got %v: %d saves, %d resumes, %d colds; want one save and three resumes", got, f.saves.Load(), f.resumes.Load(), f.colds.Load())
	}
}

func TestWarmStartSavingBootFails(t *testing.T) {
	f := &fakeWarm{saveErr: errors.New("SSH did not answer")}
	_, errs := startMany(t, t.Context(), f, "k-fail", 3)
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "SSH did not answer") {
			t.Errorf("instance %d: %v, want the saving boot's error", i, err)
		}
	}
	if i := errs[1]; !strings.Contains(i.Error(), "the instance that was to save a guest of hello:1.0.0 failed") {
		t.Errorf("a waiter's error %q does not say the saving boot failed", i)
	}
	if f.colds.Load() != 0 {
		t.Errorf("%d waiters booted cold after the saving boot failed", f.colds.Load())
	}
}

func TestWarmStartBootedButNotSaved(t *testing.T) {
	f := &fakeWarm{saveKeeps: false}
	got, errs := startMany(t, t.Context(), f, "k-nosave", 3)
	for i := 1; i < 3; i++ {
		if errs[i] != nil || got[i] != "cold" {
			t.Errorf("instance %d: %q, %v; want a cold boot when no state was saved", i, got[i], errs[i])
		}
	}
	if f.saves.Load() != 1 {
		t.Errorf("%d saving boots, want 1", f.saves.Load())
	}
}

func TestWarmStartWaiterCancelled(t *testing.T) {
	f := &fakeWarm{release: make(chan struct{})}
	go warmStart(t.Context(), "k-cancel", f.steps())
	for f.saves.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := warmStart(ctx, "k-cancel", f.steps()); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled waiter returned %v", err)
	}
	close(f.release)
}
