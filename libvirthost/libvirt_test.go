package libvirthost

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/libvirttest"
)

// The real-libvirt tests share two test hosts: "one" in this network
// namespace and "two" in a namespace of its own, as a second machine.
var (
	hostsOnce sync.Once
	hostsErr  error
	hostsRoot string
	testHosts []*libvirttest.Daemon
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range testHosts {
		if err := d.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	if hostsRoot != "" {
		os.RemoveAll(hostsRoot)
	}
	os.Exit(code)
}

// realHosts returns the two shared test hosts, starting them on first use,
// or skips the test when this machine cannot run them.
func realHosts(t *testing.T) (one, two *libvirttest.Daemon) {
	t.Helper()
	if testing.Short() {
		t.Skip("real libvirt hosts are not started with -short")
	}
	if err := libvirttest.Available(); err != nil {
		t.Skipf("no test libvirt hosts: %v", err)
	}
	hostsOnce.Do(func() {
		if hostsRoot, hostsErr = os.MkdirTemp("", "kiln-libvirt-hosts-"); hostsErr != nil {
			return
		}
		for _, h := range []struct {
			name     string
			isolated bool
		}{{"one", false}, {"two", true}} {
			d, err := libvirttest.Start(hostsRoot, h.name, h.isolated)
			if err != nil {
				hostsErr = err
				return
			}
			testHosts = append(testHosts, d)
		}
	})
	if hostsErr != nil {
		t.Fatal(hostsErr)
	}
	return testHosts[0], testHosts[1]
}

// dial connects to a test host and closes the connection after the test.
func dial(t *testing.T, d *libvirttest.Daemon) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, Host{Name: d.Name, URI: d.URI})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
