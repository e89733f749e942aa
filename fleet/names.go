package fleet

import (
	"errors"
	"regexp"
)

// MaxInstances bounds a fleet's size: every instance is a VM on this
// machine. Flags, fleet files and the supervisor all ask this one number.
const MaxInstances = 16

// nameRule: a fleet's name is a folder name and the prefix of its
// instances' hostnames (NAME-<n>, at most 63 characters).
var nameRule = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// CheckName says why name cannot name a fleet, or nil.
func CheckName(name string) error {
	if !nameRule.MatchString(name) {
		return errors.New("use 1 to 31 lower-case letters, digits and '-', starting with a letter or digit")
	}
	return nil
}
