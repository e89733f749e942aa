package images

import (
	"fmt"
	"os"
	"strings"
)

// IsRegistryRef reports whether s names an image in an OCI registry
// (REGISTRY/REPO[:TAG|@sha256:…]) rather than one in the store: it has a
// "/" and its first part is a host, as docker decides it (it has a "." or
// a ":", or is "localhost"). Local refs never contain "/", and a path
// such as ./disk.qcow2, /srv/x.img or vms.d/disk.qcow2 (a disk image's
// file name) is not a registry reference.
func IsRegistryRef(s string) bool {
	host, rest, ok := strings.Cut(s, "/")
	if !ok || rest == "" || host == "" || host == "." || host == ".." || strings.HasPrefix(host, "~") {
		return false
	}
	lower := strings.ToLower(s)
	for _, ext := range []string{".qcow2", ".img", ".raw", ".vmdk", ".vhd", ".vhdx", ".iso"} {
		if strings.HasSuffix(lower, ext) {
			return false
		}
	}
	return strings.ContainsAny(host, ".:") || host == "localhost"
}

// StagingDir makes a fresh folder in the store's tmp/ for files that are
// about to be added (Add moves them in without a copy, as tmp/ is on the
// store's filesystem). Its name carries the pid, so GC leaves it alone
// while this process lives and removes it after a crash. The caller
// removes it when done.
func (s *Store) StagingDir(prefix string) (string, error) {
	if err := s.init(); err != nil {
		return "", err
	}
	return os.MkdirTemp(s.tmpDir(), fmt.Sprintf("%s-%d-*", prefix, os.Getpid()))
}
