package cloudinit

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kdomanski/iso9660"
)

// WriteISO writes c as a NoCloud seed ISO at path.
//
// The image is plain ISO 9660 (kdomanski/iso9660 writes neither Rock Ridge
// nor Joliet). Its file identifiers are recorded as "meta-data;1",
// "user-data;1" and "network-config;1": lower case, hyphens kept. Linux's
// isofs strips the ";1" version suffix, so the guest sees exactly the names
// cloud-init looks for.
//
// The ISO holds a host private key: it is written to a temporary file with
// mode 0600 in path's directory and renamed into place, so path never holds
// a partial seed and is never readable by others.
func WriteISO(path string, c Config) (err error) {
	userData, err := c.UserDataFile() // validates c
	if err != nil {
		return err
	}
	files := map[string][]byte{MetaDataFile: c.MetaData(), UserDataFile: userData}
	if len(c.NetworkConfig) > 0 {
		files[NetworkConfigFile] = c.NetworkConfig
	}
	return WriteFilesISO(path, VolumeLabel, files)
}

// WriteFilesISO writes files (by their path inside the image) as an ISO
// 9660 image labelled label at path, created 0600 and renamed into place
// like WriteISO: a template's own seed (Packer's cd_files and cd_content)
// may hold secrets too.
func WriteFilesISO(path, label string, files map[string][]byte) (err error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	// The writer stages files in a fresh 0700 directory under os.TempDir;
	// Cleanup removes it, private key included.
	w, err := iso9660.NewWriter()
	if err != nil {
		return fmt.Errorf("cloudinit: %w", err)
	}
	defer w.Cleanup()
	for _, n := range names {
		if err := w.AddFile(bytes.NewReader(files[n]), n); err != nil {
			return fmt.Errorf("cloudinit: add %s: %w", n, err)
		}
	}

	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return fmt.Errorf("cloudinit: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("cloudinit: %w", err)
	}
	if err := w.WriteTo(tmp, label); err != nil {
		return fmt.Errorf("cloudinit: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("cloudinit: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cloudinit: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cloudinit: %w", err)
	}
	return nil
}

// ReadISO returns the files in the root directory of the ISO at path, keyed
// by lower-case name ("meta-data", "user-data", "network-config"), as read
// back by kdomanski/iso9660's reader. It is for tests and for debugging a
// seed; it ignores subdirectories.
func ReadISO(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cloudinit: %w", err)
	}
	defer f.Close()
	img, err := iso9660.OpenImage(f)
	if err != nil {
		return nil, fmt.Errorf("cloudinit: read %s: %w", path, err)
	}
	root, err := img.RootDir()
	if err != nil {
		return nil, fmt.Errorf("cloudinit: read %s: %w", path, err)
	}
	children, err := root.GetChildren()
	if err != nil {
		return nil, fmt.Errorf("cloudinit: read %s: %w", path, err)
	}
	out := make(map[string][]byte, len(children))
	for _, c := range children {
		if c.IsDir() {
			continue
		}
		data, err := io.ReadAll(c.Reader())
		if err != nil {
			return nil, fmt.Errorf("cloudinit: read %s from %s: %w", c.Name(), path, err)
		}
		out[strings.ToLower(c.Name())] = data
	}
	return out, nil
}

// ReadISOLabel returns the volume label of the ISO at path; cloud-init only
// considers a seed labelled "cidata" (VolumeLabel).
func ReadISOLabel(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cloudinit: %w", err)
	}
	defer f.Close()
	img, err := iso9660.OpenImage(f)
	if err != nil {
		return "", fmt.Errorf("cloudinit: read %s: %w", path, err)
	}
	label, err := img.Label()
	if err != nil {
		return "", fmt.Errorf("cloudinit: read %s: %w", path, err)
	}
	return label, nil
}
