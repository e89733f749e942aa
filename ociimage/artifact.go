// Package ociimage carries kiln image versions to and from OCI registries
// (Docker Distribution, Harbor, GHCR, ECR, Zot). One version is one OCI
// artifact:
//
//   - artifactType application/vnd.kiln.image.v1;
//   - the config is kiln's own document (ConfigMediaType): the manifests of
//     the version's backing chain, base first, the version itself last;
//   - the layers are the chain's blobs, base first, each cut into chunks
//     (registries cap a layer at a few GB and an upload at minutes); every
//     chunk carries the digest and size of its whole blob and its offset,
//     so a puller rebuilds and verifies each blob byte for byte;
//   - org.opencontainers.image.* annotations, so registry UIs show a title,
//     version and date.
//
// A revocation travels as a referrer artifact (RevocationArtifactType)
// whose subject is the version's manifest. The protocol is oras-go's; this
// package writes by hand only the mapping.
package ociimage

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kiln-dev/kiln/images"
)

// Media and artifact types of kiln's artifacts.
const (
	ArtifactType           = "application/vnd.kiln.image.v1"
	ConfigMediaType        = "application/vnd.kiln.image.config.v1+json"
	ChunkMediaType         = "application/vnd.kiln.image.blob.chunk.v1"
	RevocationArtifactType = "application/vnd.kiln.image.revocation.v1"
)

// Annotations kiln sets on chunks and revocations, beside the standard
// org.opencontainers.image.* ones.
const (
	AnnotationBlobDigest  = "dev.kiln.blob.digest" // the whole blob's sha256
	AnnotationBlobSize    = "dev.kiln.blob.size"   // the whole blob's size
	AnnotationChunkOffset = "dev.kiln.chunk.offset"
	AnnotationChunkIndex  = "dev.kiln.chunk.index" // 0-based
	AnnotationChunkCount  = "dev.kiln.chunk.count"
	AnnotationImageRef    = "dev.kiln.image.ref" // name:version the blob belongs to
	AnnotationRevoked     = "dev.kiln.revocation.reason"
)

// DefaultChunkSize keeps each upload well under public registries' limits
// (GHCR: 10 GB a layer, 10 minutes an upload).
const DefaultChunkSize = 256 << 20

// Limits on what a registry hands back, so a hostile one cannot make kiln
// read without end or allocate without bound.
const (
	maxManifestBytes = 4 << 20
	maxConfigBytes   = 16 << 20
	maxChainLength   = 64
	maxLayers        = 1 << 16
)

// Config is the artifact's config: the version's backing chain, base first.
// The last manifest is the version pushed; each one before it is the
// version whose blob the next one's blob is a qcow2 overlay on.
type Config struct {
	Chain []images.Manifest `json:"chain"`
}

// Top is the version the artifact is for.
func (c Config) Top() images.Manifest { return c.Chain[len(c.Chain)-1] }

// Validate checks a config from outside: every manifest valid, each blob
// backed by the one before it, the base backed by nothing.
func (c Config) Validate() error {
	if len(c.Chain) == 0 {
		return errors.New("the artifact's config lists no image")
	}
	if len(c.Chain) > maxChainLength {
		return fmt.Errorf("the artifact's backing chain has %d images, more than %d", len(c.Chain), maxChainLength)
	}
	for i, m := range c.Chain {
		if err := m.Validate(); err != nil {
			return fmt.Errorf("image %d of the chain: %w", i+1, err)
		}
		if m.FileSize <= 0 {
			return fmt.Errorf("image %s of the chain has no size", m.Ref())
		}
		want := ""
		if i > 0 {
			want = c.Chain[i-1].Digest
		}
		if m.BackingDigest != want {
			return fmt.Errorf("image %s of the chain is backed by %q, not by the image before it (%q)", m.Ref(), m.BackingDigest, want)
		}
		if i > 0 && m.Format != "qcow2" {
			return fmt.Errorf("image %s of the chain is an overlay but not qcow2", m.Ref())
		}
	}
	return nil
}

// Chunk is one layer: a slice of one blob of the chain.
type Chunk struct {
	Blob   images.Manifest // the version the blob belongs to (Digest, FileSize)
	Offset int64
	Size   int64
	Index  int
	Count  int
}

// Plan cuts each blob of the chain into chunks of at most chunkSize bytes,
// base first.
func Plan(chain []images.Manifest, chunkSize int64) []Chunk {
	if chunkSize <= 0 {
		chunkSize = DefaultChunkSize
	}
	var out []Chunk
	for _, m := range chain {
		n := int((m.FileSize + chunkSize - 1) / chunkSize)
		for i := 0; i < n; i++ {
			off := int64(i) * chunkSize
			out = append(out, Chunk{Blob: m, Offset: off, Size: min(chunkSize, m.FileSize-off), Index: i, Count: n})
		}
	}
	return out
}

// Layer is the descriptor of chunk c whose content has digest d.
func (c Chunk) Layer(d digest.Digest) ocispec.Descriptor {
	title := blobTitle(c.Blob)
	if c.Count > 1 {
		title = fmt.Sprintf("%s.part%04d", title, c.Index+1)
	}
	return ocispec.Descriptor{
		MediaType: ChunkMediaType,
		Digest:    d,
		Size:      c.Size,
		Annotations: map[string]string{
			ocispec.AnnotationTitle: title,
			AnnotationBlobDigest:    c.Blob.Digest,
			AnnotationBlobSize:      strconv.FormatInt(c.Blob.FileSize, 10),
			AnnotationChunkOffset:   strconv.FormatInt(c.Offset, 10),
			AnnotationChunkIndex:    strconv.Itoa(c.Index),
			AnnotationChunkCount:    strconv.Itoa(c.Count),
			AnnotationImageRef:      c.Blob.Ref().String(),
		},
	}
}

func blobTitle(m images.Manifest) string {
	return fmt.Sprintf("%s_%s.%s", m.Name, m.Version, m.Format)
}

// BuildManifest is the OCI image manifest of an artifact whose config is
// config and whose layers are layers (from Chunk.Layer, in Plan's order).
func BuildManifest(cfg Config, config ocispec.Descriptor, layers []ocispec.Descriptor) ([]byte, error) {
	top := cfg.Top()
	ann := map[string]string{
		ocispec.AnnotationTitle:   top.Name,
		ocispec.AnnotationVersion: top.Version,
		ocispec.AnnotationCreated: top.BuildEnd.UTC().Format(time.RFC3339),
		AnnotationImageRef:        top.Ref().String(),
	}
	if top.TemplateDigest != "" {
		ann[ocispec.AnnotationRevision] = top.TemplateDigest
	}
	if src := top.Base.Source; strings.HasPrefix(src, "https://") || strings.HasPrefix(src, "http://") {
		ann[ocispec.AnnotationSource] = src
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       config,
		Layers:       layers,
		Annotations:  ann,
	}
	return json.Marshal(m)
}

// blobLayers is one blob of the chain as the manifest lists it.
type blobLayers struct {
	digest string
	size   int64
	chunks []ocispec.Descriptor // in order, offsets contiguous from 0
}

// parseManifest checks a manifest from a registry against kiln's mapping
// and groups its layers by blob, in chain order.
func parseManifest(data []byte) (ocispec.Manifest, []blobLayers, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return m, nil, fmt.Errorf("the manifest is not valid JSON: %w", err)
	}
	if m.ArtifactType != ArtifactType || m.Config.MediaType != ConfigMediaType {
		kind := m.ArtifactType
		if kind == "" {
			kind = m.Config.MediaType
		}
		return m, nil, fmt.Errorf("it is not a kiln image (its type is %q, not %s); push one with `kiln images push`", kind, ArtifactType)
	}
	if err := checkDescriptor(m.Config, maxConfigBytes); err != nil {
		return m, nil, fmt.Errorf("config: %w", err)
	}
	if len(m.Layers) == 0 || len(m.Layers) > maxLayers {
		return m, nil, fmt.Errorf("the manifest has %d layers", len(m.Layers))
	}
	var blobs []blobLayers
	for i, l := range m.Layers {
		if l.MediaType != ChunkMediaType {
			return m, nil, fmt.Errorf("layer %d has media type %q, not %s", i+1, l.MediaType, ChunkMediaType)
		}
		if err := checkDescriptor(l, -1); err != nil {
			return m, nil, fmt.Errorf("layer %d: %w", i+1, err)
		}
		a := l.Annotations
		bd := a[AnnotationBlobDigest]
		bsize, err1 := strconv.ParseInt(a[AnnotationBlobSize], 10, 64)
		off, err2 := strconv.ParseInt(a[AnnotationChunkOffset], 10, 64)
		if err := errors.Join(err1, err2); err != nil || bsize <= 0 || off < 0 {
			return m, nil, fmt.Errorf("layer %d: bad %s or %s annotation", i+1, AnnotationBlobSize, AnnotationChunkOffset)
		}
		if len(blobs) == 0 || blobs[len(blobs)-1].digest != bd {
			if off != 0 {
				return m, nil, fmt.Errorf("layer %d starts blob %s at offset %d, not 0", i+1, bd, off)
			}
			blobs = append(blobs, blobLayers{digest: bd, size: bsize})
		}
		b := &blobs[len(blobs)-1]
		end := int64(0)
		if n := len(b.chunks); n > 0 {
			end = annotatedOffset(b.chunks[n-1]) + b.chunks[n-1].Size
		}
		if off != end || b.size != bsize || off+l.Size > bsize {
			return m, nil, fmt.Errorf("layer %d does not continue blob %s where the layer before it ended", i+1, bd)
		}
		b.chunks = append(b.chunks, l)
	}
	for _, b := range blobs {
		last := b.chunks[len(b.chunks)-1]
		if annotatedOffset(last)+last.Size != b.size {
			return m, nil, fmt.Errorf("the layers of blob %s stop short of its size %d", b.digest, b.size)
		}
	}
	return m, blobs, nil
}

func annotatedOffset(l ocispec.Descriptor) int64 {
	off, _ := strconv.ParseInt(l.Annotations[AnnotationChunkOffset], 10, 64)
	return off
}

// checkDescriptor refuses digests other than sha256 (the store's) and
// sizes out of range; limit < 0 means no limit beyond being positive.
func checkDescriptor(d ocispec.Descriptor, limit int64) error {
	if d.Digest.Validate() != nil || d.Digest.Algorithm() != digest.SHA256 { // Algorithm panics on a malformed digest
		return fmt.Errorf("digest %q is not a sha256 digest", d.Digest)
	}
	if d.Size <= 0 || (limit >= 0 && d.Size > limit) {
		return fmt.Errorf("size %d is out of range", d.Size)
	}
	return nil
}

// matchChain checks that the layers carry exactly the config's blobs, in
// order, with the sizes the config records.
func matchChain(cfg Config, blobs []blobLayers) error {
	if len(blobs) != len(cfg.Chain) {
		return fmt.Errorf("the layers carry %d blobs, but the config lists %d images", len(blobs), len(cfg.Chain))
	}
	for i, m := range cfg.Chain {
		if blobs[i].digest != m.Digest || blobs[i].size != m.FileSize {
			return fmt.Errorf("blob %d of the layers is %s (%d bytes), but the config says %s (%d bytes) for %s",
				i+1, blobs[i].digest, blobs[i].size, m.Digest, m.FileSize, m.Ref())
		}
	}
	return nil
}

// TagFor is the registry tag of a version: OCI tags allow no "+", so it
// becomes "_" (as Helm does).
func TagFor(version string) string { return strings.ReplaceAll(version, "+", "_") }
