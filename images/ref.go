// Package images is kiln's local image store: content-addressed blobs plus
// one JSON manifest per name:version, like a tiny registry on disk.
//
// Layout under the store root:
//
//	blobs/sha256/<hex>                 image files, read-only once stored
//	manifests/<name>/<version>.json    one manifest per version
//	logs/<name>/<version>/<log>        build.log, serial.log
//	tmp/                               staging (same filesystem, so renames are atomic)
//	locks/<name>.lock                  per-name lock, holder's pid inside
//	locks/.gc.lock                     store-wide lock: gc exclusive, Add's commit shared
//	channels/<name>/<channel>.json     movable pointers (hello@stable) and their history
//	revoked/<name>/<version>.json      why a version must not be used any more
//
// Everything is staged in tmp/ and renamed into place, and the manifest is
// written last, so readers never see a manifest whose blob is missing and a
// crash never leaves a half-written file where it could be read.
package images

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Sentinel errors, for errors.Is. The errors returned carry a message meant
// for people (with the ref and what to do); these only classify them.
var (
	ErrInvalidRef = errors.New("invalid image ref")
	ErrNotFound   = errors.New("image not found")
	ErrExists     = errors.New("image already exists")
)

// kindError is an error with its own message that still matches a sentinel,
// so the text can say what to do without repeating the sentinel's words.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func notFound(r Ref) error {
	return &kindError{fmt.Sprintf("image %s not found; see \"kiln images ls\"", r), ErrNotFound}
}

func exists(r Ref) error { return ExistsError(r, "choose another version") }

// ExistsError says r is taken, with advice on what to do instead; it
// matches ErrExists. The message names no flag: the command that can
// override it adds that (cmd/kiln's force hint).
func ExistsError(r Ref, advice string) error {
	return &kindError{fmt.Sprintf("image %s already exists; %s", r, advice), ErrExists}
}

// Limits keep names usable as single file names on every filesystem.
const (
	maxNameLen    = 128
	maxVersionLen = 128
	maxChannelLen = 128
)

// Latest is the built-in channel: name@latest always means the newest
// version, exactly like a bare name. It is never stored and cannot be tagged.
const Latest = "latest"

// Ref names an image in the store: a version (name:version), a channel
// (name@channel), or neither, which means "the newest version"; all three
// are resolved by Store.Resolve. Version and Channel are never both set.
type Ref struct {
	Name    string
	Version string
	Channel string
}

// ParseRef parses "name:version", "name@channel" or "name". Names, versions
// and channels become file and folder names in the store, which is why they
// are restricted: a name is [a-z0-9][a-z0-9._-]*, a version
// [A-Za-z0-9][A-Za-z0-9._+-]* and a channel [A-Za-z][A-Za-z0-9._+-]*, none
// longer than 128 characters. Errors match ErrInvalidRef.
func ParseRef(s string) (Ref, error) {
	fail := func(reason string) (Ref, error) {
		return Ref{}, &kindError{fmt.Sprintf("invalid image ref %q: %s", s, reason), ErrInvalidRef}
	}
	if strings.Contains(s, ":") && strings.Contains(s, "@") {
		return fail(`give either name:version or name@channel, not both`)
	}
	if name, channel, ok := strings.Cut(s, "@"); ok {
		if reason := checkName(name); reason != "" {
			return fail(reason)
		}
		if channel == "" {
			return fail(`channel after "@" is empty`)
		}
		if reason := checkChannel(channel); reason != "" {
			return fail(reason)
		}
		return Ref{Name: name, Channel: channel}, nil
	}
	name, version, hasColon := strings.Cut(s, ":")
	if reason := checkName(name); reason != "" {
		return fail(reason)
	}
	if hasColon {
		if version == "" {
			return fail(`version after ":" is empty`)
		}
		if reason := checkVersion(version); reason != "" {
			return fail(reason)
		}
	}
	return Ref{Name: name, Version: version}, nil
}

// checkChannel returns why c is not a valid channel name, or "". Channels
// look like versions but start with a letter, so "hello@1.0" (a likely typo
// for hello:1.0) is refused rather than read as a channel.
func checkChannel(c string) string {
	switch {
	case c == "":
		return "channel is empty"
	case len(c) > maxChannelLen:
		return fmt.Sprintf("channel is longer than %d characters", maxChannelLen)
	}
	for i := 0; i < len(c); i++ {
		ch := c[i]
		if !(isAlnum(ch) || ch >= 'A' && ch <= 'Z' || ch == '.' || ch == '_' || ch == '+' || ch == '-') {
			return "channel must be letters, digits, ., _, + or -"
		}
	}
	if !(c[0] >= 'a' && c[0] <= 'z' || c[0] >= 'A' && c[0] <= 'Z') {
		return "channel must start with a letter (hello:1.0 names a version)"
	}
	return ""
}

// CheckName says why name cannot name an image, or nil: the store's rule,
// which templates and flags ask too.
func CheckName(name string) error {
	if reason := checkName(name); reason != "" {
		return errors.New(reason)
	}
	return nil
}

// CheckVersion says why v cannot be an image version, or nil.
func CheckVersion(v string) error {
	if reason := checkVersion(v); reason != "" {
		return errors.New(reason)
	}
	return nil
}

// checkName returns why name is not a valid image name, or "".
func checkName(name string) string {
	switch {
	case name == "":
		return "name is empty"
	case len(name) > maxNameLen:
		return fmt.Sprintf("name is longer than %d characters", maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return "name must be lower-case letters, digits, ., _ or -"
		}
	}
	if !isAlnum(name[0]) {
		return "name must start with a lower-case letter or digit"
	}
	return ""
}

// checkVersion returns why version is not a valid image version, or "".
func checkVersion(v string) string {
	switch {
	case v == "":
		return "version is empty"
	case len(v) > maxVersionLen:
		return fmt.Sprintf("version is longer than %d characters", maxVersionLen)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(isAlnum(c) || c >= 'A' && c <= 'Z' || c == '.' || c == '_' || c == '+' || c == '-') {
			return "version must be letters, digits, ., _, + or -"
		}
	}
	if !isAlnum(v[0]) && !(v[0] >= 'A' && v[0] <= 'Z') {
		return "version must start with a letter or digit"
	}
	return ""
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// validate checks r for use as a store path. needVersion is false where an
// empty version ("newest", or a channel) is acceptable.
func (r Ref) validate(needVersion bool) error {
	fail := func(reason string) error {
		return &kindError{fmt.Sprintf("invalid image ref %q: %s", r.String(), reason), ErrInvalidRef}
	}
	if reason := checkName(r.Name); reason != "" {
		return fail(reason)
	}
	if r.Channel != "" {
		if r.Version != "" {
			return fail("give either a version or a channel, not both")
		}
		if reason := checkChannel(r.Channel); reason != "" {
			return fail(reason)
		}
	}
	if r.Version == "" && !needVersion {
		return nil
	}
	if reason := checkVersion(r.Version); reason != "" {
		return fail(reason)
	}
	return nil
}

// String returns "name:version", "name@channel", or "name" when both are
// empty, so that ParseRef(r.String()) == r.
func (r Ref) String() string {
	switch {
	case r.Version != "" && r.Channel != "": // invalid; show both so errors say why
		return r.Name + ":" + r.Version + "@" + r.Channel
	case r.Channel != "":
		return r.Name + "@" + r.Channel
	case r.Version == "":
		return r.Name
	}
	return r.Name + ":" + r.Version
}

// LooksLikeRef reports whether a command-line argument should be treated as
// an image ref rather than a file: it is not empty, has no path separator,
// does not start with "." or "~", does not end in .qcow2, .img or .raw, and
// is not an existing file. It does not check the ref's syntax, on purpose: a
// mistyped ref should get ParseRef's explanation, not "no such file".
func LooksLikeRef(s string) bool {
	if s == "" || strings.ContainsRune(s, '/') || strings.ContainsRune(s, os.PathSeparator) ||
		strings.HasPrefix(s, ".") || strings.HasPrefix(s, "~") {
		return false
	}
	lower := strings.ToLower(s)
	for _, ext := range []string{".qcow2", ".img", ".raw"} {
		if strings.HasSuffix(lower, ext) {
			return false
		}
	}
	if _, err := os.Stat(s); err == nil {
		return false
	}
	return true
}
