package images

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// PackerBuild is one entry of a Packer manifest's "builds", as Packer's
// manifest post-processor writes it.
type PackerBuild struct {
	Name          string            `json:"name"`
	BuilderType   string            `json:"builder_type"`
	BuildTime     int64             `json:"build_time,omitempty"`
	Files         []PackerFile      `json:"files"`
	ArtifactID    string            `json:"artifact_id"`
	PackerRunUUID string            `json:"packer_run_uuid"`
	CustomData    map[string]string `json:"custom_data"`
}

// PackerFile is one file of a PackerBuild.
type PackerFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// WritePackerManifest records image m in a Packer-compatible manifest file
// (packer-manifest.json), so tools written for Packer's manifest
// post-processor can pick up kiln's builds. Like Packer, it appends a build
// to the file's "builds" (earlier builds, and any fields kiln does not know,
// are kept as they are) and sets "last_run_uuid" to runUUID. The build has
// builder_type "kiln", build_time m.BuildEnd in Unix seconds, blobPath as
// its only file, artifact_id "name:version", and custom_data digest,
// version and parent (the parent ref, or ""). The file is replaced
// atomically; concurrent writers are serialised with Packer's own
// "<path>.lock" convention.
func WritePackerManifest(path string, m Manifest, blobPath, runUUID string) error {
	if err := m.Ref().validate(true); err != nil {
		return err
	}
	if path == "" {
		return errors.New("packer manifest: no file name given")
	}
	size := m.FileSize
	if size == 0 {
		if fi, err := os.Stat(blobPath); err == nil {
			size = fi.Size()
		}
	}
	at := m.BuildEnd
	if at.IsZero() {
		at = time.Now()
	}
	parent := ""
	if m.Parent != nil {
		parent = m.Parent.Ref
	}
	return AppendPackerBuild(path, PackerBuild{
		Name:          m.Name,
		BuilderType:   "kiln",
		BuildTime:     at.Unix(),
		Files:         []PackerFile{{Name: blobPath, Size: size}},
		ArtifactID:    m.Ref().String(),
		PackerRunUUID: runUUID,
		CustomData:    map[string]string{"digest": m.Digest, "version": m.Version, "parent": parent},
	})
}

// AppendPackerBuild adds b to the Packer manifest at path as Packer does:
// earlier builds and unknown fields kept, last_run_uuid set to b's run.
func AppendPackerBuild(path string, b PackerBuild) error {
	if path == "" {
		return errors.New("packer manifest: no file name given")
	}
	runUUID := b.PackerRunUUID
	build, err := json.Marshal(b)
	if err != nil {
		return err
	}

	unlock := lockPackerManifest(path)
	defer unlock()
	doc := map[string]json.RawMessage{}
	var builds []json.RawMessage
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("packer manifest: %w", err)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, &doc); err != nil {
			return fmt.Errorf("packer manifest %s is not valid JSON (%v); fix it or move it away", path, err)
		}
		if raw, ok := doc["builds"]; ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			if err := json.Unmarshal(raw, &builds); err != nil {
				return fmt.Errorf("packer manifest %s: \"builds\" is not a list (%v); fix it or move it away", path, err)
			}
		}
	}
	builds = append(builds, build)
	if doc["builds"], err = json.Marshal(builds); err != nil {
		return err
	}
	if doc["last_run_uuid"], err = json.Marshal(runUUID); err != nil {
		return err
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(path, append(out, '\n'), 0o644); err != nil {
		return fmt.Errorf("packer manifest: %w", err)
	}
	return nil
}

// lockPackerManifest takes Packer's lock for its manifest file: creating
// "<path>.lock" exclusively, retrying briefly. Like Packer, it goes ahead
// without the lock when it stays taken (a crashed writer leaves it behind),
// and removes it only if it created it.
func lockPackerManifest(path string) (unlock func()) {
	lock := path + ".lock"
	for i := range 5 {
		time.Sleep(time.Duration(i) * 100 * time.Millisecond)
		f, err := os.OpenFile(lock, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			f.Close()
			return func() { os.Remove(lock) }
		}
		if !errors.Is(err, os.ErrExist) {
			break // e.g. a read-only folder: the write will say what is wrong
		}
	}
	return func() {}
}
