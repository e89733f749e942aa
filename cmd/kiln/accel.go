package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/qemu"
)

// accelEnv chooses the accelerator when no --accel is given (CI, make).
const accelEnv = "KILN_ACCEL"

// accelRequest is the accelerator a user asked for, and where they said it.
type accelRequest struct {
	want qemu.Accel
	from string // "--accel tcg", "KILN_ACCEL=kvm" or "" for the default
}

const accelUsage = "accelerator: auto, kvm, hvf or tcg (default: $" + accelEnv + ", else auto: KVM when a probe shows it runs a guest, else TCG)"

// addAccelFlag registers --accel, the same on every command that boots.
func addAccelFlag(fs *pflag.FlagSet) *string {
	return fs.String("accel", "", accelUsage)
}

// requestedAccel is --accel, else $KILN_ACCEL, else auto.
func requestedAccel(flag string, getenv func(string) string) (accelRequest, error) {
	from, val := "--accel", flag
	if val == "" {
		from, val = accelEnv, getenv(accelEnv)
		if val == "" {
			return accelRequest{want: qemu.Auto}, nil
		}
	}
	a, err := qemu.ParseAccel(val)
	if err != nil {
		if from == accelEnv {
			return accelRequest{}, usageError{fmt.Sprintf("%s=%s: use auto, kvm, hvf or tcg", accelEnv, val)}
		}
		return accelRequest{}, usageError{fmt.Sprintf("--accel %q: use auto, kvm, hvf or tcg", val)}
	}
	if from == accelEnv {
		from += "=" + string(a)
	} else {
		from += " " + string(a)
	}
	return accelRequest{want: a, from: from}, nil
}

// parseAccel reads the request from a command's --accel flag value.
func parseAccel(flag string) (accelRequest, error) { return requestedAccel(flag, os.Getenv) }

// accelSelector probes KVM with the verdict cached in kiln's cache folder.
func accelSelector() qemu.Selector {
	return qemu.Selector{CacheFile: layout.Default().AccelProbe()}
}

// choose resolves the request to what VMs will run under and says, on one
// line, when that is slow or not what the host seemed to offer. Commands
// call it once their input has been checked, so the line never comes
// before an error about that input.
func (r accelRequest) choose(ctx context.Context) (qemu.Choice, error) {
	c, err := accelSelector().Choose(ctx, r.want)
	if err != nil {
		if r.from != "" {
			return c, fmt.Errorf("%s: %w", r.from, err)
		}
		return c, err
	}
	if c.Note != "" && r.want == qemu.Auto {
		say("%s", c.Note)
	}
	return c, nil
}
