// Package savedstate keeps saved, booted guests (warm starts) in kiln's
// cache: one folder per state, named by the key of everything that shaped
// the boot, holding the disk overlay with QEMU's internal snapshot of the
// running machine, the seed it booted from, the host key pinned when it was
// saved and the key that logs in to it. It owns every name on disk, so
// builds, fleets, `kiln cache` and `images gc` ask it rather than guess.
//
// A state holds a guest's memory, so folders are 0700 and files 0600; a
// state is written in a temporary folder and renamed into place whole.
package savedstate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/layout"
)

// Files in a state's folder (named by package layout: a state is a VM
// folder plus its Meta).
const (
	DiskFile       = layout.DiskFile           // overlay on the base, with the snapshot inside
	SeedFile       = layout.SeedFile           // the cloud-init seed the guest booted from
	KnownHostsFile = layout.KnownHostsFile     // the guest's host key, pinned at save time
	KeyFile        = layout.KeyFile            // the resume key: logs in once, then is replaced
	MetaFile       = layout.SavedStateMetaFile // Meta
)

// Snapshot is the name of the internal snapshot in DiskFile.
const Snapshot = "kiln-warm"

// keyVersion changes when the way a state is made changes, so states of an
// older kiln are never resumed.
const keyVersion = "kiln-saved-state v2"

// Inputs is everything that shaped a boot. Two boots with equal Inputs are
// interchangeable up to the point of the save.
type Inputs struct {
	BaseDigest  string   `json:"base_digest"`  // the disk's backing image
	CPUs        int      `json:"cpus"`         //
	MemoryMiB   int      `json:"memory_mib"`   //
	DiskSize    int64    `json:"disk_size"`    // virtual size of the overlay
	Firmware    string   `json:"firmware"`     // "" for BIOS, else the firmware's digest
	Machine     []string `json:"machine"`      // QEMU's machine, accelerator and CPU arguments
	QEMUVersion string   `json:"qemu_version"` // `qemu-system-x86_64 --version`
	Seed        string   `json:"seed_digest"`  // the seed without its per-boot parts
	Purpose     string   `json:"purpose"`      // "build" or "fleet": what runs after a resume
	Hostname    string   `json:"hostname"`     // the seed's hostname (part of Seed, shown in ls)
}

// Key is the state's name: a digest of every input.
func (in Inputs) Key() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\nbase %s\ncpus %d\nmemory %d\ndisk %d\nfirmware %s\nqemu %q\nseed %s\npurpose %s\nhostname %s\n",
		keyVersion, in.BaseDigest, in.CPUs, in.MemoryMiB, in.DiskSize, in.Firmware, in.QEMUVersion, in.Seed, in.Purpose, in.Hostname)
	for _, a := range in.Machine {
		fmt.Fprintf(h, "arg %q\n", a)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// Meta is a state's description, written last.
type Meta struct {
	Key        string    `json:"key"`
	Inputs     Inputs    `json:"inputs"`
	Base       string    `json:"base"`        // what the base was, for people: "debian:12", a path
	BaseStored bool      `json:"base_stored"` // the base is an image store blob (gc drops the state with it)
	BasePath   string    `json:"base_path"`   // the backing file at save time
	InstanceID string    `json:"instance_id"` // the seed's instance-id
	Saved      time.Time `json:"saved"`
}

var keyRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// Cache is the saved-state folder under kiln's cache.
type Cache struct{ Root string }

// Open returns the saved states kept under cacheDir (kiln's cache folder).
func Open(cacheDir string) Cache { return Cache{Root: layout.Home{Cache: cacheDir}.SavedStates()} }

// Dir is the folder of the state named key.
func (c Cache) Dir(key string) string { return filepath.Join(c.Root, key) }

// State is one saved state found in the cache.
type State struct {
	Dir  string
	Meta Meta
	Size int64 // bytes on disk
}

// File is the path of one of the state's files.
func (s State) File(name string) string { return filepath.Join(s.Dir, name) }

// ErrDamaged marks a state folder that cannot be used: a file missing, its
// description unreadable or for another key.
var ErrDamaged = errors.New("damaged saved state")

// Lookup returns the state for key. found is false when there is none; a
// state that is there but damaged comes back as an error wrapping
// ErrDamaged, so the caller can say so and Drop it.
func (c Cache) Lookup(key string) (State, bool, error) {
	if !keyRE.MatchString(key) {
		return State{}, false, fmt.Errorf("saved state key %q is not a key", key)
	}
	dir := c.Dir(key)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return State{}, false, nil
	}
	s, err := read(dir)
	if err != nil {
		return State{}, true, err
	}
	if s.Meta.Key != key || s.Meta.Inputs.Key() != key {
		return State{}, true, fmt.Errorf("%w: %s describes another key", ErrDamaged, dir)
	}
	return s, true, nil
}

func read(dir string) (State, error) {
	s := State{Dir: dir}
	b, err := os.ReadFile(layout.SavedState(dir).Meta())
	if err != nil {
		return s, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	if err := json.Unmarshal(b, &s.Meta); err != nil {
		return s, fmt.Errorf("%w: %s: %v", ErrDamaged, MetaFile, err)
	}
	for _, f := range []string{DiskFile, SeedFile, KnownHostsFile, KeyFile, MetaFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			return s, fmt.Errorf("%w: %v", ErrDamaged, err)
		}
		s.Size += allocated(st)
	}
	return s, nil
}

// Drop removes the state named key, if it is there.
func (c Cache) Drop(key string) error {
	if !keyRE.MatchString(key) {
		return fmt.Errorf("saved state key %q is not a key", key)
	}
	return os.RemoveAll(c.Dir(key))
}

// Pending is a state being written: files go into Dir, Commit publishes it.
type Pending struct {
	c   Cache
	Dir string
}

// Begin starts writing a state in a temporary folder beside the others.
func (c Cache) Begin() (*Pending, error) {
	if err := os.MkdirAll(c.Root, 0o700); err != nil {
		return nil, err
	}
	os.Chmod(c.Root, 0o700)
	dir, err := os.MkdirTemp(c.Root, ".new-")
	if err != nil {
		return nil, err
	}
	return &Pending{c: c, Dir: dir}, nil
}

// File is the path of one of the pending state's files.
func (p *Pending) File(name string) string { return filepath.Join(p.Dir, name) }

// Commit writes m and moves the folder into place under m.Key. When another
// kiln saved the same key first, its state is kept and this one removed.
func (p *Pending) Commit(m Meta) error {
	m.Key = m.Inputs.Key()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		p.Abort()
		return err
	}
	if err := os.WriteFile(p.File(MetaFile), append(b, '\n'), 0o600); err != nil {
		p.Abort()
		return err
	}
	if _, err := read(p.Dir); err != nil {
		p.Abort()
		return err
	}
	if err := os.Rename(p.Dir, p.c.Dir(m.Key)); err != nil {
		p.Abort()
		if _, statErr := os.Stat(p.c.Dir(m.Key)); statErr == nil {
			return nil // saved by someone else meanwhile
		}
		return err
	}
	return nil
}

// Abort removes what was written.
func (p *Pending) Abort() { os.RemoveAll(p.Dir) }

// List returns every state, newest first; damaged ones have a zero Meta.Key
// and are listed so that prune can remove them.
func (c Cache) List() ([]State, error) {
	entries, err := os.ReadDir(c.Root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []State
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(c.Root, e.Name())
		if strings.HasPrefix(e.Name(), ".new-") {
			continue
		}
		s, err := read(dir)
		if err != nil || s.Meta.Key != e.Name() {
			s = State{Dir: dir, Size: dirSize(dir)}
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Meta.Saved.After(out[j].Meta.Saved) })
	return out, nil
}

// Remove deletes every state for which drop says yes (damaged states have a
// zero Meta) and returns them.
func (c Cache) Remove(drop func(State) bool) ([]State, error) {
	all, err := c.List()
	if err != nil {
		return nil, err
	}
	var gone []State
	var errs []error
	for _, s := range all {
		if !drop(s) {
			continue
		}
		if err := os.RemoveAll(s.Dir); err != nil {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, s)
	}
	return gone, errors.Join(errs...)
}

// ReclaimPending removes half-written states older than age, left by a kiln
// that was killed while saving.
func (c Cache) ReclaimPending(age time.Duration) {
	entries, _ := os.ReadDir(c.Root)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".new-") {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			os.RemoveAll(filepath.Join(c.Root, e.Name()))
		}
	}
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += allocated(info)
			}
		}
		return nil
	})
	return n
}

// allocated is the space a file takes on disk: a qcow2 overlay is sparse.
func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
