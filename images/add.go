package images

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/internal/fileutil"
)

// AddOptions tunes Store.Add.
type AddOptions struct {
	// Force replaces an existing name:version. The old blob stays until
	// garbage collection; the old logs are replaced by the new ones.
	Force bool

	// Logs maps a log name ("build.log", "serial.log") to a file to copy
	// into the store with the image.
	Logs map[string]string

	// KeepSource leaves src where it is and copies it. Without it Add takes
	// the file over: src is moved into the store (a hard link plus unlink on
	// the same filesystem, so no copy of a multi-GiB image) and is gone after
	// a successful Add (a symlink src: the link goes, its target is copied).
	// A src that is already a store blob is never moved. Use KeepSource when
	// src is a user's file, as for an import.
	KeepSource bool
}

// Add stores src as image m.Name:m.Version and returns the manifest as
// written. It fills SchemaVersion, Digest (checking it if the caller set
// one), FileSize, and, when left empty, Format (qcow2 or raw, from the
// file's header), VirtualSize (from the header) and BuildEnd (now); times
// are stored in UTC.
//
// It refuses a qcow2 blob whose backing file is not the store blob named by
// BackingDigest, since a stored image must not depend on a file outside the
// store (overlays should use the backing blob's bare hex name as a relative
// backing file, which keeps working if the store moves).
//
// An existing name:version is refused with an error matching ErrExists
// unless o.Force. On any failure the store is left as it was: no blob
// without a manifest, no manifest without its blob, no temp files; src is
// left as it was too. The per-name lock is held only for the final renames,
// not while hashing or copying; as locks are not reentrant, do not call Add
// while holding Lock for the same name. While it commits, Add also holds the
// GC lock shared, so a concurrent GC cannot remove a blob it is about to
// reference (see GC); the blob it stages meanwhile lives in tmp/ under its
// pid.
func (s *Store) Add(ctx context.Context, m Manifest, src string, o AddOptions) (Manifest, error) {
	r := m.Ref()
	if err := r.validate(true); err != nil {
		return Manifest{}, err
	}
	logNames := make([]string, 0, len(o.Logs))
	for name := range o.Logs {
		if err := checkLogName(name); err != nil {
			return Manifest{}, err
		}
		logNames = append(logNames, name)
	}
	slices.Sort(logNames)
	if err := s.init(); err != nil {
		return Manifest{}, err
	}
	// Fail fast, before hashing gigabytes; checked again under the lock.
	if !o.Force && s.hasManifest(r) {
		return Manifest{}, exists(r)
	}

	keep := o.KeepSource || s.inBlobs(src)
	b, err := s.stageBlob(ctx, src, keep)
	if err != nil {
		return Manifest{}, err
	}
	defer b.discard()

	if err := fillManifest(&m, b); err != nil {
		return Manifest{}, fmt.Errorf("adding %s from %s: %w", r, src, err)
	}
	data, err := encodeManifest(m)
	if err != nil {
		return Manifest{}, err
	}

	stagedLogs, err := s.stageLogs(logNames, o.Logs)
	defer func() {
		if stagedLogs != "" {
			os.RemoveAll(stagedLogs)
		}
	}()
	if err != nil {
		return Manifest{}, err
	}
	if err := s.runHook("staged"); err != nil {
		return Manifest{}, err
	}

	unlock, err := s.LockContext(ctx, r.Name)
	if err != nil {
		return Manifest{}, err
	}
	defer unlock()
	// Keep garbage collection out from here until the manifest is written:
	// in between, the blob (new, or already stored and about to be shared)
	// and the backing blob are needed by a manifest GC cannot see yet.
	unlockGC, err := s.lockGC(ctx, syscall.LOCK_SH)
	if err != nil {
		return Manifest{}, err
	}
	defer unlockGC()
	if err := ctx.Err(); err != nil {
		return Manifest{}, err
	}
	if !o.Force && s.hasManifest(r) {
		return Manifest{}, exists(r)
	}
	if m.BackingDigest != "" {
		if _, err := os.Stat(s.BlobPath(m.BackingDigest)); err != nil {
			return Manifest{}, fmt.Errorf("adding %s: its backing blob %s is not in the store: %w", r, m.BackingDigest, err)
		}
	}

	// Commit. Each step registers its undo; the manifest rename is the point
	// of no return, and nothing after it can fail the Add.
	var undo []func()
	committed := false
	defer func() {
		if !committed {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	blob := s.BlobPath(m.Digest)
	if _, err := os.Lstat(blob); errors.Is(err, os.ErrNotExist) {
		if err := os.Chmod(b.path, 0o444); err != nil {
			return Manifest{}, err
		}
		if b.linked { // the staged file is src's inode
			undo = append(undo, func() { os.Chmod(src, b.srcMode) })
		}
		if err := os.Rename(b.path, blob); err != nil {
			return Manifest{}, fmt.Errorf("storing blob: %w", err)
		}
		b.path = ""
		undo = append(undo, func() { os.Remove(blob) })
		syncDir(filepath.Dir(blob))
	} else if err != nil {
		return Manifest{}, err
	} // else the same content is already stored; the staged copy is dropped
	if err := s.runHook("blob"); err != nil {
		return Manifest{}, err
	}

	logDir := s.logDir(r)
	oldLogs := ""
	if _, err := os.Lstat(logDir); err == nil {
		moved := s.tmpName("oldlogs")
		if err := os.Rename(logDir, moved); err != nil {
			return Manifest{}, fmt.Errorf("replacing logs: %w", err)
		}
		oldLogs = moved
		undo = append(undo, func() { os.Rename(moved, logDir) })
	}
	if stagedLogs != "" {
		created, err := mkdirTracked(filepath.Dir(logDir))
		if err != nil {
			return Manifest{}, err
		}
		if created {
			undo = append(undo, func() { os.Remove(filepath.Dir(logDir)) })
		}
		if err := os.Rename(stagedLogs, logDir); err != nil {
			return Manifest{}, fmt.Errorf("storing logs: %w", err)
		}
		stagedLogs = ""
		undo = append(undo, func() { os.RemoveAll(logDir) })
	}
	if err := s.runHook("logs"); err != nil {
		return Manifest{}, err
	}

	mpath := s.manifestPath(r)
	created, err := mkdirTracked(filepath.Dir(mpath))
	if err != nil {
		return Manifest{}, err
	}
	if created {
		undo = append(undo, func() { os.Remove(filepath.Dir(mpath)) })
	}
	if err := s.runHook("manifest"); err != nil {
		return Manifest{}, err
	}
	if err := writeFileAtomic(s.tmpDir(), mpath, data, 0o644); err != nil {
		return Manifest{}, fmt.Errorf("writing manifest: %w", err)
	}
	committed = true

	if oldLogs != "" {
		os.RemoveAll(oldLogs)
	}
	if !keep {
		os.Remove(src) // best effort: the image is stored either way
	}
	return m, nil
}

func (s *Store) runHook(stage string) error {
	if s.hook == nil {
		return nil
	}
	return s.hook(stage)
}

func (s *Store) hasManifest(r Ref) bool {
	_, err := os.Lstat(s.manifestPath(r))
	return err == nil
}

// inBlobs reports whether path is one of the store's blobs, e.g. a blob
// being added under a second name: such a file must never be moved or
// removed. (Files elsewhere in the store, such as a build output written to
// tmp/ to be sure of a same-filesystem move, are fine to move.)
func (s *Store) inBlobs(path string) bool {
	p, err := filepath.Abs(path)
	if err != nil {
		return true // cannot tell; be safe
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	blobs := filepath.Dir(s.layout().Blobs())
	if real, err := filepath.EvalSymlinks(blobs); err == nil {
		blobs = real
	}
	return strings.HasPrefix(p, blobs+string(filepath.Separator))
}

// tmpName returns a fresh name in the store's tmp folder. The pid in it
// tells a later garbage collection whose leftovers these are.
func (s *Store) tmpName(prefix string) string {
	return filepath.Join(s.tmpDir(), fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), rand.Text()))
}

// mkdirTracked creates dir (one level) and reports whether it did, so a
// rollback removes only what it created.
func mkdirTracked(dir string) (bool, error) {
	if _, err := os.Lstat(dir); err == nil {
		return false, nil
	}
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	return err == nil, err
}

// stagedBlob is an image file in the store's tmp folder, hashed.
type stagedBlob struct {
	path    string // "" once renamed into place
	linked  bool   // path is a hard link to src (same inode)
	srcMode os.FileMode
	digest  string
	size    int64
}

func (b *stagedBlob) discard() {
	if b.path != "" {
		os.Remove(b.path)
		b.path = ""
	}
}

// stageBlob puts src into tmp/ and hashes it. When src may be taken over it
// is hard-linked (same filesystem, its only name, not a symlink), which is
// instant; otherwise it is copied while hashing, keeping holes so sparse raw
// images stay sparse.
func (s *Store) stageBlob(ctx context.Context, src string, keep bool) (*stagedBlob, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("image file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("image file %s is not a regular file", src)
	}
	b := &stagedBlob{srcMode: fi.Mode().Perm()}
	if !keep && soleName(src) {
		tmp := s.tmpName("blob")
		if os.Link(src, tmp) == nil {
			b.path, b.linked = tmp, true
			if err := b.hash(ctx); err != nil {
				b.discard()
				return nil, err
			}
			return b, nil
		}
		// EXDEV or a filesystem without hard links: copy instead.
	}
	in, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("image file: %w", err)
	}
	defer in.Close()
	tmp := s.tmpName("blob")
	out, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	b.path = tmp
	err = copyHash(ctx, out, in, b)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.discard()
		return nil, fmt.Errorf("copying %s into the store: %w", src, err)
	}
	return b, nil
}

// soleName reports whether path is a regular file (not a symlink) with no
// other hard links: only then may its inode become a read-only blob.
func soleName(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink == 1
}

// hash reads the staged file to fill digest and size.
func (b *stagedBlob) hash(ctx context.Context) error {
	f, err := os.Open(b.path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := copyHash(ctx, nil, f, b); err != nil {
		return fmt.Errorf("hashing image: %w", err)
	}
	return f.Sync() // the data may not have reached the disk yet
}

const sparseBlock = 64 << 10

// copyHash reads in to its end, hashing, and writes to out when out is not
// nil, seeking over all-zero blocks instead of writing them. It checks ctx
// between chunks so a huge copy can be interrupted.
func copyHash(ctx context.Context, out *os.File, in io.Reader, b *stagedBlob) error {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	zero := make([]byte, sparseBlock)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, rerr := io.ReadFull(in, buf)
		if k > 0 {
			h.Write(buf[:k])
			n += int64(k)
			if out != nil {
				for off := 0; off < k; off += sparseBlock {
					chunk := buf[off:min(off+sparseBlock, k)]
					var err error
					if bytes.Equal(chunk, zero[:len(chunk)]) {
						_, err = out.Seek(int64(len(chunk)), io.SeekCurrent)
					} else {
						_, err = out.Write(chunk)
					}
					if err != nil {
						return err
					}
				}
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if out != nil {
		if err := out.Truncate(n); err != nil { // a trailing hole needs the size set
			return err
		}
	}
	b.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	b.size = n
	return nil
}

// stageLogs copies the logs into a fresh folder in tmp/, returning it ("" for
// no logs). On error it returns the folder too, for the caller to remove.
func (s *Store) stageLogs(names []string, logs map[string]string) (string, error) {
	if len(names) == 0 {
		return "", nil
	}
	dir, err := os.MkdirTemp(s.tmpDir(), fmt.Sprintf("logs-%d-*", os.Getpid())) // the pid is for GC
	if err != nil {
		return "", err
	}
	for _, name := range names {
		if err := fileutil.Copy(logs[name], filepath.Join(dir, name), 0o600); err != nil {
			return dir, fmt.Errorf("copying log %s: %w", name, err)
		}
	}
	return dir, nil
}

// fillManifest completes m from the staged blob and checks that what the
// caller claims matches the file.
func fillManifest(m *Manifest, b *stagedBlob) error {
	if m.Digest != "" && m.Digest != b.digest {
		return fmt.Errorf("file has digest %s, but the manifest says %s", b.digest, m.Digest)
	}
	m.SchemaVersion = SchemaVersion
	m.Digest = b.digest
	m.FileSize = b.size

	info, err := probeImage(b.path)
	if err != nil {
		return err
	}
	// Whoever hands the store a file, it holds all its own data: no
	// external data file, no vmdk extents, no encryption (the backing
	// file is checked against backing_digest below).
	if _, err := disk.ReadHeader(b.path); err != nil {
		return err
	}
	if m.Format == "" {
		m.Format = info.format
	}
	// A format mismatch is refused, not corrected: qemu opening a qcow2
	// file as raw (or the reverse) is a classic security hole.
	switch m.Format {
	case "qcow2":
		if info.format != "qcow2" {
			return errors.New("format is qcow2, but the file has no qcow2 header")
		}
	case "raw":
		if info.format == "qcow2" {
			return errors.New("format is raw, but the file is a qcow2 image")
		}
	default:
		return fmt.Errorf("unsupported format %q (want qcow2 or raw)", m.Format)
	}
	if m.VirtualSize == 0 {
		m.VirtualSize = info.virtualSize
	}
	switch {
	case info.backingFile != "" && m.BackingDigest == "":
		return fmt.Errorf("the image is a qcow2 overlay on %s, but the manifest has no backing_digest; flatten it, or store its base and set backing_digest", info.backingFile)
	case info.backingFile == "" && m.BackingDigest != "":
		return fmt.Errorf("backing_digest is %s, but the image has no backing file", m.BackingDigest)
	case m.BackingDigest != "":
		if err := checkDigest(m.BackingDigest); err != nil {
			return fmt.Errorf("backing_digest: %w", err)
		}
		if filepath.Base(info.backingFile) != strings.TrimPrefix(m.BackingDigest, "sha256:") {
			return fmt.Errorf("the image's backing file is %s, not the store blob %s", info.backingFile, m.BackingDigest)
		}
	}
	if m.BuildEnd.IsZero() {
		m.BuildEnd = time.Now()
	}
	m.BuildStart = m.BuildStart.UTC()
	m.BuildEnd = m.BuildEnd.UTC()
	return m.Validate()
}

type imageInfo struct {
	format      string // "qcow2" or "raw"
	virtualSize int64
	backingFile string
}

// probeImage reads just enough of a qcow2 header to know the format, the
// virtual size and the backing file; anything else is raw.
func probeImage(path string) (imageInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return imageInfo{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return imageInfo{}, err
	}
	hdr := make([]byte, 32)
	n, err := io.ReadFull(f, hdr)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return imageInfo{}, err
	}
	if n < 4 || string(hdr[:4]) != "QFI\xfb" {
		return imageInfo{format: "raw", virtualSize: fi.Size()}, nil
	}
	if n < 32 {
		return imageInfo{}, errors.New("truncated qcow2 header")
	}
	be := binary.BigEndian
	if v := be.Uint32(hdr[4:]); v != 2 && v != 3 {
		return imageInfo{}, fmt.Errorf("unsupported qcow2 version %d", v)
	}
	info := imageInfo{format: "qcow2"}
	size := be.Uint64(hdr[24:])
	if size > 1<<62 {
		return imageInfo{}, fmt.Errorf("implausible qcow2 virtual size %d", size)
	}
	info.virtualSize = int64(size)
	if off, l := be.Uint64(hdr[8:]), be.Uint32(hdr[16:]); off != 0 && l != 0 {
		if l > 1023 || off > uint64(fi.Size()) {
			return imageInfo{}, errors.New("invalid qcow2 backing file name")
		}
		name := make([]byte, l)
		if _, err := f.ReadAt(name, int64(off)); err != nil {
			return imageInfo{}, fmt.Errorf("reading qcow2 backing file name: %w", err)
		}
		info.backingFile = string(name)
	}
	return info, nil
}
