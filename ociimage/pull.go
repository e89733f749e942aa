package ociimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
)

// PullOptions choose the local ref and what to do when it is taken.
type PullOptions struct {
	Name, Version string // override the pushed name and version of the top image
	Force         bool   // replace a different image stored under the same ref
}

// PullResult says what a pull did.
type PullResult struct {
	Reference    string   `json:"reference"` // REGISTRY/REPO@sha256:… of the manifest
	Digest       string   `json:"digest"`    // the manifest's digest
	Image        string   `json:"image"`     // the local name:version
	BlobDigest   string   `json:"blob_digest"`
	Stored       []string `json:"stored"`            // refs added, base first
	Present      []string `json:"present"`           // chain images already here
	Channel      string   `json:"channel,omitempty"` // the local channel set from the tag
	Revoked      string   `json:"revoked,omitempty"` // the revocation reason the registry carries
	BlobsFetched int      `json:"blobs_fetched"`
	BytesFetched int64    `json:"bytes_fetched"`
	BytesTotal   int64    `json:"bytes_total"` // the whole chain's size
	DurationSec  float64  `json:"duration_seconds"`
}

// Pull fetches the kiln image src names (a tag, "latest" when none, or a
// digest) into store: the blobs of its backing chain that the store lacks,
// each verified against its chunk digests and its own digest while it
// streams, then added base first with their manifests, so lineage is kept.
// A tag that is a valid channel name (not the version's own tag, not
// "latest") moves the local channel of that name. A revocation published
// in the registry is recorded, so the image is refused as a local revoked
// one is. If anything fails, the store is left as it was.
func Pull(ctx context.Context, store *images.Store, src Reference, po PullOptions, o Options) (PullResult, error) {
	start := time.Now()
	if src.Reference.Reference == "" {
		src.Reference.Reference = "latest"
	}
	repo, err := o.repository(src)
	if err != nil {
		return PullResult{}, err
	}
	fail := func(err error) (PullResult, error) { return PullResult{}, explain(src, o, err) }

	manDesc, manJSON, err := fetchManifest(ctx, repo, src)
	if err != nil {
		return fail(err)
	}
	man, blobs, err := parseManifest(manJSON)
	if err != nil {
		return PullResult{}, fmt.Errorf("%s: %w", src, err)
	}
	cfgJSON, err := fetchSmall(ctx, repo, man.Config, maxConfigBytes)
	if err != nil {
		return fail(fmt.Errorf("%s: config: %w", src, err))
	}
	var cfg Config
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return PullResult{}, fmt.Errorf("%s: the config is not kiln's: %w", src, err)
	}
	if err := cfg.Validate(); err != nil {
		return PullResult{}, fmt.Errorf("%s: %w", src, err)
	}
	if err := matchChain(cfg, blobs); err != nil {
		return PullResult{}, fmt.Errorf("%s: %w", src, err)
	}
	reason, err := revocation(ctx, repo, manDesc)
	if err != nil {
		return fail(fmt.Errorf("%s: looking for a revocation: %w", src, err))
	}

	plan, err := planPull(store, cfg, po)
	if err != nil {
		return PullResult{}, err
	}
	res := PullResult{Digest: manDesc.Digest.String(), Reference: src.Repo() + "@" + manDesc.Digest.String(),
		Image: plan[len(plan)-1].ref.String(), BlobDigest: cfg.Top().Digest, Revoked: reason,
		Stored: []string{}, Present: []string{}}
	channel := channelFor(src.Tag(), cfg.Top().Version, plan[len(plan)-1].ref.Name)

	var want int64
	for i, p := range plan {
		res.BytesTotal += cfg.Chain[i].FileSize
		if p.fetch {
			want += cfg.Chain[i].FileSize
		}
	}
	staging, err := store.StagingDir("pull")
	if err != nil {
		return PullResult{}, err
	}
	defer os.RemoveAll(staging)
	var done atomic.Int64
	progress := func(n int64) {
		if o.Progress != nil {
			o.Progress(done.Add(n), want)
		}
	}
	if o.Progress != nil {
		o.Progress(0, want)
	}
	for i := range plan {
		if !plan[i].fetch {
			continue
		}
		path := filepath.Join(staging, strings.TrimPrefix(cfg.Chain[i].Digest, "sha256:"))
		if err := fetchBlob(ctx, repo, blobs[i], path, progress); err != nil {
			return fail(fmt.Errorf("%s: %w", cfg.Chain[i].Ref(), err))
		}
		plan[i].src = path
		res.BlobsFetched++
		res.BytesFetched += blobs[i].size
	}

	// Store base first; undo what this pull added if a later step fails.
	var added []images.Ref
	committed := false
	defer func() {
		if committed {
			return
		}
		for i := len(added) - 1; i >= 0; i-- {
			store.Remove(added[i])
		}
	}()
	for i, p := range plan {
		if p.src == "" {
			res.Present = append(res.Present, p.ref.String())
			continue
		}
		m := cfg.Chain[i]
		m.Name, m.Version = p.ref.Name, p.ref.Version
		m.VirtualSize = 0  // read from the blob's header, not trusted
		m.Fingerprint = "" // another machine's build cache key is not this one's
		cleanManifest(&m)
		m.Labels = withOrigin(m.Labels, "")
		if i == len(plan)-1 {
			m.Labels = withOrigin(m.Labels, origin(src, manDesc.Digest))
		}
		// A blob from a registry is outside input like any other: no
		// external data file, no backing but its parent's blob, no format
		// but one kiln stores.
		if _, err := disk.Admit(ctx, p.src, disk.AdmitOptions{BlobDir: images.BlobDir(store.Root), Staged: true}); err != nil {
			return PullResult{}, fmt.Errorf("%s from the registry: %w", p.ref, err)
		}
		if _, err := store.Add(ctx, m, p.src, images.AddOptions{Force: p.replace}); err != nil {
			if have, gerr := store.Get(p.ref); errors.Is(err, images.ErrExists) && gerr == nil && have.Digest == m.Digest {
				res.Present = append(res.Present, p.ref.String()) // a concurrent pull stored it first
				continue
			}
			return PullResult{}, fmt.Errorf("storing %s: %w", p.ref, err)
		}
		if !p.replace {
			added = append(added, p.ref)
		}
		res.Stored = append(res.Stored, p.ref.String())
	}
	top := plan[len(plan)-1].ref
	if reason != "" {
		if _, already := store.Revoked(top); !already {
			if err := store.Revoke(top, reason); err != nil {
				return PullResult{}, err
			}
		}
	}
	if channel != "" {
		if err := store.Tag(top, channel); err != nil {
			return PullResult{}, fmt.Errorf("setting %s@%s: %w", top.Name, channel, err)
		}
		res.Channel = channel
	}
	committed = true
	res.DurationSec = time.Since(start).Seconds()
	return res, nil
}

// LabelPulledFrom records, on a version a pull stored, the reference it was
// pulled by and the manifest's digest (REGISTRY/REPO:TAG@sha256:… or
// REGISTRY/REPO@sha256:…), so a later use of the same reference finds it
// without asking the registry (see Local).
const LabelPulledFrom = "dev.kiln.pulled-from"

func origin(src Reference, d digest.Digest) string {
	if t := src.Tag(); t != "" {
		return src.Repo() + ":" + t + "@" + d.String()
	}
	return src.Repo() + "@" + d.String()
}

// withOrigin returns labels with LabelPulledFrom set to o, or removed when
// o is "" (a registry's own labels never claim where they were pulled from).
func withOrigin(labels map[string]string, o string) map[string]string {
	out := map[string]string{}
	for k, v := range labels {
		if k != LabelPulledFrom {
			out[k] = v
		}
	}
	if o != "" {
		out[LabelPulledFrom] = o
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Local finds the stored version an earlier pull stored by exactly this
// reference (same repository and tag, or same digest), as `docker run`
// uses a pulled image without asking the registry again; `kiln images
// pull` is what refreshes a tag.
func Local(store *images.Store, src Reference) (images.Manifest, bool) {
	if src.Reference.Reference == "" {
		src.Reference.Reference = "latest"
	}
	all, _ := store.List()
	for _, m := range all {
		o := m.Labels[LabelPulledFrom]
		at := strings.LastIndexByte(o, '@')
		if at < 0 {
			continue
		}
		byTag, d := o[:at], o[at+1:]
		if src.IsDigest() && d == src.Reference.Reference && (byTag == src.Repo() || strings.HasPrefix(byTag, src.Repo()+":")) {
			return m, true
		}
		if !src.IsDigest() && byTag == src.Repo()+":"+src.Reference.Reference {
			return m, true
		}
	}
	return images.Manifest{}, false
}

// step is what Pull does with one image of the chain.
type step struct {
	ref     images.Ref
	fetch   bool   // its blob is not in the store
	src     string // the file to add ("" when nothing is to be added)
	replace bool   // --force over a different image of the same ref
}

// planPull decides, for each image of the chain, its local ref and whether
// its blob must be fetched. An ancestor whose ref is taken here by another
// image is stored as VERSION+<12 hex of its digest>, so both stay.
func planPull(store *images.Store, cfg Config, po PullOptions) ([]step, error) {
	plan := make([]step, len(cfg.Chain))
	for i, m := range cfg.Chain {
		r := m.Ref()
		isTop := i == len(cfg.Chain)-1
		if isTop && po.Name != "" {
			r.Name = po.Name
		}
		if isTop && po.Version != "" {
			r.Version = po.Version
		}
		if _, err := images.ParseRef(r.String()); err != nil {
			return nil, err
		}
		blob := store.BlobPath(m.Digest)
		_, err := os.Stat(blob)
		haveBlob := err == nil
		p := step{ref: r, fetch: !haveBlob}
		local, err := store.Get(r)
		switch {
		case err == nil && local.Digest == m.Digest:
			// present under this very ref
		case err == nil && isTop && !po.Force:
			return nil, images.ExistsError(r, fmt.Sprintf("it is stored here as a different image (%s, not %s): pull it under another name:version", short(local.Digest), short(m.Digest)))
		case err == nil && isTop:
			p.replace = true
			p.src = blob
		case err == nil:
			p.ref.Version = m.Version + "+" + strings.TrimPrefix(m.Digest, "sha256:")[:12]
			if other, err := store.Get(p.ref); err == nil && other.Digest == m.Digest {
				break // pulled before under this name
			}
			p.src = blob
		case errors.Is(err, images.ErrNotFound):
			if haveBlob && !isTop && ownedBlob(store, m.Digest) {
				break // the blob is here under another ref; lineage follows it
			}
			p.src = blob
		default:
			return nil, err
		}
		plan[i] = p
	}
	return plan, nil
}

// ownedBlob reports whether some stored version has blob d.
func ownedBlob(store *images.Store, d string) bool {
	all, _ := store.List()
	for _, m := range all {
		if m.Digest == d {
			return true
		}
	}
	return false
}

// channelFor is the local channel a pulled tag sets, or "": a tag that is
// a valid channel name, not the version's own tag and not "latest".
func channelFor(tag, version, name string) string {
	if tag == "" || tag == TagFor(version) || tag == images.Latest {
		return ""
	}
	r, err := images.ParseRef(name + "@" + tag)
	if err != nil || r.Channel == "" {
		return ""
	}
	return tag
}

// fetchManifest resolves src and reads its manifest, checked against its
// digest (and against the digest src names, if it names one).
func fetchManifest(ctx context.Context, repo *remote.Repository, src Reference) (ocispec.Descriptor, []byte, error) {
	desc, rc, err := repo.FetchReference(ctx, src.Reference.Reference)
	if err != nil {
		return desc, nil, notFound(src, err)
	}
	defer rc.Close()
	if desc.Size <= 0 || desc.Size > maxManifestBytes {
		return desc, nil, fmt.Errorf("%s: the manifest's size %d is out of range", src, desc.Size)
	}
	data, err := io.ReadAll(io.LimitReader(rc, desc.Size+1))
	if err != nil {
		return desc, nil, err
	}
	got := digest.FromBytes(data)
	if int64(len(data)) != desc.Size || got != desc.Digest {
		return desc, nil, fmt.Errorf("%s: the manifest received has digest %s, not %s; the registry's copy is damaged", src, got, desc.Digest)
	}
	if want, err := src.Digest(); err == nil && want != got {
		return desc, nil, fmt.Errorf("%s: the registry served a manifest with digest %s", src, got)
	}
	if desc.MediaType != ocispec.MediaTypeImageManifest {
		return desc, nil, fmt.Errorf("%s is a %s, not a kiln image (an OCI image manifest)", src, desc.MediaType)
	}
	return desc, data, nil
}

// fetchSmall reads a small blob and checks its digest.
func fetchSmall(ctx context.Context, repo *remote.Repository, desc ocispec.Descriptor, limit int64) ([]byte, error) {
	if desc.Size > limit {
		return nil, fmt.Errorf("%d bytes is more than %d", desc.Size, limit)
	}
	rc, err := repo.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, desc.Size+1))
	if err != nil {
		return nil, err
	}
	if got := digest.FromBytes(data); int64(len(data)) != desc.Size || got != desc.Digest {
		return nil, fmt.Errorf("content has digest %s (%d bytes), not %s (%d bytes); the registry's copy is damaged", got, len(data), desc.Digest, desc.Size)
	}
	return data, nil
}

// fetchBlob streams the chunks of one blob into path, checking each
// chunk's digest as it arrives and the whole blob's digest at the end.
func fetchBlob(ctx context.Context, repo *remote.Repository, b blobLayers, path string, progress func(int64)) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	whole := sha256.New()
	out := &sparseWriter{f: f}
	for _, l := range b.chunks {
		if err := fetchChunk(ctx, repo, l, io.MultiWriter(out, whole), progress); err != nil {
			return fmt.Errorf("layer %s: %w", l.Annotations[ocispec.AnnotationTitle], err)
		}
	}
	if got := "sha256:" + hex.EncodeToString(whole.Sum(nil)); got != b.digest {
		return fmt.Errorf("the blob rebuilt from its layers has digest %s, not %s; the registry's copy is damaged or was tampered with", got, b.digest)
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

func fetchChunk(ctx context.Context, repo *remote.Repository, l ocispec.Descriptor, w io.Writer, progress func(int64)) error {
	rc, err := repo.Fetch(ctx, l)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h, progressWriter(progress)), &ctxReader{ctx: ctx, r: io.LimitReader(rc, l.Size+1)})
	if err != nil {
		return err
	}
	if got := digestOf(h); n != l.Size || got != l.Digest {
		return fmt.Errorf("received %d bytes with digest %s, want %d bytes with digest %s; the registry's copy is damaged or was tampered with", n, got, l.Size, l.Digest)
	}
	return nil
}

func digestOf(h hash.Hash) digest.Digest { return digest.NewDigest(digest.SHA256, h) }

// sparseWriter writes a stream to f a 64 KiB block at a time, leaving a
// hole for each block that is all zeros, so a raw image stays as sparse as
// it was; Close writes the last block and sets the size.
type sparseWriter struct {
	f   *os.File
	off int64 // where buf starts
	buf []byte
}

const sparseBlock = 64 << 10

var zeroBlock = make([]byte, sparseBlock)

func (w *sparseWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), sparseBlock-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == sparseBlock {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *sparseWriter) flush() error {
	if !bytes.Equal(w.buf, zeroBlock[:len(w.buf)]) {
		if _, err := w.f.WriteAt(w.buf, w.off); err != nil {
			return err
		}
	}
	w.off += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

// Close writes what is buffered and sets the file's size (a trailing hole
// needs it); it does not close f.
func (w *sparseWriter) Close() error {
	if err := w.flush(); err != nil {
		return err
	}
	return w.f.Truncate(w.off)
}

type progressWriter func(int64)

func (p progressWriter) Write(b []byte) (int, error) {
	p(int64(len(b)))
	return len(b), nil
}

// revocation returns the reason of a kiln revocation referring to desc, or
// "" when there is none.
func revocation(ctx context.Context, repo *remote.Repository, desc ocispec.Descriptor) (string, error) {
	var reasons []string
	err := repo.Referrers(ctx, desc, RevocationArtifactType, func(refs []ocispec.Descriptor) error {
		for _, r := range refs {
			if r.ArtifactType != RevocationArtifactType {
				continue
			}
			if err := checkDescriptor(r, maxManifestBytes); err != nil {
				return fmt.Errorf("referrer: %w", err)
			}
			reason := r.Annotations[AnnotationRevoked]
			if reason == "" { // the index may not copy annotations: read the referrer
				data, err := fetchSmall(ctx, repo, r, maxManifestBytes)
				if err != nil {
					return err
				}
				var m ocispec.Manifest
				if err := json.Unmarshal(data, &m); err != nil {
					return err
				}
				if m.Subject == nil || m.Subject.Digest != desc.Digest {
					continue
				}
				reason = m.Annotations[AnnotationRevoked]
			}
			reasons = append(reasons, strings.TrimSpace(reason))
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if len(reasons) == 0 {
		return "", nil
	}
	reason := printable(strings.Join(reasons, "; "))
	if reason == "" {
		reason = "revoked in the registry, no reason given"
	}
	if len(reason) > maxReason {
		reason = strings.ToValidUTF8(reason[:maxReason], "") + "…"
	}
	return reason, nil
}

// maxReason keeps a registry's revocation reason within what the store
// takes (1024 bytes).
const maxReason = 1000

// printable replaces control characters (terminal escapes) in text from a
// registry that kiln will print, with spaces.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
}

// cleanManifest makes the free-text fields of a manifest from a registry
// printable (images show prints them); names, versions and digests are
// checked by Validate already.
func cleanManifest(m *images.Manifest) {
	for _, p := range []*string{&m.Compression, &m.Base.Source, &m.Base.Checksum, &m.TemplateDigest,
		&m.KilnVersion, &m.Accelerator} {
		*p = printable(*p)
	}
	for i := range m.Provisioners {
		m.Provisioners[i] = printable(m.Provisioners[i])
	}
	for i := range m.Phases {
		m.Phases[i].Name = printable(m.Phases[i].Name)
	}
	for _, mp := range []*map[string]string{&m.Variables, &m.Labels} {
		if *mp == nil {
			continue
		}
		clean := make(map[string]string, len(*mp))
		for k, v := range *mp {
			clean[printable(k)] = printable(v)
		}
		*mp = clean
	}
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
