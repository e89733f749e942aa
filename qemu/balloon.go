package qemu

import (
	"context"
	"encoding/json"
	"fmt"
)

// The memory balloon. Loading a saved state (-loadvm) makes all of the
// guest's RAM resident on the host, free pages included, where a booted
// guest only holds what it touched. Inflating the balloon over the
// guest's free memory makes the guest hand those pages to QEMU, which
// returns them to the host; deflating it gives the guest its memory back,
// still free, and the host pays for a page again only once the guest uses
// it.

// Balloon asks the guest to leave itself bytes of RAM (QMP balloon); the
// guest gets there in its own time (BalloonActual).
func (m *Machine) Balloon(ctx context.Context, bytes int64) error {
	if bytes <= 0 {
		return fmt.Errorf("balloon: %d bytes is not a size", bytes)
	}
	_, err := m.QMP(ctx, "balloon", map[string]int64{"value": bytes})
	return err
}

// BalloonActual is the RAM the guest has left itself now (QMP
// query-balloon): its memory size less what is in the balloon.
func (m *Machine) BalloonActual(ctx context.Context) (int64, error) {
	out, err := m.QMP(ctx, "query-balloon", nil)
	if err != nil {
		return 0, err
	}
	var info struct {
		Actual int64 `json:"actual"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return 0, fmt.Errorf("query-balloon: %w", err)
	}
	return info.Actual, nil
}
