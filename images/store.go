package images

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-dev/kiln/internal/fileutil"
	"github.com/kiln-dev/kiln/internal/termsafe"
	"github.com/kiln-dev/kiln/layout"
)

// Store is an image store rooted at Root. Its methods are safe for
// concurrent use by goroutines and processes sharing the folder: changes
// take the per-name lock, and readers only ever see complete files.
type Store struct {
	Root string

	// hook, when set (tests only), runs at named points of Add; an error
	// makes Add fail there, to prove the rollback.
	hook func(stage string) error
}

// Open returns the store at root, creating its folders (0700) if needed.
// root is made absolute because blob paths end up in qcow2 backing-file
// headers and qemu command lines, where a relative path would break.
func Open(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("image store: no root folder given")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", root, err)
	}
	s := &Store{Root: abs}
	if err := s.init(); err != nil {
		return nil, err
	}
	return s, nil
}

// init creates the store's folders, so a Store built as a literal works too.
func (s *Store) init() error {
	if s.Root == "" {
		return errors.New("image store: no root folder given")
	}
	l := s.layout()
	for _, d := range []string{l.Blobs(), l.Manifests(), l.Logs(), l.Tmp(), l.Locks()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("image store: %w", err)
		}
	}
	return nil
}

// layout names the store's files.
func (s *Store) layout() layout.Store { return layout.Store(s.Root) }

func (s *Store) tmpDir() string { return s.layout().Tmp() }

// BlobDir is the folder holding the blobs, named by their hex digests.
func BlobDir(root string) string { return layout.Store(root).Blobs() }

// BlobPath returns where the blob with digest "sha256:<hex>" lives, or ""
// for a malformed digest (so a bad manifest cannot point outside the store).
func (s *Store) BlobPath(digest string) string {
	if checkDigest(digest) != nil {
		return ""
	}
	return s.layout().Blob(digest)
}

// LogPath returns where log name ("build.log", "serial.log") of r is kept,
// or "" when r (with a version) or name is not valid.
func (s *Store) LogPath(r Ref, name string) string {
	if r.validate(true) != nil || checkLogName(name) != nil {
		return ""
	}
	return filepath.Join(s.logDir(r), name)
}

func (s *Store) logDir(r Ref) string {
	return s.layout().Log(r.Name, r.Version)
}

func (s *Store) manifestPath(r Ref) string {
	return s.layout().Manifest(r.Name, r.Version)
}

// checkLogName allows plain file names only: they are joined to a store path.
func checkLogName(name string) error {
	if name == "" || name == "." || name == ".." || strings.HasPrefix(name, ".") ||
		strings.ContainsAny(name, `/\`) || len(name) > 128 {
		return fmt.Errorf("invalid log name %q: want a plain file name such as build.log", name)
	}
	return nil
}

// Get returns the manifest of r. An empty version means the newest, as in
// Resolve. A missing image gives an error matching ErrNotFound.
func (s *Store) Get(r Ref) (Manifest, error) {
	if r.Version == "" {
		return s.Resolve(r)
	}
	if err := r.validate(true); err != nil {
		return Manifest{}, err
	}
	m, err := ReadManifest(s.manifestPath(r))
	if errors.Is(err, os.ErrNotExist) {
		return Manifest{}, notFound(r)
	}
	if err != nil {
		return Manifest{}, err
	}
	if m.Name != r.Name || m.Version != r.Version {
		return Manifest{}, fmt.Errorf("manifest %s describes %s, not %s; the store is damaged", s.manifestPath(r), m.Ref(), r)
	}
	return m, nil
}

// Resolve returns the manifest of r, choosing the newest version when
// r.Version is empty: highest by CompareVersions, then latest BuildEnd.
// A channel ref (hello@stable) resolves to the version the channel points
// at; hello@latest is the same as hello.
func (s *Store) Resolve(r Ref) (Manifest, error) {
	if r.Version != "" {
		return s.Get(r)
	}
	if err := r.validate(false); err != nil {
		return Manifest{}, err
	}
	if r.Channel != "" {
		return s.resolveChannel(r)
	}
	ms, err := s.readName(r.Name)
	if err != nil {
		return Manifest{}, err
	}
	if len(ms) == 0 {
		return Manifest{}, notFound(r)
	}
	return slices.MaxFunc(ms, compareManifests), nil
}

// List returns every stored manifest, sorted by name, then version order
// (oldest first). Manifests that cannot be read are left out and reported
// together in the error, so one damaged file does not hide the rest: a
// caller may show the list and the error both.
func (s *Store) List() ([]Manifest, error) {
	entries, err := os.ReadDir(s.layout().Manifests())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var all []Manifest
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || checkName(e.Name()) != "" {
			continue
		}
		ms, err := s.readName(e.Name())
		all = append(all, ms...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	slices.SortFunc(all, compareManifests)
	return all, errors.Join(errs...)
}

// readName reads all manifests of one name, returning the good ones and an
// error naming each bad one.
func (s *Store) readName(name string) ([]Manifest, error) {
	dir := s.layout().ManifestsOf(name)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ms []Manifest
	var errs []error
	for _, e := range entries {
		version, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || checkVersion(version) != "" || stranger(dir, e) {
			continue // staging leftovers and strangers are not manifests
		}
		path := filepath.Join(dir, e.Name())
		m, err := ReadManifest(path)
		if err == nil && (m.Name != name || m.Version != version) {
			err = fmt.Errorf("manifest %s describes %s, not %s:%s; the store is damaged", path, m.Ref(), name, version)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ms = append(ms, m)
	}
	return ms, errors.Join(errs...)
}

// stranger reports (with a warning) an entry of one of the store's folders
// that is neither a regular file nor a folder: a FIFO or device left there
// would block or never end a read, so it is skipped, never opened.
func stranger(dir string, e fs.DirEntry) bool {
	if e.Type().IsRegular() || e.IsDir() {
		return false
	}
	slog.Warn("skipping a file that is not a regular file in kiln's image store", "path", termsafe.Line(filepath.Join(dir, e.Name())), "type", e.Type().String())
	return true
}

// compareManifests is the store's total order: name, version, BuildEnd and
// finally the version string, so sorting is deterministic.
func compareManifests(a, b Manifest) int {
	return cmp.Or(
		strings.Compare(a.Name, b.Name),
		CompareVersions(a.Version, b.Version),
		a.BuildEnd.Compare(b.BuildEnd),
		strings.Compare(a.Version, b.Version),
	)
}

// Remove deletes r's manifest and logs, unsets the channels pointing at it
// (their history stays, so UndoTag still works) and drops its revocation.
// The blob stays until garbage collection, since other versions (or
// overlays built on this one) may share it. A version is required: removing
// "the newest" by accident is too easy. RemoveChecked refuses while other
// images are built on r or r is in use.
func (s *Store) Remove(r Ref) error {
	if err := checkRemovable(r); err != nil {
		return err
	}
	unlock, err := s.Lock(r.Name)
	if err != nil {
		return err
	}
	defer unlock()
	return s.removeLocked(r)
}

func checkRemovable(r Ref) error {
	if r.Version == "" {
		return fmt.Errorf("refusing to remove %s without a version; name one, e.g. %s:1.0.0", r, r.Name)
	}
	return r.validate(true)
}

// removeLocked is Remove with the name lock held.
func (s *Store) removeLocked(r Ref) error {
	path := s.manifestPath(r)
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return notFound(r)
		}
		return err
	}
	syncDir(filepath.Dir(path))
	// The manifest is gone, so the image is; what follows only tidies up,
	// and readers cope with leftovers (a channel pointing at a missing
	// version resolves to a clear "not found").
	var errs []error
	if err := os.RemoveAll(s.logDir(r)); err != nil {
		errs = append(errs, fmt.Errorf("removed %s, but not its logs: %w", r, err))
	}
	if err := s.clearChannels(r); err != nil {
		errs = append(errs, fmt.Errorf("removed %s, but not the channels pointing at it: %w", r, err))
	}
	if err := os.Remove(s.revokedPath(r)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removed %s, but not its revocation: %w", r, err))
	}
	os.Remove(filepath.Dir(path))             // only if empty
	os.Remove(filepath.Dir(s.logDir(r)))      // only if empty
	os.Remove(filepath.Dir(s.revokedPath(r))) // only if empty
	return errors.Join(errs...)
}

// FileDigest is the store's digest ("sha256:<hex>") of a file's content.
func FileDigest(path string) (string, error) {
	f, err := fileutil.OpenRegular(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
