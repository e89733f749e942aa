package qemu

import (
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Host ports are drawn from below the Linux (32768+) and macOS (49152+)
// ephemeral ranges, so outgoing connections rarely hold the port we want.
const (
	portMin = 20000
	portMax = 32767 // inclusive
)

// pickPorts returns n distinct random ports in [portMin, portMax] that are not
// in avoid. It never probes: a probed-then-closed port can be taken by
// someone else before QEMU binds it, so Start instead lets QEMU bind and
// retries with new ports when the bind fails.
func pickPorts(r *rand.Rand, n int, avoid []int) []int {
	out := make([]int, 0, n)
	for len(out) < n {
		p := portMin + r.IntN(portMax-portMin+1)
		if !slices.Contains(avoid, p) && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func randomPorts(n int, avoid []int) []int {
	return pickPorts(rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), n, avoid)
}

// forwardFailure matches QEMU's message when slirp cannot bind a host port,
// e.g. on QEMU 7.2:
//
//	qemu-system-x86_64: -netdev user,id=net0,hostfwd=tcp:127.0.0.1:34567-:22: Could not set up host forwarding rule 'tcp:127.0.0.1:34567-:22'
var forwardFailure = regexp.MustCompile(`Could not set up host forwarding rule '(?:tcp|udp)?:?[^:']*:(\d+)-`)

const forwardFailureText = "Could not set up host forwarding rule"

// failedForwardPort reports whether QEMU's stderr says a host forward could
// not be bound, and which host port (0 if the message did not say).
func failedForwardPort(stderr string) (port int, failed bool) {
	if m := forwardFailure.FindStringSubmatch(stderr); m != nil {
		p, _ := strconv.Atoi(m[1])
		return p, true
	}
	return 0, strings.Contains(stderr, forwardFailureText)
}
