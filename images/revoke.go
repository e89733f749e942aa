package images

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/fileutil"
)

// ErrRevoked matches CheckUsable's error for a revoked image.
var ErrRevoked = errors.New("image revoked")

// maxReasonLen bounds a revocation reason: a sentence or a CVE list, not a
// report.
const maxReasonLen = 1024

// Revocation says why a version must not be used any more. It is kept in
// revoked/<name>/<version>.json, apart from the manifest, so revoking never
// rewrites an image's record.
type Revocation struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

func (s *Store) revokedPath(r Ref) string {
	return filepath.Join(s.Root, "revoked", r.Name, r.Version+".json")
}

// Revoke marks version r as not to be used, for reason (required, e.g. "CVE-2025-1234
// in openssl"). Revoking again replaces the reason. The image stays in the
// store: running fleets and images built on it keep working, and
// CheckUsable refuses new uses unless forced.
func (s *Store) Revoke(r Ref, reason string) error {
	reason = strings.TrimSpace(reason)
	if err := needVersion(r, "revoke"); err != nil {
		return err
	}
	switch {
	case reason == "":
		return fmt.Errorf("revoking %s needs a reason: say why it must not be used", r)
	case len(reason) > maxReasonLen:
		return fmt.Errorf("the reason for revoking %s is longer than %d characters; shorten it", r, maxReasonLen)
	}
	if err := s.init(); err != nil {
		return err
	}
	unlock, err := s.Lock(r.Name)
	if err != nil {
		return err
	}
	defer unlock()
	if !s.hasManifest(r) {
		return notFound(r)
	}
	data, err := json.MarshalIndent(Revocation{Reason: reason, At: time.Now().UTC()}, "", "  ")
	if err != nil {
		return err
	}
	path := s.revokedPath(r)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("revoking %s: %w", r, err)
	}
	if err := writeFileAtomic(s.tmpDir(), path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("revoking %s: %w", r, err)
	}
	return nil
}

// Unrevoke makes version r usable again. It works for an image no longer in
// the store too, to clean up.
func (s *Store) Unrevoke(r Ref) error {
	if err := needVersion(r, "unrevoke"); err != nil {
		return err
	}
	unlock, err := s.Lock(r.Name)
	if err != nil {
		return err
	}
	defer unlock()
	path := s.revokedPath(r)
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("image %s is not revoked", r)
		}
		return fmt.Errorf("unrevoking %s: %w", r, err)
	}
	syncDir(filepath.Dir(path))
	os.Remove(filepath.Dir(path)) // only if empty
	return nil
}

// Revoked reports whether version r is revoked, and why. A revocation record
// that exists but cannot be read counts as revoked (with a reason saying
// so): when in doubt, an image is not used silently.
func (s *Store) Revoked(r Ref) (Revocation, bool) {
	if r.Version == "" || r.validate(true) != nil {
		return Revocation{}, false
	}
	path := s.revokedPath(r)
	f, err := fileutil.OpenRegular(path)
	if errors.Is(err, os.ErrNotExist) {
		return Revocation{}, false
	}
	unreadable := func(err error) (Revocation, bool) {
		return Revocation{Reason: fmt.Sprintf("its revocation record %s cannot be read (%v)", path, err)}, true
	}
	if err != nil {
		return unreadable(err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return unreadable(err)
	}
	var rv Revocation
	if err := json.Unmarshal(data, &rv); err != nil {
		return unreadable(err)
	}
	if strings.TrimSpace(rv.Reason) == "" {
		rv.Reason = "no reason recorded"
	}
	return rv, true
}

// CheckUsable returns an error matching ErrRevoked when m is revoked, unless
// force; callers check it before running or building on an image. It also
// refuses, forced or not, an image whose blob (or a blob down its backing
// chain) is missing, is not a regular file or no longer has the size its
// manifest records: a truncated or replaced blob would boot as a damaged
// disk. (A full re-hash is `images verify`'s job.)
func (s *Store) CheckUsable(m Manifest, force bool) error {
	if err := s.checkBlobSizes(m); err != nil {
		return err
	}
	if force {
		return nil
	}
	if rv, ok := s.Revoked(m.Ref()); ok {
		return &kindError{fmt.Sprintf("image %s is revoked: %s", m.Ref(), rv.Reason), ErrRevoked}
	}
	return nil
}

// needVersion refuses refs that do not name one version: acting on "the
// newest" or on whatever a channel points at today is too easy to get wrong.
func needVersion(r Ref, verb string) error {
	if r.Version == "" {
		return fmt.Errorf("refusing to %s %s without a version; name one, e.g. %s:1.0.0", verb, r, r.Name)
	}
	return r.validate(true)
}

// checkBlobSizes compares m's blob, and the blobs it is built on, with the
// sizes their manifests record.
func (s *Store) checkBlobSizes(m Manifest) error {
	chain, err := s.blobChain(m)
	if err != nil {
		return err
	}
	for _, b := range chain {
		if err := s.checkBlobSize(m.Ref(), b.digest, b.size); err != nil {
			return err
		}
	}
	return nil
}

// chainBlob is one blob of an image's backing chain and the size its
// manifest records (-1 for a blob no manifest describes).
type chainBlob struct {
	digest string
	size   int64
}

// blobChain lists m's blob and the blobs it is built on, top first, from
// the manifests' backing_digest.
func (s *Store) blobChain(m Manifest) ([]chainBlob, error) {
	chain := []chainBlob{{m.Digest, m.FileSize}}
	if m.BackingDigest == "" {
		return chain, nil
	}
	byDigest := map[string]Manifest{}
	all, _ := s.List() // unreadable manifests are verify's to report
	for _, o := range all {
		byDigest[o.Digest] = o
	}
	for next := m.BackingDigest; next != ""; next = byDigest[next].BackingDigest {
		if len(chain) >= maxChainDepth {
			return nil, fmt.Errorf("image %s: backing chain deeper than %d levels; run kiln images verify", m.Ref(), maxChainDepth)
		}
		size := int64(-1)
		if o, ok := byDigest[next]; ok {
			size = o.FileSize
		}
		chain = append(chain, chainBlob{next, size})
	}
	return chain, nil
}

// checkBlobSize checks one blob of image r; size -1 checks only that it is
// there and a regular file.
func (s *Store) checkBlobSize(r Ref, digest string, size int64) error {
	path := s.BlobPath(digest)
	if path == "" {
		return fmt.Errorf("image %s: %q is not a valid digest; the store is damaged", r, digest)
	}
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("image %s: its blob %s is missing; run kiln images verify", r, digest)
	case err != nil:
		return fmt.Errorf("image %s: %w", r, err)
	case !st.Mode().IsRegular():
		return fmt.Errorf("image %s: its blob %s is not a regular file; the store is damaged (kiln images verify)", r, digest)
	case size >= 0 && st.Size() != size:
		return fmt.Errorf("image %s: its blob %s is %d bytes, but its manifest says %d: it was truncated or changed (see kiln images verify)", r, digest, st.Size(), size)
	}
	return nil
}
