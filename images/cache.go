package images

import (
	"errors"
	"os"
)

// FindByFingerprint returns the newest image (by BuildEnd) whose manifest
// has fingerprint fp, is not revoked and whose blob is present: a build with
// identical inputs can reuse it. It scans the manifests; damaged ones cannot
// be a hit and are skipped silently (List reports them), so a damaged store
// only costs a rebuild. The error is for a store that cannot be read at all.
func (s *Store) FindByFingerprint(fp string) (Manifest, bool, error) {
	if fp == "" {
		return Manifest{}, false, errors.New("empty build fingerprint")
	}
	entries, err := os.ReadDir(s.layout().Manifests())
	if errors.Is(err, os.ErrNotExist) {
		return Manifest{}, false, nil
	}
	if err != nil {
		return Manifest{}, false, err
	}
	var best Manifest
	found := false
	for _, e := range entries {
		if !e.IsDir() || checkName(e.Name()) != "" {
			continue
		}
		ms, _ := s.readName(e.Name())
		for _, m := range ms {
			if m.Fingerprint != fp {
				continue
			}
			if found && (m.BuildEnd.Before(best.BuildEnd) || m.BuildEnd.Equal(best.BuildEnd) && compareManifests(m, best) < 0) {
				continue
			}
			if _, revoked := s.Revoked(m.Ref()); revoked {
				continue
			}
			if _, err := os.Stat(s.BlobPath(m.Digest)); err != nil {
				continue
			}
			best, found = m, true
		}
	}
	return best, found, nil
}
