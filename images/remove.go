package images

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInUse matches RemoveChecked's refusal to remove an image that other
// images are built on or that something runs.
var ErrInUse = errors.New("image in use")

// maxNamed bounds how many refs an error lists before "and N more".
const maxNamed = 5

// RemoveChecked is Remove with protection. Unless force, it refuses while
// another stored version is built on r (see Children), naming them, or while
// inUse (blob digest -> who uses it, e.g. "fleet web (web-3)") has r's
// digest, naming the user; both errors match ErrInUse. When the store cannot
// tell (a damaged manifest), it refuses too. Like Remove, it deletes the
// manifest, logs, channel pointers and revocation; the blob waits for GC,
// which keeps it while anything still needs it.
//
// The checks run under r's name lock, but images of other names can be
// built on r at any time, so they are a guard against mistakes, not a
// guarantee; GC is what keeps needed blobs.
func (s *Store) RemoveChecked(r Ref, inUse map[string]string, force bool) error {
	if err := checkRemovable(r); err != nil {
		return err
	}
	unlock, err := s.Lock(r.Name)
	if err != nil {
		return err
	}
	defer unlock()
	if !force {
		m, err := s.Get(r)
		if err != nil {
			return err
		}
		kids, err := s.children(m)
		if err != nil {
			return &kindError{fmt.Sprintf("cannot tell whether other images are built on %s: %v; fix the store", r, err), ErrInUse}
		}
		if len(kids) > 0 {
			return &kindError{fmt.Sprintf("%s is the base of %s; remove those first", r, nameRefs(kids)), ErrInUse}
		}
		if who, ok := inUse[m.Digest]; ok {
			return &kindError{fmt.Sprintf("%s is in use by %s; stop it first", r, orSomething(who)), ErrInUse}
		}
	}
	return s.removeLocked(r)
}

// nameRefs lists refs for a message, at most maxNamed of them.
func nameRefs(refs []Ref) string {
	var names []string
	for i, r := range refs {
		if i == maxNamed {
			names = append(names, fmt.Sprintf("and %d more", len(refs)-maxNamed))
			break
		}
		names = append(names, r.String())
	}
	return strings.Join(names, ", ")
}
