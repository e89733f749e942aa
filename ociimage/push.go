package ociimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/kiln-dev/kiln/images"
)

// PushResult says what a push did.
type PushResult struct {
	Reference   string   `json:"reference"` // REGISTRY/REPO@sha256:… of the manifest
	Digest      string   `json:"digest"`    // the manifest's digest
	Image       string   `json:"image"`     // the local name:version pushed
	Tags        []string `json:"tags"`
	Chain       []string `json:"chain"` // name:version of each blob, base first
	Layers      int      `json:"layers"`
	LayersSent  int      `json:"layers_sent"` // the others were in the registry already
	BytesSent   int64    `json:"bytes_sent"`
	BytesTotal  int64    `json:"bytes_total"`
	Revoked     string   `json:"revoked,omitempty"`   // the revocation reason that was published
	Unrevoked   bool     `json:"unrevoked,omitempty"` // a revocation in the registry was withdrawn
	Warning     string   `json:"warning,omitempty"`
	DurationSec float64  `json:"duration_seconds"`
}

// Chain returns the backing chain of the version r names, base first: the
// version itself last, and before it the stored version whose blob each
// blob is an overlay on. A backing blob no stored version owns is refused,
// since the puller could not name it.
func Chain(store *images.Store, r images.Ref) ([]images.Manifest, error) {
	top, err := store.Resolve(r)
	if err != nil {
		return nil, err
	}
	all, err := store.List()
	if err != nil && len(all) == 0 {
		return nil, err
	}
	chain := []images.Manifest{top}
	for m := top; m.BackingDigest != ""; {
		if len(chain) > maxChainLength {
			return nil, fmt.Errorf("the backing chain of %s is longer than %d images", top.Ref(), maxChainLength)
		}
		var owner *images.Manifest
		for i := range all {
			c := &all[i]
			if c.Digest != m.BackingDigest {
				continue
			}
			// The recorded parent wins over another version sharing its blob.
			if owner == nil || (m.Parent != nil && m.Parent.Ref == c.Ref().String()) {
				owner = c
			}
		}
		if owner == nil {
			return nil, fmt.Errorf("%s is an overlay on blob %s, which no stored version owns; push a flattened copy (kiln images export, then import)", m.Ref(), m.BackingDigest)
		}
		chain = append(chain, *owner)
		m = *owner
	}
	slices.Reverse(chain)
	return chain, nil
}

// Push sends version r of store (and the blobs of its backing chain) to
// dst as one artifact, tagged with the version (TagFor) and with dst's tag
// when it has one; extraTags are added too (a channel). Blobs the registry
// already has are not sent. A revoked version is pushed with its
// revocation, so pullers see it.
func Push(ctx context.Context, store *images.Store, r images.Ref, dst Reference, extraTags []string, o Options) (PushResult, error) {
	start := time.Now()
	if dst.IsDigest() {
		return PushResult{}, fmt.Errorf("push to %s: a digest names content, not a place; push to REGISTRY/REPO or REGISTRY/REPO:TAG", dst)
	}
	chain, err := Chain(store, r)
	if err != nil {
		return PushResult{}, err
	}
	top := chain[len(chain)-1]
	tags := []string{TagFor(top.Version)}
	if t := dst.Tag(); t != "" {
		tags = append(tags, t)
	}
	for _, t := range append(extraTags, tags...) {
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	repo, err := o.repository(dst)
	if err != nil {
		return PushResult{}, err
	}
	res := PushResult{Image: top.Ref().String(), Tags: tags}
	for _, m := range chain {
		res.Chain = append(res.Chain, m.Ref().String())
	}
	fail := func(err error) (PushResult, error) { return PushResult{}, explain(dst, o, err) }

	chunks := Plan(chain, o.ChunkSize)
	res.Layers = len(chunks)
	for _, c := range chunks {
		res.BytesTotal += c.Size
	}
	var done atomic.Int64
	progress := func(n int64) {
		if o.Progress != nil {
			o.Progress(done.Add(n), res.BytesTotal)
		}
	}
	layers := make([]ocispec.Descriptor, 0, len(chunks))
	for _, c := range chunks {
		d, err := chunkDigest(ctx, store.BlobPath(c.Blob.Digest), c)
		if err != nil {
			return PushResult{}, fmt.Errorf("reading %s: %w", c.Blob.Ref(), err)
		}
		desc := c.Layer(d)
		layers = append(layers, desc)
		have, err := repo.Exists(ctx, desc)
		if err != nil {
			return fail(err)
		}
		if have {
			progress(c.Size)
			continue
		}
		f, err := os.Open(store.BlobPath(c.Blob.Digest))
		if err != nil {
			return PushResult{}, err
		}
		body := &countingReader{r: io.NewSectionReader(f, c.Offset, c.Size), n: progress}
		err = repo.Push(ctx, desc, body)
		f.Close()
		if err != nil {
			return fail(fmt.Errorf("uploading %s: %w", desc.Annotations[ocispec.AnnotationTitle], err))
		}
		res.LayersSent++
		res.BytesSent += c.Size
	}

	cfgJSON, err := json.Marshal(Config{Chain: chain})
	if err != nil {
		return PushResult{}, err
	}
	cfgDesc := ocispec.Descriptor{MediaType: ConfigMediaType, Digest: digest.FromBytes(cfgJSON), Size: int64(len(cfgJSON))}
	if err := pushIfMissing(ctx, repo, cfgDesc, cfgJSON); err != nil {
		return fail(err)
	}
	manJSON, err := BuildManifest(Config{Chain: chain}, cfgDesc, layers)
	if err != nil {
		return PushResult{}, err
	}
	manDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manJSON), Size: int64(len(manJSON)), ArtifactType: ArtifactType}
	for i, t := range tags {
		if i == 0 {
			err = repo.PushReference(ctx, manDesc, bytes.NewReader(manJSON), t)
		} else {
			err = repo.Tag(ctx, manDesc, t)
		}
		if err != nil {
			return fail(fmt.Errorf("tagging %s: %w", t, err))
		}
	}
	if rv, ok := store.Revoked(top.Ref()); ok {
		if err := pushRevocation(ctx, repo, manDesc, rv); err != nil {
			return fail(fmt.Errorf("publishing the revocation of %s: %w", top.Ref(), err))
		}
		res.Revoked = rv.Reason
	} else if n, err := withdrawRevocations(ctx, repo, manDesc); err != nil {
		res.Warning = fmt.Sprintf("%s is no longer revoked here, but its revocation in the registry could not be removed (%v); pullers still refuse it", top.Ref(), explain(dst, o, err))
	} else if n > 0 {
		res.Unrevoked = true
	}
	res.Digest = manDesc.Digest.String()
	res.Reference = dst.Repo() + "@" + res.Digest
	res.DurationSec = time.Since(start).Seconds()
	return res, nil
}

// pushRevocation publishes a revocation referrer whose subject is the
// image's manifest. oras-go falls back to the referrers tag scheme where
// the registry has no referrers API (Distribution).
func pushRevocation(ctx context.Context, repo *remote.Repository, subject ocispec.Descriptor, rv images.Revocation) error {
	empty := ocispec.DescriptorEmptyJSON
	if err := pushIfMissing(ctx, repo, empty, empty.Data); err != nil {
		return err
	}
	at := rv.At
	if at.IsZero() {
		at = time.Now()
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: RevocationArtifactType,
		Config:       empty,
		Layers:       []ocispec.Descriptor{empty},
		Subject:      &subject,
		Annotations: map[string]string{
			AnnotationRevoked:         rv.Reason,
			ocispec.AnnotationCreated: at.UTC().Format(time.RFC3339),
		},
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: RevocationArtifactType,
		Digest: digest.FromBytes(data), Size: int64(len(data))}
	return repo.Push(ctx, desc, bytes.NewReader(data))
}

// withdrawRevocations deletes the revocation referrers of subject, for a
// version unrevoked since it was pushed revoked, and says how many it
// deleted. Registries that refuse deletes make it an error.
func withdrawRevocations(ctx context.Context, repo *remote.Repository, subject ocispec.Descriptor) (int, error) {
	var found []ocispec.Descriptor
	err := repo.Referrers(ctx, subject, RevocationArtifactType, func(refs []ocispec.Descriptor) error {
		for _, r := range refs {
			if r.ArtifactType == RevocationArtifactType {
				found = append(found, r)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, r := range found {
		if err := repo.Delete(ctx, r); err != nil {
			return 0, err
		}
	}
	return len(found), nil
}

func pushIfMissing(ctx context.Context, repo *remote.Repository, desc ocispec.Descriptor, data []byte) error {
	have, err := repo.Exists(ctx, desc)
	if err != nil || have {
		return err
	}
	return repo.Push(ctx, desc, bytes.NewReader(data))
}

// chunkDigest hashes one chunk of a blob file. A blob in one chunk is its
// own digest, which the store already knows (and verify checks).
func chunkDigest(ctx context.Context, path string, c Chunk) (digest.Digest, error) {
	if c.Count == 1 {
		return digest.Parse(c.Blob.Digest)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, &ctxReader{ctx: ctx, r: io.NewSectionReader(f, c.Offset, c.Size)}); err != nil {
		return "", err
	}
	return digest.NewDigest(digest.SHA256, h), nil
}

// countingReader reports every read's size to n.
type countingReader struct {
	r io.Reader
	n func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	if k > 0 {
		c.n(int64(k))
	}
	return k, err
}

// ctxReader stops a long read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
