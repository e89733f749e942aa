package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/supervisor"
)

// setFleetHosts puts the libvirt hosts of `fleet up --host` into the spec,
// checked against the hosts file so a misspelt name fails before anything
// starts.
func setFleetHosts(spec *supervisor.Spec, names []string) error {
	if len(names) == 0 {
		return nil
	}
	for i, n := range names {
		if slices.Contains(names[:i], n) {
			return usageError{fmt.Sprintf("--host %s is given twice", n)}
		}
	}
	if _, err := supervisor.FleetHosts(hostsPath(), names); err != nil {
		return usageError{err.Error()}
	}
	spec.Hosts = slices.Clone(names)
	return nil
}

// hostsDownTimeout bounds removing a fleet's domains from its hosts.
const hostsDownTimeout = 2 * time.Minute

// removeFromHosts removes every domain and volume kiln made for the fleet
// on its hosts: the supervisor stops its instances as it goes down, and this
// takes whatever it could not (it was dead, or a host was unreachable).
func removeFromHosts(spec supervisor.Spec) error {
	if len(spec.Hosts) == 0 {
		return nil
	}
	hosts, err := supervisor.FleetHosts(hostsPath(), spec.Hosts)
	if err != nil {
		return fmt.Errorf("fleet %s: %w", spec.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hostsDownTimeout)
	defer cancel()
	removed, err := supervisor.RemoveFromHosts(ctx, hosts, spec.Name)
	if len(removed) > 0 {
		say("fleet %s: removed %d domain(s) left on its hosts: %s", spec.Name, len(removed), strings.Join(removed, ", "))
	}
	if err != nil {
		return fmt.Errorf("fleet %s: %w; run kiln fleet down %s again when the host answers", spec.Name, err, spec.Name)
	}
	return nil
}

// fleetsOnHost names the fleets whose spec names host, so `kiln hosts rm`
// cannot orphan their domains.
func fleetsOnHost(host string) []string {
	root := layout.Default().Fleets()
	entries, _ := os.ReadDir(root)
	var out []string
	for _, e := range entries {
		spec, err := supervisor.ReadSpec(fleetDirs(e.Name()))
		if err == nil && spec.UsesHost(host) {
			out = append(out, spec.Name)
		}
	}
	return out
}

// sshAddr is where an instance's SSH port is forwarded: its libvirt host's
// address, or this machine's loopback.
func sshAddr(in supervisor.InstanceRecord) string {
	if in.Address != "" {
		return in.Address
	}
	return "127.0.0.1"
}
