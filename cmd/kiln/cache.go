package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/savedstate"
)

func cmdCache(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{"say what to do: kiln cache ls | prune"}
	}
	switch args[0] {
	case "ls":
		return cmdCacheList(args[1:])
	case "prune":
		return cmdCachePrune(args[1:])
	}
	return usageError{fmt.Sprintf("unknown cache command %q: use ls or prune", args[0])}
}

func savedStates() savedstate.Cache { return savedstate.Open(layout.Default().Cache) }

// cacheEntry is one saved state as `kiln cache ls --json` prints it.
type cacheEntry struct {
	Key      string    `json:"key"` // "" for a damaged state
	Dir      string    `json:"dir"`
	Size     int64     `json:"size"`
	Base     string    `json:"base,omitempty"`
	Purpose  string    `json:"purpose,omitempty"`
	Hostname string    `json:"hostname,omitempty"`
	CPUs     int       `json:"cpus,omitempty"`
	Memory   int       `json:"memory_mib,omitempty"`
	Saved    time.Time `json:"saved,omitzero"`
}

func toEntry(s savedstate.State) cacheEntry {
	in := s.Meta.Inputs
	return cacheEntry{Key: s.Meta.Key, Dir: s.Dir, Size: s.Size, Base: s.Meta.Base, Purpose: in.Purpose,
		Hostname: in.Hostname, CPUs: in.CPUs, Memory: in.MemoryMiB, Saved: s.Meta.Saved}
}

func cmdCacheList(args []string) error {
	fs := newFlags("cache ls", "cache ls [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	all, err := savedStates().List()
	if err != nil {
		return err
	}
	entries := []cacheEntry{}
	var total int64
	for _, s := range all {
		entries = append(entries, toEntry(s))
		total += s.Size
	}
	if *asJSON {
		return printJSON(entries)
	}
	if len(entries) == 0 {
		say("no saved states (the first build of a base saves one)")
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SAVED STATE\tBASE\tFOR\tCPUS\tMEMORY\tSIZE\tSAVED")
	for _, e := range entries {
		if e.Key == "" {
			fmt.Fprintf(w, "%s\t(damaged)\t\t\t\t%s\t\n", e.Dir, disk.FormatSize(e.Size))
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%s %s\t%d\t%dM\t%s\t%s\n", e.Key, e.Base, e.Purpose, e.Hostname, e.CPUs, e.Memory,
			disk.FormatSize(e.Size), e.Saved.Local().Format(time.DateTime))
	}
	w.Flush()
	say("%d saved states, %s", len(entries), disk.FormatSize(total))
	return nil
}

func cmdCachePrune(args []string) error {
	fs := newFlags("cache prune", "cache prune [KEY...] [--dry-run]")
	dry := fs.Bool("dry-run", false, "say what would be removed, remove nothing")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	keys := fs.Args()
	states := savedStates()
	if len(keys) > 0 {
		all, err := states.List()
		if err != nil {
			return err
		}
		for _, k := range keys {
			if !slices.ContainsFunc(all, func(s savedstate.State) bool { return s.Meta.Key == k }) {
				return fmt.Errorf("no saved state %q; `kiln cache ls` lists them", k)
			}
		}
	}
	pick := func(s savedstate.State) bool { return len(keys) == 0 || slices.Contains(keys, s.Meta.Key) }
	return reportRemoved(states, pick, *dry, "prune")
}

// reportRemoved removes (or with dry, lists) the saved states pick chooses
// and prints each with its size.
func reportRemoved(states savedstate.Cache, pick func(savedstate.State) bool, dry bool, what string) error {
	var gone []savedstate.State
	var err error
	if dry {
		all, lerr := states.List()
		err = lerr
		for _, s := range all {
			if pick(s) {
				gone = append(gone, s)
			}
		}
	} else {
		gone, err = states.Remove(pick)
	}
	var freed int64
	for _, s := range gone {
		name := s.Meta.Key
		if name == "" {
			name = s.Dir + " (damaged)"
		}
		fmt.Printf("saved-state %s  %s\n", name, disk.FormatSize(s.Size))
		freed += s.Size
	}
	verb := "freed"
	if dry {
		verb = "would free"
	}
	say("%s %s %s in %d saved states", what, verb, disk.FormatSize(freed), len(gone))
	return err
}

// stateBaseGone says whether a saved state's base no longer exists: a
// stored image whose blob gc removed (or will, in a dry run), a base file
// that was deleted. A damaged state is gone too.
func stateBaseGone(store *images.Store, removed map[string]bool) func(savedstate.State) bool {
	return func(s savedstate.State) bool {
		if s.Meta.Key == "" {
			return true
		}
		if s.Meta.BaseStored {
			d := s.Meta.Inputs.BaseDigest
			if removed[d] {
				return true
			}
			_, err := os.Stat(store.BlobPath(d))
			return err != nil
		}
		_, err := os.Stat(s.Meta.BasePath)
		return err != nil
	}
}
