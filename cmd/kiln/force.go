package main

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/kiln-dev/kiln/images"
)

// forceFlagged is set when the running command defines --force: only then
// do refusals it could override say how (realMain adds forceHint).
var forceFlagged bool

// forceFlag defines the --force flag of a command that may override the
// store's refusals (an existing version, an image in use, a revoked image).
// The flag's name lives here and in forceHint only; lower packages name
// the problem, never the flag.
func forceFlag(fs *pflag.FlagSet, usage string) *bool {
	p := new(bool)
	forceFlagVar(fs, p, usage)
	return p
}

// forceFlagVar is forceFlag into p.
func forceFlagVar(fs interface {
	BoolVar(*bool, string, bool, string)
}, p *bool, usage string) {
	forceFlagged = true
	fs.BoolVar(p, "force", false, usage)
}

// forceHint is the error the user sees for err: a refusal that --force
// overrides says so, when the command has that flag.
func forceHint(err error) error {
	if !forceFlagged {
		return err
	}
	switch {
	case errors.Is(err, images.ErrRevoked):
		return fmt.Errorf("%w (pass --force to use it anyway)", err)
	case errors.Is(err, images.ErrExists):
		return fmt.Errorf("%w or pass --force to replace it", err)
	case errors.Is(err, images.ErrInUse):
		return fmt.Errorf("%w or pass --force", err)
	}
	return err
}
