package packer

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/kiln-dev/kiln/bake"
	"github.com/kiln-dev/kiln/template"
)

// Fields of source "qemu" that kiln refuses, with why. A field is matched
// by name or, ending in "*", by prefix.
var refusedQEMU = []struct{ field, why string }{
	{"boot_command", "kiln does not type boot_command over VNC: it boots cloud images, whose cloud-init seed (cd_files, http_directory) does what an installer's boot_command does; remove it"},
	{"boot_steps", "kiln does not type boot steps over VNC: it boots cloud images, whose cloud-init seed does what an installer's boot_command does; remove it"},
	{"boot_key_interval", "kiln types no boot_command, so there is no key interval; remove it"},
	{"boot_keygroup_interval", "kiln types no boot_command, so there is no key interval; remove it"},
	{"vnc_*", "kiln runs QEMU without a display or VNC server (nothing is typed into the guest); remove it"},
	{"floppy_*", "kiln attaches no floppy: put seed files in cd_files or http_directory"},
	{"vtpm", "kiln attaches no TPM (swtpm) to the build VM; remove it"},
	{"tpm_device_type", "kiln attaches no TPM (swtpm) to the build VM; remove it"},
	{"use_default_display", "kiln runs QEMU without a display; remove it"},
	{"display", "kiln runs QEMU without a display; remove it"},
	{"vga", "kiln runs QEMU without a display; remove it"},
	{"iso_target_path", "kiln keeps downloads in its own cache, keyed by checksum; remove it"},
	{"iso_target_extension", "kiln keeps downloads in its own cache, keyed by checksum; remove it"},
	{"iso_skip_cache", "kiln verifies and caches every download; remove it"},
	{"disk_additional_size", "kiln builds one disk; remove it (or make the extra disks in a provisioner)"},
	{"cdrom_interface", "kiln attaches the cd_files seed as a virtio CD-ROM (the Debian cloud kernel has no AHCI driver); remove it"},
	{"qemu_binary", "kiln runs qemu-system-x86_64 from PATH; remove it"},
	{"qemu_img_args", "kiln runs qemu-img itself; remove it"},
	{"qmp_*", "kiln always runs QMP on a private socket of its own; remove it"},
	{"ssh_host", "kiln reaches the guest through its own forward on 127.0.0.1; remove it"},
	{"ssh_bastion_*", "kiln reaches the guest directly on 127.0.0.1; remove it"},
	{"ssh_proxy_*", "kiln reaches the guest directly on 127.0.0.1; remove it"},
	{"ssh_agent_auth", "kiln logs in with ssh_password or ssh_private_key_file, not an agent"},
	{"ssh_keypair_name", "kiln logs in with ssh_password or ssh_private_key_file"},
	{"ssh_temporary_key_pair_*", "kiln logs in with ssh_password or ssh_private_key_file"},
	{"ssh_certificate_file", "kiln logs in with ssh_password or ssh_private_key_file"},
	{"ssh_interface", "kiln reaches the guest through its own forward on 127.0.0.1"},
	{"host_port_min", "kiln picks the forwarded SSH port itself, on 127.0.0.1 only"},
	{"host_port_max", "kiln picks the forwarded SSH port itself, on 127.0.0.1 only"},
	{"ssh_host_port_min", "kiln picks the forwarded SSH port itself, on 127.0.0.1 only"},
	{"ssh_host_port_max", "kiln picks the forwarded SSH port itself, on 127.0.0.1 only"},
	{"skip_nat_mapping", "kiln always forwards SSH on 127.0.0.1"},
	{"winrm_*", "kiln provisions over SSH only"},
	{"net_bridge", "kiln uses QEMU's user network (the guest reaches the host as 10.0.2.2)"},
	{"sockets", "kiln sets QEMU's -smp from cpus alone; remove it"},
	{"cores", "kiln sets QEMU's -smp from cpus alone; remove it"},
	{"threads", "kiln sets QEMU's -smp from cpus alone; remove it"},
	{"efi_drop_efivars", "kiln always gives a UEFI guest its own copy of the firmware variables"},
	{"cpu_model", "kiln chooses -cpu from the accelerator (host with KVM, max under TCG)"},
}

// The values of device fields kiln uses. Other values are accepted with a
// note saying kiln's is used instead: the guest still boots, and Packer
// templates set them mostly for installers.
var kilnDevices = map[string][]string{
	"disk_interface":     {"virtio"},
	"disk_cache":         {"writeback"},
	"disk_discard":       {"unmap"},
	"disk_detect_zeroes": {"unmap"},
	"net_device":         {"virtio-net", "virtio-net-pci"},
	"machine_type":       {"q35", "pc-q35"},
}

// acceptedQEMU are fields kiln takes with nothing to do: it always behaves
// that way (headless), or they only shape what kiln does itself.
var acceptedQEMU = map[string]string{
	"headless":                     "",
	"boot_wait":                    "", // waits before a boot_command kiln never types
	"ssh_handshake_attempts":       "", // kiln retries the handshake until ssh_timeout
	"ssh_wait_timeout":             "",
	"http_port_min":                "", // kiln picks a free port on 127.0.0.1
	"http_port_max":                "",
	"http_bind_address":            "",
	"http_network_protocol":        "",
	"skip_compaction":              "", // kiln always compacts what it stores
	"use_backing_file":             "",
	"iso_urls":                     "",
	"use_pflash":                   "",
	"pause_before_connecting":      "",
	"ssh_read_write_timeout":       "",
	"ssh_keep_alive_interval":      "",
	"ssh_pty":                      "",
	"ssh_disable_agent_forwarding": "",
	"ssh_clear_authorized_keys":    "",
	"ssh_file_transfer_method":     "",
	"pause_before_ssh":             "",
}

var knownQEMU = []string{
	"iso_url", "iso_urls", "iso_checksum", "disk_image", "use_backing_file", "disk_size", "skip_resize_disk", "format",
	"disk_compression", "skip_compaction", "disk_interface", "disk_cache", "disk_discard", "disk_detect_zeroes",
	"cpus", "memory", "accelerator", "machine_type", "firmware", "efi_boot", "efi_firmware_code", "efi_firmware_vars",
	"net_device", "qemuargs", "cd_files", "cd_content", "cd_label", "http_directory", "http_content", "communicator",
	"ssh_username", "ssh_password", "ssh_private_key_file", "ssh_timeout", "ssh_port", "ssh_handshake_attempts",
	"shutdown_command", "shutdown_timeout", "headless", "output_directory", "vm_name", "boot_wait",
}

func refusedWhy(name string) (string, bool) {
	for _, r := range refusedQEMU {
		if r.field == name || (strings.HasSuffix(r.field, "*") && strings.HasPrefix(name, strings.TrimSuffix(r.field, "*"))) {
			return r.why, true
		}
	}
	return "", false
}

var hexRe = regexp.MustCompile(`^[0-9a-fA-F]+$`)

// qemuSource maps the selected source "qemu" (with the build's overrides)
// onto spec. It returns nil when nothing more can be checked.
func (l *loader) qemuSource(c *candidate, spec *bake.Spec) *bake.Spec {
	f := l.attributes(c.source.Body)
	if c.override != nil {
		for name, a := range l.attributes(c.override.Body) {
			if name != "name" {
				f[name] = a
			}
		}
	}
	ctx := l.ctx.NewChild()
	ctx.Variables = map[string]cty.Value{"source": cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal(c.name), "type": cty.StringVal("qemu")})}
	def := c.source.DefRange.Ptr()

	// The disk to start from.
	if a := f.take("disk_image"); a == nil || !l.boolean(a, ctx) {
		rng := def
		if a != nil {
			rng = a.Expr.Range().Ptr()
		}
		l.diags = append(l.diags, diagAt(rng, "Not a cloud image build",
			"kiln boots cloud images (disk_image = true); installing from an ISO needs a boot_command typed over VNC, which kiln does not run. Point iso_url at a cloud image and set disk_image = true."))
	}
	urlAttr := f.take("iso_url")
	urlsAttr := f.take("iso_urls")
	var isoURL string
	if v, ok := l.str(urlAttr, ctx); ok {
		isoURL = v
	} else if urls, ok := l.strList(urlsAttr, ctx); ok && len(urls) > 0 {
		isoURL, urlAttr = urls[0], urlsAttr
		if len(urls) > 1 {
			l.notes = append(l.notes, fmt.Sprintf("iso_urls: kiln downloads the first URL (%s) and does not try the others", redactURL(urls[0])))
		}
	}
	sumAttr := f.take("iso_checksum")
	sum, _ := l.str(sumAttr, ctx)
	switch {
	case isoURL == "":
		l.diags = append(l.diags, diagAt(def, "Missing iso_url", "The source needs iso_url (or iso_urls): the cloud image to start from."))
	case strings.HasPrefix(isoURL, "http://") || strings.HasPrefix(isoURL, "https://"):
		spec.Base.URL = isoURL
		spec.Base.Checksum = l.checksum(sumAttr, sum, def)
	default:
		p := strings.TrimPrefix(isoURL, "file://")
		if u, err := url.Parse(isoURL); err == nil && u.Scheme != "" && u.Scheme != "file" && len(u.Scheme) > 1 {
			l.diags = append(l.diags, diagAt(urlAttr.Expr.Range().Ptr(), "Unsupported iso_url",
				"kiln downloads http and https URLs, or reads a local file; not %s URLs.", u.Scheme))
			break
		}
		p = l.abs(p)
		if _, err := os.Stat(p); err != nil {
			l.diags = append(l.diags, diagAt(urlAttr.Expr.Range().Ptr(), "Base image not found", "No file exists at %s.", p))
			break
		}
		spec.Base.File = p
		if sum != "" && !strings.EqualFold(sum, "none") {
			l.notes = append(l.notes, "iso_checksum: kiln does not check the checksum of a local iso_url file; it records the file's sha256 in the image's manifest")
		}
	}
	if sumAttr == nil && isoURL != "" && spec.Base.URL != "" {
		l.diags = append(l.diags, diagAt(def, "Missing iso_checksum",
			`Packer and kiln need iso_checksum: "sha256:HEX", "sha512:HEX" or "file:URL" of a SHA256SUMS list.`))
	}

	// Disk and hardware.
	skipResize := l.boolean(f.take("skip_resize_disk"), ctx)
	sizeAttr := f.take("disk_size")
	size := int64(40960) << 20 // Packer's default, to which it grows a disk image
	if sizeAttr != nil {
		size = l.diskSize(sizeAttr, ctx)
	}
	if !skipResize {
		spec.DiskSize = size
	}
	out := &bake.Output{Format: "qcow2", Force: l.opts.Force}
	if v, ok := l.str(f.take("format"), ctx); ok {
		if v != "qcow2" && v != "raw" {
			l.diags = append(l.diags, diagAt(f0(c.source.Body, "format"), "Unsupported format",
				"kiln writes qcow2 or raw, not %q (kiln images export converts to vmdk, vhd and vhdx).", v))
		}
		out.Format = v
	}
	out.Compress = l.boolean(f.take("disk_compression"), ctx)
	if a := f.take("use_backing_file"); l.boolean(a, ctx) {
		l.notes = append(l.notes, fmt.Sprintf("%s: use_backing_file: kiln writes a standalone image to output_directory (its store keeps the version)", pos(a.NameRange)))
	}
	if a := f.take("skip_compaction"); l.boolean(a, ctx) {
		l.notes = append(l.notes, fmt.Sprintf("%s: skip_compaction: kiln always compacts the image it stores and writes", pos(a.NameRange)))
	}
	if n, ok := l.integer(f.take("cpus"), ctx); ok {
		spec.CPUs = max(n, 1)
	}
	if n, ok := l.integer(f.take("memory"), ctx); ok {
		spec.MemoryMiB = n
	}
	if a := f.take("accelerator"); a != nil {
		if v, ok := l.str(a, ctx); ok {
			switch v {
			case "kvm", "tcg", "hvf":
				spec.Accel = v
			case "none":
				spec.Accel = "tcg"
			default:
				l.diags = append(l.diags, diagAt(a.Expr.Range().Ptr(), "Unsupported accelerator",
					"kiln runs QEMU with kvm, hvf or tcg (\"none\" is tcg), not %q.", v))
			}
		}
	}
	for _, field := range sortedKeys(kilnDevices) {
		a := f.take(field)
		v, ok := l.str(a, ctx)
		if !ok {
			continue
		}
		want := kilnDevices[field]
		if !contains(want, v) {
			l.notes = append(l.notes, fmt.Sprintf("%s: %s = %q: kiln uses %q", pos(a.NameRange), field, v, want[0]))
		}
	}
	efi := l.boolean(f.take("efi_boot"), ctx)
	if v, ok := l.str(f.take("firmware"), ctx); ok {
		spec.Firmware = l.abs(v)
	}
	if v, ok := l.str(f.take("efi_firmware_code"), ctx); ok {
		spec.Firmware = l.abs(v)
	}
	if a := f.take("efi_firmware_vars"); a != nil {
		if v, ok := l.str(a, ctx); ok && !strings.Contains(filepath.Base(spec.Firmware), "CODE") {
			l.notes = append(l.notes, fmt.Sprintf("%s: efi_firmware_vars: kiln copies the VARS file that sits beside the CODE file (%s)", pos(a.NameRange), v))
		}
	}
	if efi && spec.Firmware == "" {
		spec.Firmware = "uefi" // the command finds OVMF
	}
	if a := f.take("qemuargs"); a != nil {
		if v, ok := l.value(a, ctx, cty.List(cty.List(cty.String))); ok {
			for _, arg := range v.AsValueSlice() {
				for _, s := range arg.AsValueSlice() {
					spec.QEMUArgs = append(spec.QEMUArgs, s.AsString())
				}
			}
		}
	}

	l.seed(f, ctx, spec)
	l.communicator(f, ctx, spec, def)

	if v, ok := l.str(f.take("shutdown_command"), ctx); ok {
		spec.ShutdownCommand = v
	} else {
		l.notes = append(l.notes, "no shutdown_command: kiln powers the guest off with the ACPI power button (Packer would stop QEMU hard)")
	}
	spec.ShutdownTimeout = l.duration(f.take("shutdown_timeout"), ctx)
	if spec.ShutdownTimeout == 0 {
		spec.ShutdownTimeout = 5 * 60e9 // Packer's default
	}

	out.Dir = "output-" + c.name
	if v, ok := l.str(f.take("output_directory"), ctx); ok {
		out.Dir = v
	}
	out.Name = "packer-" + c.name
	if v, ok := l.str(f.take("vm_name"), ctx); ok {
		out.Name = v
	}
	if strings.ContainsAny(out.Name, "/\x00") || out.Name == "." || out.Name == ".." {
		l.diags = append(l.diags, diagAt(def, "Invalid vm_name", "vm_name %q must be a file name, without a folder.", out.Name))
	}
	spec.Output = out
	if fi, err := os.Stat(l.abs(out.Dir)); err == nil && fi.IsDir() && !l.opts.Force {
		if entries, _ := os.ReadDir(l.abs(out.Dir)); len(entries) > 0 {
			l.diags = append(l.diags, diagAt(def, "Output directory exists",
				"output_directory %s already exists, as Packer would refuse too: remove it or pass -force.", out.Dir))
		}
	}

	for _, name := range sortedKeys(f) {
		a := f[name]
		if _, ok := acceptedQEMU[name]; ok {
			l.value(a, ctx, cty.DynamicPseudoType) // still evaluated, so its mistakes are reported
			continue
		}
		if why, ok := refusedWhy(name); ok {
			l.diags = append(l.diags, diagAt(a.NameRange.Ptr(), "Not run by kiln", "%s: %s.", name, why))
			continue
		}
		l.diags = append(l.diags, diagAt(a.NameRange.Ptr(), "Unsupported argument",
			"kiln does not run the qemu field %q.%s", name, template.DidYouMean(name, knownQEMU)))
	}
	return spec
}

func f0(body hcl.Body, name string) *hcl.Range {
	attrs, _ := body.JustAttributes()
	if a := attrs[name]; a != nil {
		return a.Expr.Range().Ptr()
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return "the URL"
}

// checksum reads iso_checksum for a URL: "sha256:…", "sha512:…",
// "file:URL", a bare hex digest (typed by its length, as Packer does);
// "none" and weaker algorithms are refused: kiln verifies every download.
func (l *loader) checksum(attr *hcl.Attribute, sum string, def *hcl.Range) string {
	if attr == nil {
		return ""
	}
	rng := attr.Expr.Range().Ptr()
	lower := strings.ToLower(sum)
	switch {
	case lower == "none":
		l.diags = append(l.diags, diagAt(rng, "Checksum required",
			`kiln verifies every download: give iso_checksum as "sha256:HEX", "sha512:HEX" or "file:URL" of the image's SHA256SUMS list.`))
		return ""
	case strings.HasPrefix(lower, "file:"):
		rest := sum[len("file:"):]
		if strings.HasPrefix(rest, "http://") || strings.HasPrefix(rest, "https://") {
			return "file:" + rest
		}
		l.diags = append(l.diags, diagAt(rng, "Unsupported iso_checksum",
			"kiln reads a checksum list from an http or https URL (file:https://…/SHA256SUMS), not a local file."))
		return ""
	}
	algo, hex, ok := strings.Cut(lower, ":")
	if !ok {
		hex = lower
		switch len(hex) {
		case 64:
			algo = "sha256"
		case 128:
			algo = "sha512"
		case 32:
			algo = "md5"
		case 40:
			algo = "sha1"
		}
	}
	switch {
	case algo == "md5" || algo == "sha1":
		l.diags = append(l.diags, diagAt(rng, "Weak checksum",
			"kiln verifies downloads with sha256 or sha512, not %s: give \"sha256:HEX\" or \"file:URL\" of a SHA256SUMS list.", algo))
	case (algo == "sha256" && len(hex) == 64 || algo == "sha512" && len(hex) == 128) && hexRe.MatchString(hex):
		return algo + ":" + hex
	default:
		l.diags = append(l.diags, diagAt(rng, "Invalid iso_checksum",
			`%q is not a checksum: use "sha256:HEX", "sha512:HEX" or "file:URL" of a SHA256SUMS list.`, sum))
	}
	return ""
}

// diskSize reads disk_size as Packer does: a number of MiB, or a string
// with a suffix (K, M, G, T; b for bytes).
func (l *loader) diskSize(attr *hcl.Attribute, ctx *hcl.EvalContext) int64 {
	s, ok := l.str(attr, ctx)
	if !ok {
		return 0
	}
	t := strings.TrimSpace(s)
	mult := int64(1 << 20)
	if n := len(t); n > 0 {
		switch strings.ToUpper(t[n-1:]) {
		case "K":
			mult, t = 1<<10, t[:n-1]
		case "M":
			mult, t = 1<<20, t[:n-1]
		case "G":
			mult, t = 1<<30, t[:n-1]
		case "T":
			mult, t = 1<<40, t[:n-1]
		case "B":
			mult, t = 1, t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<50)/mult {
		l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Invalid disk_size",
			`disk_size %q is not a size: give MiB as a number, or e.g. "10G" or "10240M".`, s))
		return 0
	}
	size := n * mult
	return (size + (1<<20 - 1)) &^ (1<<20 - 1)
}

// seed reads cd_files, cd_content, cd_label, http_directory and http_content.
func (l *loader) seed(f fieldSet, ctx *hcl.EvalContext, spec *bake.Spec) {
	seed := &bake.Seed{}
	filesAttr := f.take("cd_files")
	contentAttr := f.take("cd_content")
	labelAttr := f.take("cd_label")
	iso := map[string][]byte{}
	if files, ok := l.strList(filesAttr, ctx); ok {
		for _, pat := range files {
			l.addCDFiles(iso, pat, filesAttr)
		}
	}
	if content, ok := l.strMap(contentAttr, ctx); ok {
		for _, name := range sortedKeys(content) {
			iso[strings.TrimPrefix(filepath.ToSlash(name), "/")] = []byte(content[name])
		}
	}
	if len(iso) > 0 || labelAttr != nil {
		seed.ISOLabel = "packer" // Packer's default label
		if v, ok := l.str(labelAttr, ctx); ok {
			seed.ISOLabel = v
		}
		seed.ISOFiles = iso
	}
	if a := f.take("http_directory"); a != nil {
		if v, ok := l.str(a, ctx); ok {
			dir := l.abs(v)
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				l.diags = append(l.diags, diagAt(a.Expr.Range().Ptr(), "http_directory not found", "No folder exists at %s.", dir))
			} else {
				seed.HTTPDir = dir
				l.inputs = append(l.inputs, dir)
			}
		}
	}
	if content, ok := l.strMap(f.take("http_content"), ctx); ok {
		seed.HTTPContent = map[string][]byte{}
		for k, v := range content {
			seed.HTTPContent[k] = []byte(v)
		}
	}
	if seed.ISOLabel != "" || seed.HTTPDir != "" || len(seed.HTTPContent) > 0 {
		spec.Seed = seed
	}
}

// addCDFiles adds a cd_files entry: a file (at the ISO's root), a folder
// (its contents at the root when it ends in "/" or "/*", else under its
// name) or a glob, as Packer does.
func (l *loader) addCDFiles(iso map[string][]byte, pat string, attr *hcl.Attribute) {
	full := l.abs(pat)
	matches, err := filepath.Glob(strings.TrimSuffix(full, "/*"))
	if err != nil || len(matches) == 0 {
		l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "cd_files not found", "Nothing matches %q (resolved to %s).", pat, full))
		return
	}
	contents := strings.HasSuffix(pat, "/") || strings.HasSuffix(pat, "/*")
	for _, m := range matches {
		fi, err := os.Stat(m)
		if err != nil {
			continue
		}
		if !fi.IsDir() {
			l.readCDFile(iso, m, filepath.Base(m), attr)
			continue
		}
		prefix := filepath.Base(m)
		if contents {
			prefix = ""
		}
		filepath.Walk(m, func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return nil
			}
			rel, _ := filepath.Rel(m, p)
			l.readCDFile(iso, p, filepath.ToSlash(filepath.Join(prefix, rel)), attr)
			return nil
		})
	}
}

func (l *loader) readCDFile(iso map[string][]byte, p, name string, attr *hcl.Attribute) {
	data, err := os.ReadFile(p)
	if err != nil {
		l.diags = append(l.diags, diagAt(attr.Expr.Range().Ptr(), "Cannot read cd_files", "%s: %s.", p, readProblem(err)))
		return
	}
	iso[name] = data
	l.inputs = append(l.inputs, p)
}

// communicator reads the SSH login.
func (l *loader) communicator(f fieldSet, ctx *hcl.EvalContext, spec *bake.Spec, def *hcl.Range) {
	if a := f.take("communicator"); a != nil {
		if v, ok := l.str(a, ctx); ok && v != "ssh" {
			l.diags = append(l.diags, diagAt(a.Expr.Range().Ptr(), "Unsupported communicator",
				"kiln provisions over SSH: communicator must be \"ssh\", not %q.", v))
		}
	}
	login := &bake.Login{}
	userAttr := f.take("ssh_username")
	if v, ok := l.str(userAttr, ctx); ok {
		login.User = v
	} else {
		l.diags = append(l.diags, diagAt(def, "Missing ssh_username", "The source needs ssh_username: the account its seed creates."))
	}
	login.Password, _ = l.str(f.take("ssh_password"), ctx)
	if a := f.take("ssh_private_key_file"); a != nil {
		if v, ok := l.str(a, ctx); ok {
			p := l.abs(v)
			if _, err := os.Stat(p); err != nil {
				l.diags = append(l.diags, diagAt(a.Expr.Range().Ptr(), "ssh_private_key_file not found", "No file exists at %s.", p))
			}
			login.PrivateKeyFile = p
		}
	}
	if login.Password == "" && login.PrivateKeyFile == "" && userAttr != nil {
		l.diags = append(l.diags, diagAt(userAttr.NameRange.Ptr(), "No way to log in",
			"Give ssh_password or ssh_private_key_file for %q: kiln logs in as the account the template's seed creates.", login.User))
	}
	if a := f.take("ssh_port"); a != nil {
		if n, ok := l.integer(a, ctx); ok && n != 22 {
			l.diags = append(l.diags, diagAt(a.Expr.Range().Ptr(), "Unsupported ssh_port",
				"kiln forwards the guest's port 22, not %d; remove ssh_port.", n))
		}
	}
	spec.BootTimeout = l.duration(f.take("ssh_timeout"), ctx)
	if spec.BootTimeout == 0 {
		if a := f["ssh_wait_timeout"]; a != nil {
			spec.BootTimeout = l.duration(a, ctx)
		}
	}
	spec.Login = login
}
