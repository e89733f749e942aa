package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/spf13/pflag"

	"github.com/kiln-dev/kiln/images"
)

// The store's refusals name no flag; the command that defines --force
// adds how to override them, and one that does not adds nothing.
func TestForceHint(t *testing.T) {
	ref := images.Ref{Name: "tiny", Version: "1"}
	revoked := fmt.Errorf("source: %w", &kindErr{"image tiny:1 is revoked: CVE-1", images.ErrRevoked})
	cases := []struct {
		err  error
		want string
	}{
		{images.ExistsError(ref, "bump the version"), "image tiny:1 already exists; bump the version or pass --force to replace it"},
		{revoked, "source: image tiny:1 is revoked: CVE-1 (pass --force to use it anyway)"},
		{&kindErr{"tiny:1 is in use by fleet web; stop it first", images.ErrInUse}, "tiny:1 is in use by fleet web; stop it first or pass --force"},
		{errors.New("disk full"), "disk full"},
	}
	forceFlagged = false
	for _, tc := range cases {
		if got := forceHint(tc.err).Error(); got != tc.err.Error() {
			t.Errorf("without --force defined: %q, want it unchanged", got)
		}
	}
	forceFlag(pflag.NewFlagSet("build", pflag.ContinueOnError), "replace an existing name:version")
	defer func() { forceFlagged = false }()
	for _, tc := range cases {
		got := forceHint(tc.err)
		if got.Error() != tc.want {
			t.Errorf("forceHint(%q) = %q, want %q", tc.err, got, tc.want)
		}
		if !errors.Is(got, errors.Unwrap(tc.err)) && errors.Unwrap(tc.err) != nil {
			t.Errorf("forceHint(%q) lost the error's kind", tc.err)
		}
	}
}

type kindErr struct {
	msg  string
	kind error
}

func (e *kindErr) Error() string { return e.msg }
func (e *kindErr) Unwrap() error { return e.kind }
