package images

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/proc"
)

// staleTmpAge is how old a leftover in tmp/ must be before GC removes it
// (on top of its owner being dead): long enough that a slow copy by a
// process gc cannot see (another pid namespace) is not cut short.
const staleTmpAge = time.Hour

// GCItem is one blob removed by GC.
type GCItem struct {
	Digest string
	Size   int64
}

// GCReport says what GC removed, or in a dry run would remove.
type GCReport struct {
	Removed []GCItem // unreferenced blobs, sorted by digest
	Stale   []string // leftovers in tmp/ of dead processes (paths)
	Freed   int64    // bytes of Removed and Stale together
	Kept    int      // blobs kept
}

// GC removes the blobs nothing needs and the leftovers of dead processes
// in tmp/, and reports what it removed (dryRun: what it would remove,
// removing nothing).
//
// A blob is kept when it is some manifest's digest, an extra root (roots:
// digest -> who uses it, e.g. the blobs that running fleets' overlays and
// running builds are backed by), or on the backing chain of either, followed
// through each blob's own qcow2 backing file name. If any manifest cannot be
// read, or a blob's backing file cannot be, GC removes nothing and says so:
// that manifest or chain may need blobs GC cannot see. A malformed root is
// refused for the same reason.
//
// A tmp/ entry is stale when its name carries the pid of its writer
// (tmpName's "<prefix>-<pid>-<random>", or kiln build's
// "build-<image>-<pid>.qcow2"), that process is gone, and it has not
// changed for an hour. Entries without a pid are never touched.
//
// GC holds locks/.gc.lock exclusively, so two GCs do not race. Add holds the
// same lock shared from just before it puts a blob in place (or finds the
// blob already there, or checks its backing blob) until its manifest is
// written. So GC never runs between the moment a blob becomes needed by an
// Add and the moment its manifest records that; a blob Add is still staging
// lives in tmp/ under Add's pid and is not GC's to touch. GC does not take
// the per-name locks.
func (s *Store) GC(ctx context.Context, roots map[string]string, dryRun bool) (GCReport, error) {
	for _, d := range slices.Sorted(maps.Keys(roots)) {
		if err := checkDigest(d); err != nil {
			return GCReport{}, fmt.Errorf("gc: the root used by %s is not a blob digest (%v); nothing was removed", orSomething(roots[d]), err)
		}
	}
	if err := s.init(); err != nil {
		return GCReport{}, err
	}
	unlock, err := s.lockGC(ctx, syscall.LOCK_EX)
	if err != nil {
		return GCReport{}, err
	}
	defer unlock()

	marked, err := s.mark(ctx, roots)
	if err != nil {
		return GCReport{}, err
	}
	if err := s.runHook("gc-marked"); err != nil {
		return GCReport{}, err
	}

	var rep GCReport
	var errs []error
	blobs := s.layout().Blobs()
	entries, err := os.ReadDir(blobs)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return GCReport{}, fmt.Errorf("gc: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		d := "sha256:" + e.Name()
		if e.IsDir() || checkDigest(d) != nil {
			continue // not a blob the store wrote; leave it alone
		}
		if marked[d] {
			rep.Kept++
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("gc: %w", err))
			continue
		}
		if !dryRun {
			if err := os.Remove(filepath.Join(blobs, e.Name())); err != nil {
				if !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, fmt.Errorf("gc: removing blob %s: %w", d, err))
				}
				continue
			}
		}
		rep.Removed = append(rep.Removed, GCItem{Digest: d, Size: fi.Size()})
		rep.Freed += fi.Size()
	}
	if !dryRun && len(rep.Removed) > 0 {
		syncDir(blobs)
	}

	stale, err := s.staleTmp(time.Now())
	if err != nil {
		errs = append(errs, fmt.Errorf("gc: %w", err))
	}
	for _, path := range stale {
		size := treeSize(path)
		if !dryRun {
			if err := os.RemoveAll(path); err != nil {
				errs = append(errs, fmt.Errorf("gc: removing %s: %w", path, err))
				continue
			}
		}
		rep.Stale = append(rep.Stale, path)
		rep.Freed += size
	}
	return rep, errors.Join(errs...)
}

// BlobDigest returns the digest of the store blob at path, for turning an
// overlay's backing file (disk.Info.FullBackingFilename, or a bare hex name
// as store overlays use) into a GC root. ok is false when path is not a
// blob of this store. It does not check that the blob exists.
func (s *Store) BlobDigest(path string) (digest string, ok bool) {
	d := "sha256:" + filepath.Base(path)
	if checkDigest(d) != nil {
		return "", false
	}
	if filepath.Base(path) == path { // bare hex name, relative to blobs/sha256
		return d, true
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return "", false
	}
	blobs := s.layout().Blobs()
	if dir == blobs {
		return d, true
	}
	// The same folder by another name (a symlinked home, say).
	a, err1 := os.Stat(dir)
	b, err2 := os.Stat(blobs)
	if err1 == nil && err2 == nil && os.SameFile(a, b) {
		return d, true
	}
	return "", false
}

// mark returns every digest that must stay: manifests' digests, roots, and
// their backing chains.
func (s *Store) mark(ctx context.Context, roots map[string]string) (map[string]bool, error) {
	ms, err := s.List()
	if err != nil {
		return nil, fmt.Errorf("gc: %w; nothing was removed, as a manifest that cannot be read may still need its blobs: fix or remove it first", err)
	}
	type pending struct{ digest, user string }
	var queue []pending
	for _, m := range ms {
		queue = append(queue, pending{m.Digest, m.Ref().String()})
		if m.BackingDigest != "" {
			queue = append(queue, pending{m.BackingDigest, m.Ref().String()})
		}
	}
	for _, d := range slices.Sorted(maps.Keys(roots)) {
		queue = append(queue, pending{d, orSomething(roots[d])})
	}
	marked := map[string]bool{}
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p := queue[0]
		queue = queue[1:]
		if marked[p.digest] {
			continue
		}
		marked[p.digest] = true
		info, err := probeImage(s.BlobPath(p.digest))
		if errors.Is(err, os.ErrNotExist) {
			continue // nothing to keep; Verify reports it
		}
		if err != nil {
			return nil, fmt.Errorf("gc: cannot read the backing file of blob %s (used by %s): %w; nothing was removed: run \"kiln images verify\" and remove what is damaged", p.digest, p.user, err)
		}
		if info.backingFile == "" {
			continue
		}
		// Store overlays name their backing blob by its bare hex name (or a
		// path ending in it); anything else is outside the store.
		if bd := "sha256:" + filepath.Base(info.backingFile); checkDigest(bd) == nil {
			queue = append(queue, pending{bd, p.user})
		}
	}
	return marked, nil
}

// staleTmp lists the entries of tmp/ whose writer is dead and that have not
// changed for staleTmpAge.
func (s *Store) staleTmp(now time.Time) ([]string, error) {
	entries, err := os.ReadDir(s.tmpDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		pid := tmpOwner(e.Name())
		if pid <= 0 {
			continue
		}
		fi, err := e.Info()
		if err != nil || now.Sub(fi.ModTime()) < staleTmpAge {
			continue
		}
		if proc.Running(pid) {
			continue
		}
		out = append(out, filepath.Join(s.tmpDir(), e.Name()))
	}
	return out, nil
}

// tmpOwner returns the pid in a tmp/ entry's name, or 0 when it has none:
//
//	build-<image>-<pid>.qcow2[...]   kiln build's output
//	<prefix>-<pid>-<random>[...]     tmpName, staged logs, atomic writes,
//	                                 Import's conversions (random has no "-")
func tmpOwner(name string) int {
	parse := func(s string) int {
		if s == "" || len(s) > 10 || strings.Trim(s, "0123456789") != "" {
			return 0
		}
		pid, err := strconv.Atoi(s)
		if err != nil || pid <= 0 {
			return 0
		}
		return pid
	}
	if rest, ok := strings.CutPrefix(name, "build-"); ok && strings.Contains(rest, ".qcow2") {
		rest, _, _ = strings.Cut(rest, ".qcow2")
		if i := strings.LastIndexByte(rest, '-'); i >= 0 {
			return parse(rest[i+1:])
		}
		return 0
	}
	fields := strings.Split(name, "-")
	if len(fields) < 3 {
		return 0
	}
	return parse(fields[len(fields)-2])
}

// treeSize is the size of a file, or of the files under a folder.
func treeSize(path string) int64 {
	var n int64
	filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// lockGC takes locks/.gc.lock: exclusive (syscall.LOCK_EX) for GC, shared
// (syscall.LOCK_SH) for Add's commit. flock drops it when the holder dies.
// The file is never removed, so there is no stale-file takeover as in
// LockContext.
func (s *Store) lockGC(ctx context.Context, how int) (unlock func(), err error) {
	if err := os.MkdirAll(s.layout().Locks(), 0o700); err != nil {
		return nil, err
	}
	path := s.layout().GCLock()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock: %w", err)
	}
	delay := 5 * time.Millisecond
	for {
		err := flock(f, how|syscall.LOCK_NB)
		if err == nil {
			var once sync.Once
			return func() {
				once.Do(func() {
					flock(f, syscall.LOCK_UN)
					f.Close()
				})
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			if how == syscall.LOCK_EX {
				return nil, fmt.Errorf("waiting for another garbage collection, or an image being stored, to finish: %w", ctx.Err())
			}
			return nil, fmt.Errorf("waiting for garbage collection to finish: %w", ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

func orSomething(who string) string {
	if who == "" {
		return "something running"
	}
	return who
}
