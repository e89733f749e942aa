package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/libvirthost"
)

// hostCheckTimeout bounds how long add and ls wait for one host.
const hostCheckTimeout = 15 * time.Second

func cmdHosts(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{"say what to do: kiln hosts add NAME URI | ls | rm NAME"}
	}
	switch args[0] {
	case "add":
		return cmdHostsAdd(ctx, args[1:])
	case "ls", "list":
		return cmdHostsList(ctx, args[1:])
	case "rm", "remove":
		return cmdHostsRemove(args[1:])
	}
	return usageError{fmt.Sprintf("unknown hosts command %q: use add, ls or rm", args[0])}
}

func hostsPath() string {
	return layout.Default().HostsFile()
}

func cmdHostsAdd(ctx context.Context, args []string) error {
	fs := newFlags("hosts add", "hosts add NAME URI [--no-check]")
	noCheck := fs.Bool("no-check", false, "add the host without connecting to it first")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usageError{"give a name and a libvirt URI, e.g. kiln hosts add lab1 qemu+ssh://root@lab1/system"}
	}
	h := libvirthost.Host{Name: fs.Arg(0), URI: fs.Arg(1)}
	if err := h.Validate(); err != nil {
		return usageError{err.Error()}
	}
	hs, err := libvirthost.LoadHosts(hostsPath())
	if err != nil {
		return err
	}
	if _, taken := hs.Get(h.Name); taken {
		return hs.Add(h) // says who has the name
	}
	if !*noCheck {
		in, err := hostInfo(ctx, h)
		if err != nil {
			return fmt.Errorf("%w (add it anyway with --no-check)", err)
		}
		say("%s: libvirt %s, QEMU %s, %s, %s free", h.Name, in.LibvirtVersion, in.QEMUVersion, in.Accel, disk.FormatSize(int64(in.FreeMemory)))
	}
	if err := hs.Add(h); err != nil {
		return err
	}
	say("added host %s (%s)", h.Name, h.URI)
	if strings.HasPrefix(h.URI, "qemu+tcp:") {
		say("note: qemu+tcp is neither encrypted nor authenticated unless the host's libvirtd sets up SASL; use qemu+ssh or qemu+tls beyond a lab network")
	}
	return nil
}

func hostInfo(ctx context.Context, h libvirthost.Host) (libvirthost.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, hostCheckTimeout)
	defer cancel()
	c, err := libvirthost.Dial(ctx, h)
	if err != nil {
		return libvirthost.Info{}, err
	}
	defer c.Close()
	return c.Info()
}

// hostRow is one host as `kiln hosts ls --json` prints it.
type hostRow struct {
	Name           string `json:"name"`
	URI            string `json:"uri"`
	Reachable      bool   `json:"reachable"`
	Error          string `json:"error,omitempty"`
	Hostname       string `json:"hostname,omitempty"`
	LibvirtVersion string `json:"libvirt_version,omitempty"`
	QEMUVersion    string `json:"qemu_version,omitempty"`
	Accel          string `json:"accelerator,omitempty"`
	FreeMemory     uint64 `json:"free_memory,omitempty"`
}

func cmdHostsList(ctx context.Context, args []string) error {
	fs := newFlags("hosts ls", "hosts ls [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{"hosts ls takes no arguments"}
	}
	hs, err := libvirthost.LoadHosts(hostsPath())
	if err != nil {
		return err
	}
	rows := make([]hostRow, len(hs.Hosts))
	var wg sync.WaitGroup
	for i, h := range hs.Hosts {
		wg.Go(func() {
			r := hostRow{Name: h.Name, URI: h.URI}
			in, err := hostInfo(ctx, h)
			if err != nil {
				r.Error = err.Error()
			} else {
				r.Reachable = true
				r.Hostname, r.LibvirtVersion, r.QEMUVersion, r.Accel, r.FreeMemory = in.Hostname, in.LibvirtVersion, in.QEMUVersion, in.Accel, in.FreeMemory
			}
			rows[i] = r
		})
	}
	wg.Wait()
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	if len(rows) == 0 {
		say("no libvirt hosts; add one with kiln hosts add NAME URI")
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tURI\tREACHABLE\tLIBVIRT\tQEMU\tACCEL\tFREE MEMORY")
	for _, r := range rows {
		if !r.Reachable {
			fmt.Fprintf(w, "%s\t%s\tno: %s\t-\t-\t-\t-\n", r.Name, r.URI, r.Error)
			continue
		}
		fmt.Fprintf(w, "%s\t%s\tyes\t%s\t%s\t%s\t%s\n", r.Name, r.URI, r.LibvirtVersion, r.QEMUVersion, r.Accel, disk.FormatSize(int64(r.FreeMemory)))
	}
	return w.Flush()
}

func cmdHostsRemove(args []string) error {
	fs := newFlags("hosts rm", "hosts rm NAME")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"name the host to remove"}
	}
	hs, err := libvirthost.LoadHosts(hostsPath())
	if err != nil {
		return err
	}
	if fleets := fleetsOnHost(fs.Arg(0)); len(fleets) > 0 {
		return fmt.Errorf("host %s still runs instances of fleet %s: kiln fleet down %s first", fs.Arg(0), strings.Join(fleets, ", "), fleets[0])
	}
	if err := hs.Remove(fs.Arg(0)); err != nil {
		return err
	}
	say("removed host %s", fs.Arg(0))
	return nil
}
