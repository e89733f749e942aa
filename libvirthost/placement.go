package libvirthost

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kiln-dev/kiln/disk"
)

// Candidate is a host as placement sees it.
type Candidate struct {
	Name       string
	Fleet      int    // the fleet's own instances already on the host
	Total      int    // every kiln instance on the host, of any fleet
	FreeMemory uint64 // bytes
	Err        error  // why the host cannot take instances (unreachable, …); nil = it can
}

// Place picks a host for each of n new instances that need memory bytes
// each: spread first (the host with the fewest of this fleet's instances),
// then least used (fewest instances of all fleets, then most free memory),
// then by name so the choice is repeatable. Each pick counts toward the
// next. A host that is down or lacks the memory is skipped; when no host
// is left, the error says why each was skipped.
func Place(cands []Candidate, n int, memory uint64) ([]string, error) {
	hosts := slices.Clone(cands)
	out := make([]string, 0, n)
	for range n {
		best := -1
		for i, h := range hosts {
			if h.Err != nil || h.FreeMemory < memory {
				continue
			}
			if best < 0 || better(h, hosts[best]) {
				best = i
			}
		}
		if best < 0 {
			return nil, noHostError(hosts, memory, len(out), n)
		}
		hosts[best].Fleet++
		hosts[best].Total++
		hosts[best].FreeMemory -= memory
		out = append(out, hosts[best].Name)
	}
	return out, nil
}

func better(a, b Candidate) bool {
	if c := cmp.Compare(a.Fleet, b.Fleet); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(a.Total, b.Total); c != 0 {
		return c < 0
	}
	if a.FreeMemory != b.FreeMemory {
		return a.FreeMemory > b.FreeMemory
	}
	return a.Name < b.Name
}

func noHostError(hosts []Candidate, memory uint64, placed, n int) error {
	if len(hosts) == 0 {
		return fmt.Errorf("no hosts to place instances on (kiln hosts add NAME URI)")
	}
	var why []string
	for _, h := range hosts {
		if h.Err != nil {
			why = append(why, fmt.Sprintf("%s: %v", h.Name, h.Err))
		} else {
			why = append(why, fmt.Sprintf("%s: %s free, %s needed", h.Name, disk.FormatSize(int64(h.FreeMemory)), disk.FormatSize(int64(memory))))
		}
	}
	return fmt.Errorf("placed %d of %d instances, no host can take more (%s)", placed, n, strings.Join(why, "; "))
}

// Candidate asks the host what placement needs of it: its free memory and
// how many kiln instances run there, of fleet and of every fleet. A host
// that fails to answer (or answers too slowly) comes back with Err set.
func (c *Conn) Candidate(fleet string) Candidate {
	cand := Candidate{Name: c.Host.Name}
	var free uint64
	var doms []Metadata
	err := c.bounded(func() (err error) {
		if free, err = c.lv.NodeGetFreeMemory(); err != nil {
			return c.hostErr("free memory: %w", err)
		}
		doms, err = c.KilnDomains("")
		return err
	})
	if errors.Is(err, errNoAnswer) {
		err = c.hostErr("%w", err)
	}
	if err != nil {
		cand.Err = err
		return cand
	}
	cand.FreeMemory = free
	for _, m := range doms {
		cand.Total++
		if m.Fleet == fleet {
			cand.Fleet++
		}
	}
	return cand
}
