// Package build runs the bake pipeline: an ordered list of steps, each with
// a cleanup that runs in reverse order when a later step fails or the build
// is interrupted. It knows nothing of HCL or CLI flags; it is handed a Spec.
package bake

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

	Generalize  bool   // cloud-init state, machine-id, host keys, build user (default true)
	Compression string // "zstd" (default), "zlib" or "none"
	Flatten     bool   // write a standalone image instead of an overlay on a stored base
	Warm        bool   // resume a saved booted guest when one fits, else save one (templates default to true)

	BootTimeout     time.Duration // until SSH answers; 0 means the default
	ShutdownTimeout time.Duration // ACPI powerdown before a hard stop; 0 means the default

	// Provenance recorded in the manifest.
	TemplatePath   string
	TemplateDigest string     // sha256 of the template and every file it read
	Variables      []Variable // values as used; sensitive ones are redacted in the manifest

	// What a Packer template adds; the zero values keep kiln's behaviour.
	Seed              *Seed           // the template's own seed, used instead of kiln's
	Login             *Login          // the account the template's seed creates; nil = kiln's own user
	QEMUArgs          []string        // appended to QEMU's command line; {{ .HTTPIP }} and {{ .HTTPPort }} substituted
	Accel             string          // the template's accelerator ("kvm", "tcg", …); the command line's wins
	Firmware          string          // OVMF file for UEFI; "" = BIOS
	SkipCloudInitWait bool            // do not wait for cloud-init before provisioning
	ShutdownCommand   string          // run over SSH to power off, instead of the ACPI power button
	Output            *Output         // also write the image where Packer would
	PostProcessors    []PostProcessor // run on Output, in order
	BuildName         string          // Packer's build name (the source's name), for manifests
	Notes             []string        // where kiln does differently than Packer would, said before the build
}

// Seed is a template's own cloud-init seed: an ISO (Packer's cd_files and
// cd_content) and files served over HTTP (http_directory, http_content).
type Seed struct {
	ISOLabel    string            // "" = no ISO
	ISOFiles    map[string][]byte // by path inside the ISO
	HTTPDir     string            // served at / ("" = none)
	HTTPContent map[string][]byte // served by path, before HTTPDir
}

// Login is how kiln reaches a guest whose own seed made the account.
type Login struct {
	User           string
	Password       string
	PrivateKeyFile string
}

// Output is Packer's artifact: the image in Dir named Name.
type Output struct {
	Dir      string // output_directory, as written (relative to the working directory)
	Name     string // vm_name
	Format   string // "qcow2" or "raw"
	Compress bool   // disk_compression: a compressed qcow2
	Force    bool   // replace an existing Dir (-force)
}

// PostProcessor is one of Packer's post-processors. Chain numbers its
// post-processors block: one in the same chain as the one before it takes
// that one's files, the first of a chain takes Output.
type PostProcessor struct {
	Type  string // "manifest", "checksum", "compress" or "shell-local"
	Chain int

	Output            string            // manifest, checksum, compress: the file to write ({{.BuildName}}, {{.ChecksumType}}, … expanded at run time)
	StripPath         bool              // manifest
	CustomData        map[string]string // manifest
	ChecksumTypes     []string          // checksum
	CompressionLevel  int               // compress; -1 = default
	KeepInputArtifact bool

	Inline         []string          // shell-local
	Scripts        []string          // shell-local, absolute
	Env            map[string]string // shell-local
	ExecuteCommand []string          // shell-local, e.g. ["/bin/sh", "-c", "{{.Vars}} {{.Script}}"]
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
	Content     string // upload this text instead of Source (Packer's content), when HasContent
	HasContent  bool

	// Packer's shell provisioner: the script is uploaded to RemoteFolder
	// and run with ExecuteCommand as the login user (not through sudo).
	ExecuteCommand   string        // "" = kiln's way
	RemoteFolder     string        // default /tmp
	InlineShebang    string        // default "/bin/sh -e"
	ValidExitCodes   []int         // default [0]
	ExpectDisconnect bool          // a lost connection is not a failure
	PauseBefore      time.Duration // wait before running
	MaxRetries       int           // run again up to this many times on failure

	Note string // breakpoint: printed when it pauses (with --debug)
}

// Variable is one template variable as used by a build.
type Variable struct {
	Name      string
	Value     string
	Sensitive bool
}
