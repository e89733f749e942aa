// Package supervisor is a fleet's background process: it owns the fleet's
// QEMU instances, runs their health checks, serves the load balancer on each
// front port, drives rollouts and answers the CLI over a unix socket. It
// outlives the CLI that started it and writes everything it must remember
// to the fleet's folder, so a restarted supervisor carries on.
package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/qemu"
)

// Port maps a front port on 127.0.0.1 to a guest port on every instance.
type Port struct {
	Host  int `json:"host"`
	Guest int `json:"guest"`
}

// Spec is a fleet's desired state, written by `kiln fleet up`.
type Spec struct {
	Name      string       `json:"name"`
	Image     string       `json:"image"` // the stable version's ref
	Count     int          `json:"count"`
	Ports     []Port       `json:"ports"`
	CPUs      int          `json:"cpus"`
	MemoryMiB int          `json:"memory_mib"`
	Check     *fleet.Check `json:"check,omitempty"`
	Accel     qemu.Accel   `json:"accel,omitempty"` // as asked: auto (""), kvm, hvf or tcg
	// Front is the kind of front on every port; "" picks http for the port
	// an http check probes and tcp for the others (see FrontFor).
	Front     fleet.FrontKind `json:"front,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	// Cold boots every instance instead of resuming a saved one.
	Cold bool `json:"cold,omitempty"`
	// Hosts are the libvirt hosts (names from `kiln hosts add`) the
	// instances run on; none = QEMU processes on this machine.
	Hosts []string `json:"hosts,omitempty"`
}

// FrontFor is the kind of front serving guest port guest: the one the
// fleet names, else an HTTP front where an http check shows the port
// speaks HTTP, else a TCP proxy.
func (s Spec) FrontFor(guest int) fleet.FrontKind {
	if s.Front != "" {
		return s.Front
	}
	if s.Check != nil && s.Check.Kind == fleet.CheckHTTP && s.Check.Port == guest {
		return fleet.FrontHTTP
	}
	return fleet.FrontTCP
}

// FieldError is a problem with one field of a spec. It speaks of the field
// ("count"), so the CLI can name its flag and a fleet file its attribute.
type FieldError struct {
	Field   string // name, image, count, port
	Value   string
	Problem string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s %s: %s", e.Field, e.Value, e.Problem) }

// Validate says what to fix in a spec.
func (s Spec) Validate() error {
	if err := fleet.CheckName(s.Name); err != nil {
		return &FieldError{"name", strconv.Quote(s.Name), err.Error()}
	}
	if _, err := images.ParseRef(s.Image); err != nil {
		return err
	}
	if s.Count < 1 || s.Count > fleet.MaxInstances {
		return &FieldError{"count", strconv.Itoa(s.Count), fmt.Sprintf("use 1 to %d instances", fleet.MaxInstances)}
	}
	seen := map[int]bool{}
	for _, p := range s.Ports {
		if p.Host < 1 || p.Host > 65535 || p.Guest < 1 || p.Guest > 65535 {
			return &FieldError{"port", fmt.Sprintf("%d:%d", p.Host, p.Guest), "ports are 1 to 65535"}
		}
		if seen[p.Host] {
			return &FieldError{"port", strconv.Itoa(p.Host), "front port given twice"}
		}
		seen[p.Host] = true
	}
	if s.Check != nil {
		if err := s.Check.Validate(); err != nil {
			return err
		}
	}
	switch s.Front {
	case "", fleet.FrontHTTP, fleet.FrontTCP:
	default:
		return &FieldError{"front", strconv.Quote(string(s.Front)), "use http (a reverse proxy that routes each request) or tcp"}
	}
	return nil
}

// Dirs are the files of one fleet, named by package layout.
type Dirs = layout.Fleet

// FleetDirs is where fleet name lives under kiln's data folder.
func FleetDirs(data, name string) Dirs { return layout.Home{Data: data}.Fleet(name) }

// ErrNoFleet means the fleet does not exist.
var ErrNoFleet = errors.New("no such fleet")

// ReadSpec loads a fleet's spec.
func ReadSpec(d Dirs) (Spec, error) {
	var s Spec
	b, err := os.ReadFile(d.Spec())
	if errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("fleet %s: %w; see `kiln fleet ls`", d.Name(), ErrNoFleet)
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("read %s: %w", d.Spec(), err)
	}
	return s, nil
}

// writeJSON writes v atomically: a crash leaves the old file or the new one.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return images.WriteFileAtomic(path, append(b, '\n'), 0o600)
}

// WriteSpec saves a fleet's spec.
func WriteSpec(d Dirs, s Spec) error {
	if err := os.MkdirAll(d.Root, 0o700); err != nil {
		return err
	}
	return writeJSON(d.Spec(), s)
}
