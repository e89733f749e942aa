package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/internal/fileutil"
)

// maxChainDepth bounds a backing chain. Real chains are a few levels deep;
// a longer one is damage (or a loop), not something to follow forever.
const maxChainDepth = 64

// Verify checks that image r (any ref form; it is resolved first) is intact:
// its blob is present and hashes to the manifest's digest, with the size the
// manifest records; qemu-img check finds no corruption or leaks; and its
// backing chain holds: a manifest with BackingDigest has a blob whose
// backing file names that blob, the backing blob is present and its digest
// right, and so on down the chain. It returns nil or one error per problem
// (joined), each starting with the ref, e.g. "hello:1.1.0: backing blob
// sha256:… is missing". It needs qemu-img.
func (s *Store) Verify(ctx context.Context, r Ref) error {
	m, err := s.Resolve(r)
	if err != nil {
		return err
	}
	return newVerifier(s).manifest(ctx, m)
}

// VerifyAll verifies every stored image and returns each one's result by
// ref ("hello:1.0.0"), nil for an intact image. A manifest that cannot be
// read is reported under the ref its file name gives. Blobs shared by
// several images (bases) are checked once. If ctx ends, the images not yet
// verified get ctx's error. If the manifests folder itself cannot be read,
// the only entry is under "".
func (s *Store) VerifyAll(ctx context.Context) map[string]error {
	out := map[string]error{}
	root := s.layout().Manifests()
	names, err := os.ReadDir(root)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			out[""] = fmt.Errorf("reading the store's manifests: %w", err)
		}
		return out
	}
	v := newVerifier(s)
	for _, n := range names {
		if !n.IsDir() || checkName(n.Name()) != "" {
			continue
		}
		files, err := os.ReadDir(filepath.Join(root, n.Name()))
		if err != nil {
			out[n.Name()] = fmt.Errorf("%s: %w", n.Name(), err)
			continue
		}
		for _, f := range files {
			version, ok := strings.CutSuffix(f.Name(), ".json")
			if !ok || f.IsDir() || checkVersion(version) != "" || stranger(filepath.Join(root, n.Name()), f) {
				continue
			}
			r := Ref{Name: n.Name(), Version: version}
			if err := ctx.Err(); err != nil {
				out[r.String()] = fmt.Errorf("%s: not verified: %w", r, err)
				continue
			}
			m, err := s.Get(r)
			if err != nil {
				out[r.String()] = fmt.Errorf("%s: %w", r, err)
				continue
			}
			out[r.String()] = v.manifest(ctx, m)
		}
	}
	return out
}

// verifier remembers what it found about each blob, so a base shared by
// many images is hashed and checked once.
type verifier struct {
	s     *Store
	blobs map[string]*blobResult
}

type blobResult struct {
	info    disk.Info // what qemu-img says, when hasInfo
	hasInfo bool
	// problems with this blob alone (missing, damaged, qemu-img check),
	// each starting with its digest; the caller says "blob" or "backing
	// blob". chain holds the problems further down its backing chain,
	// complete sentences.
	problems []string
	chain    []string
}

func newVerifier(s *Store) *verifier {
	return &verifier{s: s, blobs: map[string]*blobResult{}}
}

// manifest verifies one image: what the manifest claims about its blob,
// then the blob and its chain.
func (v *verifier) manifest(ctx context.Context, m Manifest) error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	path := v.s.BlobPath(m.Digest)
	if fi, err := os.Stat(path); err == nil && fi.Size() != m.FileSize {
		add("blob %s is %d bytes, but the manifest says %d", m.Digest, fi.Size(), m.FileSize)
	}
	b := v.blob(ctx, m.Digest, 0)
	for _, p := range b.problems {
		add("blob %s", p)
	}
	if b.hasInfo {
		backing := b.info.BackingFilename
		switch {
		case b.info.Format != m.Format:
			add("the manifest says %s, but qemu-img sees a %s image", m.Format, b.info.Format)
		case backing != "" && m.BackingDigest == "":
			add("the blob is an overlay on %s, but the manifest has no backing_digest", backing)
		case backing == "" && m.BackingDigest != "":
			add("the manifest has backing_digest %s, but the blob has no backing file", m.BackingDigest)
		case backing != "" && filepath.Base(backing) != strings.TrimPrefix(m.BackingDigest, "sha256:"):
			add("the blob's backing file is %s, not the store blob %s (its backing_digest)", backing, m.BackingDigest)
		}
	}
	problems = append(problems, b.chain...)
	if err := ctx.Err(); err != nil {
		add("not fully verified: %v", err)
	}
	if len(problems) == 0 {
		return nil
	}
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = fmt.Errorf("%s: %s", m.Ref(), p)
	}
	return errors.Join(errs...)
}

// blob checks the blob with digest d and, recursively, its backing chain.
// Results are cached per digest; depth guards against loops.
func (v *verifier) blob(ctx context.Context, d string, depth int) *blobResult {
	if b, ok := v.blobs[d]; ok {
		return b
	}
	b := &blobResult{}
	v.blobs[d] = b // before recursing, so a loop ends here
	add := func(format string, args ...any) { b.problems = append(b.problems, fmt.Sprintf(format, args...)) }
	if ctx.Err() != nil {
		delete(v.blobs, d) // not a verdict; do not cache it
		return b
	}
	path := v.s.BlobPath(d)
	if path == "" {
		add("%q is not a valid digest", d)
		return b
	}
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			add("%s is missing", d)
		} else {
			add("%s: %v", d, err)
		}
		return b
	}
	got, err := fileDigestContext(ctx, path)
	switch {
	case ctx.Err() != nil:
		delete(v.blobs, d)
		return b
	case err != nil:
		add("%s cannot be read: %v", d, err)
		return b
	case got != d:
		add("%s is damaged: its content hashes to %s", d, got)
	}
	info, err := disk.ReadInfo(ctx, path)
	if err != nil {
		add("%s: %v", d, err)
		return b
	}
	b.info, b.hasInfo = info, true
	if info.DataFile != "" {
		add("%s keeps its data in the external file %s, outside the store", d, info.DataFile)
		return b
	}

	chainOK := true
	if bf := info.BackingFilename; bf != "" {
		bd := "sha256:" + filepath.Base(bf)
		switch {
		case checkDigest(bd) != nil:
			add("%s is an overlay on %s, which is not a store blob", d, bf)
			chainOK = false
		case depth+1 >= maxChainDepth:
			add("%s: backing chain deeper than %d levels (a loop?)", d, maxChainDepth)
			chainOK = false
		default:
			sub := v.blob(ctx, bd, depth+1)
			// Problems further down are reported for every image on top.
			for _, p := range sub.problems {
				b.chain = append(b.chain, "backing blob "+p)
			}
			b.chain = append(b.chain, sub.chain...)
			if len(sub.problems) > 0 || len(sub.chain) > 0 || !sub.hasInfo {
				chainOK = false
			}
			if sub.hasInfo && info.BackingFormat != "" && info.BackingFormat != sub.info.Format {
				add("%s names %s as its backing format, but %s is %s", d, info.BackingFormat, bd, sub.info.Format)
			}
		}
	}
	// qemu-img check opens the whole chain; with a broken chain it would
	// only repeat what is reported already.
	if chainOK {
		if err := disk.Check(ctx, path); err != nil && ctx.Err() == nil {
			add("%s: %v", d, err)
		}
	}
	return b
}

// fileDigestContext is FileDigest, interruptible.
func fileDigestContext(ctx context.Context, path string) (string, error) {
	f, err := fileutil.OpenRegular(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b stagedBlob
	if err := copyHash(ctx, nil, f, &b); err != nil {
		return "", err
	}
	return b.digest, nil
}
