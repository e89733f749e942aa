package images

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/kiln-dev/kiln/disk"
)

// Export writes image m as a standalone image at dst (see disk.Export),
// reading its blobs through their digests: every blob of its chain is
// hashed first, and a blob whose bytes no longer match its digest (a
// truncated or bit-flipped file) fails the export with nothing written, no
// output and no .sha256. The blobs are checked again, by size and time,
// before the output is renamed into place, so a blob changed while it was
// read does not pass either. The store's own folder is protected: nothing
// is exported into it.
func (s *Store) Export(ctx context.Context, m Manifest, dst string, o disk.ExportOptions) (string, error) {
	if err := s.checkBlobSizes(m); err != nil {
		return "", err
	}
	chain, err := s.blobChain(m)
	if err != nil {
		return "", err
	}
	type seen struct {
		size int64
		mod  time.Time
	}
	stats := map[string]seen{}
	for _, b := range chain {
		d, path := b.digest, s.BlobPath(b.digest)
		st, err := os.Stat(path)
		if err != nil {
			return "", fmt.Errorf("export %s: %w", m.Ref(), err)
		}
		got, err := fileDigestContext(ctx, path)
		if err != nil {
			return "", fmt.Errorf("export %s: reading blob %s: %w", m.Ref(), d, err)
		}
		if got != d {
			return "", fmt.Errorf("export %s: blob %s is damaged (its bytes no longer match its digest): nothing was exported; see kiln images verify", m.Ref(), d)
		}
		stats[d] = seen{st.Size(), st.ModTime()}
	}
	o.SourceFormat = m.Format
	o.SourceName = m.Ref().String()
	o.Protected = append(o.Protected, s.Root)
	o.BeforeCommit = func() error {
		for d, was := range stats {
			st, err := os.Stat(s.BlobPath(d))
			if err != nil || st.Size() != was.size || !st.ModTime().Equal(was.mod) {
				return fmt.Errorf("blob %s changed while it was exported; nothing was written", d)
			}
		}
		return nil
	}
	return disk.Export(ctx, s.BlobPath(m.Digest), dst, o)
}
