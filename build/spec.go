// Package build runs the bake pipeline: an ordered list of steps, each with
// a cleanup that runs in reverse order when a later step fails or the build
// is interrupted. It knows nothing of HCL or CLI flags; it is handed a Spec.
package build

import "time"

// Spec is everything needed to bake one image version. The template package
// decodes it from HCL; tests and other callers may build it directly.
type Spec struct {
	Name    string // image name, e.g. "hello"
	Version string // image version, e.g. "1.0.0"

	Base Source

	DiskSize  int64 // virtual size in bytes; 0 keeps the base's size
	CPUs      int   // 0 means the default (2)
	MemoryMiB int   // 0 means the default (1024)

	UserData []byte // extra cloud-config merged into kiln's own user-data

	Provisioners []Provisioner

	Generalize  bool   // cloud-init clean, machine-id, host keys, build user (default true)
	Compression string // "zstd" (default), "zlib" or "none"
	Flatten     bool   // write a standalone image instead of an overlay on a stored base
	Warm        bool   // resume a saved booted guest when one fits, else save one (templates default to true)

	BootTimeout     time.Duration // until SSH answers; 0 means the default
	ShutdownTimeout time.Duration // ACPI powerdown before a hard stop; 0 means the default

	// Provenance recorded in the manifest.
	TemplatePath   string
	TemplateDigest string     // sha256 of the template and every file it read
	Variables      []Variable // values as used; sensitive ones are redacted in the manifest
}

// Source is where the build's first disk comes from. Exactly one of File,
// URL or Image is set.
type Source struct {
	File     string // a local disk image (qcow2 or raw)
	URL      string // http(s) URL of a disk image, with Checksum
	Checksum string // "sha256:HEX", "sha512:HEX" or "file:URL" of a SHA256SUMS-style list
	Image    string // a stored image ref, e.g. "debian:12"
}

// Provisioner is one provisioning step, run in order over SSH.
type Provisioner struct {
	Type string // "shell" or "file"

	// shell
	Inline       []string          // commands, run by one shell with -e
	Scripts      []string          // local script paths (absolute), uploaded and run in order
	Env          map[string]string // environment for the commands
	ExpectReboot bool              // the commands reboot the guest; reconnect afterwards
	Timeout      time.Duration     // 0 means no limit beyond the build's
	User         string            // guest account the commands run as; "" means root

	// file
	Source      string // local path for uploads, guest path for downloads
	Destination string // guest path for uploads, local path for downloads
	Direction   string // "upload" (default) or "download"
}

// Variable is one template variable as used by a build.
type Variable struct {
	Name      string
	Value     string
	Sensitive bool
}
