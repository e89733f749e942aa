package qemu

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/kiln-dev/kiln/internal/proc"
)

// silentBound is how long a guest may burn CPU without writing a byte to its
// serial console before kiln decides its firmware never ran. A guest under a
// hardware accelerator prints its firmware's or kernel's first lines within
// seconds; TCG is ten times slower.
func silentBound(a Accel) time.Duration {
	if a == TCG {
		return 3 * time.Minute
	}
	return time.Minute
}

// busyShare is the share of one host CPU a silent guest must use to count as
// spinning rather than waiting: a guest idling in a boot menu uses a few
// percent; a spinning one takes what it gets, which is less than a whole CPU
// on a loaded host.
const busyShare = 0.2

// clockTicks is Linux's USER_HZ, the unit of /proc/PID/stat's CPU times; it
// is 100 on every architecture kiln runs on.
const clockTicks = 100

// WatchFirmware returns a channel that receives one error and is closed if
// the guest spins without output: its serial console stays empty past the
// accelerator's bound while QEMU keeps a CPU busy, which is how a guest looks
// whose firmware never ran (an accelerator that cannot run guest code). The
// channel is closed without a value when the guest writes output, QEMU
// exits, or ctx ends. Callers waiting for the guest (SSH) select on it.
func (m *Machine) WatchFirmware(ctx context.Context) <-chan error {
	return m.watchFirmware(ctx, silentBound(m.cfg.Accel), 5*time.Second, busyShare)
}

func (m *Machine) watchFirmware(ctx context.Context, bound, every time.Duration, minShare float64) <-chan error {
	ch := make(chan error, 1)
	start := time.Now()
	cpu0, _ := processCPU(m.Pid())
	go func() {
		defer close(ch)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-m.done:
				return
			case <-t.C:
			}
			if st, err := os.Stat(m.SerialLog()); err == nil && st.Size() > 0 {
				return
			}
			elapsed := time.Since(start)
			if elapsed < bound {
				continue
			}
			cpu, err := processCPU(m.Pid())
			if err != nil {
				return
			}
			if share := (cpu - cpu0).Seconds() / elapsed.Seconds(); share >= minShare {
				ch <- fmt.Errorf("the guest printed nothing on its serial console in %s while QEMU used %.0f%% of a CPU: its firmware never ran under %s (-cpu %s); try --accel tcg",
					elapsed.Round(time.Second), share*100, m.cfg.Accel, m.CPU())
				return
			}
		}
	}()
	return ch
}

// processCPU is the user plus system CPU time pid has used.
func processCPU(pid int) (time.Duration, error) {
	// The fields start at field 3 (state).
	f, err := proc.Stat(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
