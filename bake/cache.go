package bake

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
)

// fingerprint identifies a build's inputs: the template with every file and
// variable it read (its digest), the exact base, and the name and version.
// Two builds with the same fingerprint would bake the same image, so the
// second returns the first's result.
func fingerprint(s Spec, baseChecksum string) string {
	if s.TemplateDigest == "" {
		return "" // built without a template: nothing to compare
	}
	h := sha256.New()
	io.WriteString(h, "kiln-build-fingerprint v1\n")
	fmt.Fprintf(h, "template %s\nbase %s\nname %s\nversion %s\n", s.TemplateDigest, baseChecksum, s.Name, s.Version)
	fmt.Fprintf(h, "disk %d cpus %d memory %d generalize %t compression %s flatten %t\n",
		s.DiskSize, s.CPUs, s.MemoryMiB, s.Generalize, s.Compression, s.Flatten)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
