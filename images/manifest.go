package images

import (
	"bytes"
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

// SchemaVersion is the manifest schema this kiln writes and reads. Older
// kilns refuse newer manifests rather than silently dropping fields.
const SchemaVersion = 1

// maxManifestSize bounds what ReadManifest reads: a manifest is a few KiB,
// and a stray huge file should fail fast rather than eat memory.
const maxManifestSize = 4 << 20

// maxFingerprintLen bounds Manifest.Fingerprint, an opaque digest.
const maxFingerprintLen = 512

// Manifest describes one stored image version: the blob it points to and how
// it was made, so an image can be inspected and rebuilt later.
type Manifest struct {
	SchemaVersion  int               `json:"schema_version"` // 1
	Name           string            `json:"name"`
	Version        string            `json:"version"`
	Digest         string            `json:"digest"` // "sha256:<hex>" of the blob
	Format         string            `json:"format"` // "qcow2" or "raw"
	VirtualSize    int64             `json:"virtual_size"`
	FileSize       int64             `json:"file_size"`
	Compression    string            `json:"compression,omitempty"`
	Base           BaseInfo          `json:"base"`
	Parent         *Parent           `json:"parent,omitempty"`         // when built on a stored image
	BackingDigest  string            `json:"backing_digest,omitempty"` // when the blob is a qcow2 overlay on another blob
	TemplateDigest string            `json:"template_digest,omitempty"`
	Fingerprint    string            `json:"fingerprint,omitempty"`  // build inputs' digest, for the build cache (FindByFingerprint)
	Variables      map[string]string `json:"variables,omitempty"`    // sensitive values already redacted by the caller
	Provisioners   []string          `json:"provisioners,omitempty"` // short descriptions
	KilnVersion    string            `json:"kiln_version"`
	Accelerator    string            `json:"accelerator,omitempty"`
	CPUModel       string            `json:"cpu_model,omitempty"` // QEMU's -cpu, as the accelerator probe chose it
	BuildStart     time.Time         `json:"build_start"`
	BuildEnd       time.Time         `json:"build_end"`
	Phases         []PhaseTime       `json:"phases,omitempty"`           // build steps before storing, in order
	GuestUsedBytes int64             `json:"guest_used_bytes,omitempty"` // `df` of the guest's root after generalising
	Labels         map[string]string `json:"labels,omitempty"`
	// Boot is how the build's guest started: "cold", "saved" (booted, then
	// saved for warm starts) or "resumed" (from SavedState).
	Boot       string `json:"boot,omitempty"`
	SavedState string `json:"saved_state,omitempty"` // the saved state's key, when saved or resumed
}

// PhaseTime is how long one build step took.
type PhaseTime struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// BaseInfo records where the build's first disk came from.
type BaseInfo struct {
	Source   string `json:"source"` // file path, URL or "image:debian:12"
	Checksum string `json:"checksum,omitempty"`
}

// Parent records the stored image a build started from.
type Parent struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
}

// Ref returns the manifest's name:version.
func (m Manifest) Ref() Ref { return Ref{Name: m.Name, Version: m.Version} }

// Validate checks what the store relies on: a supported schema, a valid
// name:version (they become paths) and well-formed digests (they become
// paths too).
func (m Manifest) Validate() error {
	switch {
	case m.SchemaVersion == 0:
		return errors.New("schema_version is missing")
	case m.SchemaVersion > SchemaVersion:
		return fmt.Errorf("schema_version %d is newer than this kiln understands (%d); upgrade kiln", m.SchemaVersion, SchemaVersion)
	case m.SchemaVersion < 0:
		return fmt.Errorf("schema_version %d is invalid", m.SchemaVersion)
	}
	if err := m.Ref().validate(true); err != nil {
		return err
	}
	if err := checkDigest(m.Digest); err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	switch m.Format {
	case "qcow2", "raw":
	case "":
		return errors.New("format is empty")
	default:
		// It is passed to qemu-img as the backing format of overlays.
		return fmt.Errorf("format %q is not qcow2 or raw", m.Format)
	}
	if len(m.Fingerprint) > maxFingerprintLen {
		return fmt.Errorf("fingerprint is longer than %d characters", maxFingerprintLen)
	}
	if m.FileSize < 0 || m.VirtualSize < 0 {
		return errors.New("sizes must not be negative")
	}
	if m.BackingDigest != "" {
		if err := checkDigest(m.BackingDigest); err != nil {
			return fmt.Errorf("backing_digest: %w", err)
		}
		if m.BackingDigest == m.Digest {
			return errors.New("backing_digest is the image's own digest")
		}
	}
	if m.Parent != nil {
		if _, err := ParseRef(m.Parent.Ref); err != nil {
			return fmt.Errorf("parent: %w", err)
		}
		if err := checkDigest(m.Parent.Digest); err != nil {
			return fmt.Errorf("parent digest: %w", err)
		}
	}
	return nil
}

// checkDigest accepts exactly "sha256:" and 64 lower-case hex digits, the
// only form the store writes, so a digest can be turned into a path safely.
func checkDigest(d string) error {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok {
		return fmt.Errorf("%q does not start with \"sha256:\"", d)
	}
	if len(hex) != 64 {
		return fmt.Errorf("%q does not have 64 hex digits", d)
	}
	for i := 0; i < len(hex); i++ {
		c := hex[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%q is not lower-case hex", d)
		}
	}
	return nil
}

// ReadManifest reads and validates one manifest file. Unknown fields are
// ignored so a newer kiln can add optional ones; a newer schema_version is
// refused.
func ReadManifest(path string) (Manifest, error) {
	f, err := fileutil.OpenRegular(path)
	if err != nil {
		return Manifest{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return Manifest{}, fmt.Errorf("reading manifest %s: %w", path, err)
	}
	m, err := decodeManifest(data)
	if err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w", path, err)
	}
	return m, nil
}

func decodeManifest(data []byte) (Manifest, error) {
	if len(data) > maxManifestSize {
		return Manifest{}, fmt.Errorf("larger than %d bytes", maxManifestSize)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Manifest{}, err
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// encodeManifest is the on-disk form: indented for people reading the
// store, with a final newline.
func encodeManifest(m Manifest) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteFileAtomic writes data to path so that readers see either the old
// file or the complete new one, never a partial write: it writes a temporary
// file in the same folder, syncs it and renames it over path.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFileAtomic(filepath.Dir(path), path, data, perm)
}

// writeFileAtomic stages in tmpDir, which must be on path's filesystem.
// The pid in the temporary name tells GC whose leftover a crashed write is
// (see tmpOwner).
func writeFileAtomic(tmpDir, path string, data []byte, perm os.FileMode) error {
	return fileutil.WriteAtomicVia(tmpDir, fmt.Sprintf(".%s.tmp-%d-*", filepath.Base(path), os.Getpid()), path, data, perm)
}

// syncDir makes a rename in dir durable. Best effort: some filesystems
// refuse to sync folders, and the rename itself already happened.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
