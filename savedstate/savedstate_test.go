package savedstate

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func sampleInputs() Inputs {
	return Inputs{
		BaseDigest: "sha256:aa", CPUs: 2, MemoryMiB: 1024, DiskSize: 3 << 30,
		Machine:     []string{"-machine", "q35", "-accel", "tcg,thread=multi,tb-size=256", "-cpu", "max"},
		QEMUVersion: "QEMU emulator version 7.2.15", Seed: "sha256:bb", Purpose: "build", Hostname: "hello-build",
	}
}

// Every input that shaped the boot changes the key.
func TestKeyChangesWithEachInput(t *testing.T) {
	base := sampleInputs()
	changes := map[string]func(*Inputs){
		"base digest":  func(in *Inputs) { in.BaseDigest = "sha256:cc" },
		"cpus":         func(in *Inputs) { in.CPUs = 1 },
		"memory":       func(in *Inputs) { in.MemoryMiB = 512 },
		"disk size":    func(in *Inputs) { in.DiskSize = 4 << 30 },
		"firmware":     func(in *Inputs) { in.Firmware = "sha256:dd" },
		"machine type": func(in *Inputs) { in.Machine[1] = "pc" },
		"accelerator":  func(in *Inputs) { in.Machine[3] = "kvm" },
		"cpu model":    func(in *Inputs) { in.Machine[5] = "host" },
		"extra arg":    func(in *Inputs) { in.Machine = append(in.Machine, "-device", "vmgenid") },
		"qemu version": func(in *Inputs) { in.QEMUVersion = "QEMU emulator version 8.0.0" },
		"seed":         func(in *Inputs) { in.Seed = "sha256:ee" },
		"purpose":      func(in *Inputs) { in.Purpose = "fleet" },
		"hostname":     func(in *Inputs) { in.Hostname = "web-build" },
	}
	seen := map[string]string{base.Key(): "unchanged"}
	if base.Key() != sampleInputs().Key() {
		t.Fatal("equal inputs give different keys")
	}
	for name, change := range changes {
		in := sampleInputs()
		change(&in)
		k := in.Key()
		if other, dup := seen[k]; dup {
			t.Errorf("changing the %s gives the same key as %s", name, other)
		}
		seen[k] = name
	}
}

// writeState saves a complete state for in and returns the cache.
func writeState(t *testing.T, c Cache, in Inputs) {
	t.Helper()
	p, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{DiskFile, SeedFile, KnownHostsFile, KeyFile} {
		if err := os.WriteFile(p.File(f), []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Commit(Meta{Inputs: in, Base: "debian:12", BaseStored: true, Saved: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func TestSaveLookupAndPrivacy(t *testing.T) {
	c := Open(t.TempDir())
	in := sampleInputs()
	if _, found, err := c.Lookup(in.Key()); found || err != nil {
		t.Fatalf("empty cache: found %v, %v", found, err)
	}
	writeState(t, c, in)
	s, found, err := c.Lookup(in.Key())
	if !found || err != nil {
		t.Fatalf("Lookup after save: found %v, %v", found, err)
	}
	if s.Meta.Key != in.Key() || s.Size == 0 || s.Dir != c.Dir(in.Key()) {
		t.Errorf("state %+v", s)
	}
	for _, p := range []string{c.Root, s.Dir} {
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o700 {
			t.Errorf("%s has mode %v, want 0700", p, st.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(s.Dir)
	for _, e := range entries {
		if info, _ := e.Info(); info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
	}
	// A second save of the same key (another build) keeps the first.
	writeState(t, c, in)
	all, _ := c.List()
	if len(all) != 1 {
		t.Errorf("after two saves of one key: %d states, want 1", len(all))
	}
}

// A state whose inputs changed is not found; one with a file missing or a
// description for another key is damaged, and Drop removes it.
func TestInvalidation(t *testing.T) {
	c := Open(t.TempDir())
	in := sampleInputs()
	writeState(t, c, in)
	newer := in
	newer.QEMUVersion = "QEMU emulator version 9.0.0"
	if _, found, _ := c.Lookup(newer.Key()); found {
		t.Error("a state saved under another QEMU is found")
	}

	os.Remove(filepath.Join(c.Dir(in.Key()), SeedFile))
	if _, found, err := c.Lookup(in.Key()); !found || !errors.Is(err, ErrDamaged) {
		t.Errorf("missing file: found %v, err %v; want ErrDamaged", found, err)
	}
	if err := c.Drop(in.Key()); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := c.Lookup(in.Key()); found {
		t.Error("a dropped state is still found")
	}

	// A folder renamed to another key (or whose inputs were edited).
	writeState(t, c, in)
	if err := os.Rename(c.Dir(in.Key()), c.Dir(newer.Key())); err != nil {
		t.Fatal(err)
	}
	if _, found, err := c.Lookup(newer.Key()); !found || !errors.Is(err, ErrDamaged) {
		t.Errorf("state under another key: found %v, err %v; want ErrDamaged", found, err)
	}
	if _, _, err := c.Lookup("../etc"); err == nil {
		t.Error("a key with a path in it is accepted")
	}
}

func TestListAndRemove(t *testing.T) {
	c := Open(t.TempDir())
	a, b := sampleInputs(), sampleInputs()
	b.CPUs = 4
	writeState(t, c, a)
	writeState(t, c, b)
	if err := os.MkdirAll(filepath.Join(c.Root, "junk"), 0o700); err != nil {
		t.Fatal(err)
	}
	p, _ := c.Begin() // a save in progress is neither listed nor removed
	all, err := c.List()
	if err != nil || len(all) != 3 {
		t.Fatalf("List: %d states, %v; want 3 (one damaged)", len(all), err)
	}
	gone, err := c.Remove(func(s State) bool { return s.Meta.Key == "" || s.Meta.Inputs.CPUs == 4 })
	if err != nil || len(gone) != 2 {
		t.Fatalf("Remove: %d removed, %v; want the damaged one and b", len(gone), err)
	}
	all, _ = c.List()
	if len(all) != 1 || all[0].Meta.Key != a.Key() {
		t.Errorf("left: %+v", all)
	}
	if _, err := os.Stat(p.Dir); err != nil {
		t.Errorf("a pending save was removed: %v", err)
	}
	c.ReclaimPending(0)
	if _, err := os.Stat(p.Dir); err == nil {
		t.Error("ReclaimPending left an old pending save")
	}
}
