package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/savedstate"
)

// images gc drops the saved guests whose base is gone: a stored image's
// blob that gc removed (or will), a base file deleted, a damaged state.
func TestStateBaseGone(t *testing.T) {
	dir := t.TempDir()
	store, err := images.Open(filepath.Join(dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	const kept, swept, missing = "sha256:" + "11111111111111111111111111111111" + "11111111111111111111111111111111",
		"sha256:" + "22222222222222222222222222222222" + "22222222222222222222222222222222",
		"sha256:" + "33333333333333333333333333333333" + "33333333333333333333333333333333"
	for _, d := range []string{kept, swept} {
		p := store.BlobPath(d)
		os.MkdirAll(filepath.Dir(p), 0o700)
		os.WriteFile(p, []byte("blob"), 0o600)
	}
	file := filepath.Join(dir, "base.qcow2")
	os.WriteFile(file, []byte("base"), 0o600)
	stored := func(d string) savedstate.State {
		return savedstate.State{Meta: savedstate.Meta{Key: "k", BaseStored: true, Inputs: savedstate.Inputs{BaseDigest: d}}}
	}
	onFile := func(p string) savedstate.State {
		return savedstate.State{Meta: savedstate.Meta{Key: "k", BasePath: p}}
	}
	gone := stateBaseGone(store, map[string]bool{swept: true})
	for name, c := range map[string]struct {
		s    savedstate.State
		gone bool
	}{
		"stored base kept":         {stored(kept), false},
		"stored base swept by gc":  {stored(swept), true},
		"stored base already gone": {stored(missing), true},
		"base file still there":    {onFile(file), false},
		"base file deleted":        {onFile(filepath.Join(dir, "nope.qcow2")), true},
		"damaged state (no key)":   {savedstate.State{}, true},
	} {
		if got := gone(c.s); got != c.gone {
			t.Errorf("%s: gone = %v, want %v", name, got, c.gone)
		}
	}
}
