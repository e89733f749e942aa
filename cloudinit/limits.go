package cloudinit

import "gopkg.in/yaml.v3"

// Bounds on a user's user-data, which kiln parses and merges and which
// cloud-init parses again in the guest.
const (
	// MaxUserData is the largest user-data kiln takes: cloud-config is
	// settings and short scripts; files belong in a file provisioner.
	MaxUserData = 1 << 20
	// maxUserDataDepth bounds nesting (yaml.v3 alone allows 10000).
	maxUserDataDepth = 64
)

// deeper reports whether n nests more than limit levels.
func deeper(n *yaml.Node, limit int) bool {
	if limit < 0 {
		return true
	}
	for _, c := range n.Content {
		if deeper(c, limit-1) {
			return true
		}
	}
	return false
}
