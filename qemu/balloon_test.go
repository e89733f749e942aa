package qemu

import (
	"context"
	"testing"
)

// Every machine has a balloon; with no guest driver (a paused machine) it
// stays at the machine's memory size, and a size that is not one is
// refused before QMP.
func TestBalloon(t *testing.T) {
	needQEMU(t)
	ctx := context.Background()
	m := startTest(t, ctx, testConfig(t))
	got, err := m.BalloonActual(ctx)
	if err != nil || got != 64<<20 {
		t.Fatalf("BalloonActual = %d, %v; want %d", got, err, 64<<20)
	}
	if err := m.Balloon(ctx, 32<<20); err != nil {
		t.Fatalf("Balloon: %v", err)
	}
	if err := m.Balloon(ctx, 0); err == nil {
		t.Error("Balloon(0) accepted")
	}
}
