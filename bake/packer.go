package bake

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/fileutil"
)

// What a Packer template runs that kiln templates do not: Packer's shell
// provisioner, breakpoints, shutdown_command, the output_directory
// artifact and post-processors.

func (b *builder) stopHTTP() {
	if b.httpServer != nil {
		b.httpServer.Close()
		b.httpServer = nil
	}
}

// breakpoint pauses until Enter with --debug, as Packer's does; without it
// it is a no-op, as Packer's is with disable = true.
func (b *builder) breakpoint(p Provisioner) {
	if !b.opts.Debug {
		b.say("breakpoint skipped (it pauses with --debug)")
		return
	}
	b.say("breakpoint: %s; press Enter to go on (%s)", p.Note, b.inst.SSHCommand())
	bufio.NewReader(os.Stdin).ReadString('\n')
}

// packerVars renders Packer's {{ .Vars }}: NAME='value' pairs, sorted,
// with the variables Packer's shell provisioner sets itself.
func (b *builder) packerVars(env map[string]string) string {
	all := map[string]string{"PACKER_BUILDER_TYPE": "qemu", "PACKER_BUILD_NAME": b.spec.BuildName}
	if b.httpPort != 0 {
		port := strconv.Itoa(b.httpPort)
		all["PACKER_HTTP_IP"], all["PACKER_HTTP_PORT"], all["PACKER_HTTP_ADDR"] = guestHostIP, port, guestHostIP+":"+port
	}
	for k, v := range env {
		all[k] = v
	}
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"='"+strings.ReplaceAll(all[k], "'", `'"'"'`)+"'")
	}
	return strings.Join(parts, " ")
}

// packerShell runs a shell provisioner the way Packer's does: each script
// (inline commands become one, headed by inline_shebang) is uploaded to
// remote_folder and run by execute_command as the login user.
func (b *builder) packerShell(ctx context.Context, n int, p Provisioner, fail func(int, string, error) error) error {
	if p.PauseBefore > 0 {
		b.say("pausing %s before provisioner %d", p.PauseBefore, n)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(p.PauseBefore):
		}
	}
	var bodies []string
	if len(p.Inline) > 0 {
		shebang := p.InlineShebang
		if shebang == "" {
			shebang = "/bin/sh -e"
		}
		bodies = []string{"#!" + shebang + "\n" + strings.Join(p.Inline, "\n") + "\n"}
	} else {
		bodies = shellBodies(p)
	}
	folder := p.RemoteFolder
	if folder == "" {
		folder = "/tmp"
	}
	codes := p.ValidExitCodes
	if len(codes) == 0 {
		codes = []int{0}
	}
	vars := b.packerVars(p.Env)
	for _, body := range bodies {
		var r [4]byte
		rand.Read(r[:])
		remote := path.Join(folder, fmt.Sprintf("script_%x.sh", r))
		cmd := strings.NewReplacer("{{ .Path }}", remote, "{{.Path}}", remote, "{{ .Vars }}", vars, "{{.Vars}}", vars).Replace(p.ExecuteCommand)
		var status int
		var err error
		tail := &tailLines{n: 10}
		for attempt := 0; attempt <= p.MaxRetries; attempt++ {
			if attempt > 0 {
				b.say("provisioner %d: retry %d of %d", n, attempt, p.MaxRetries)
				if err != nil && !p.ExpectDisconnect {
					if rerr := b.reconnect(ctx); rerr != nil {
						return fail(-1, tail.String(), rerr)
					}
				}
			}
			if err = b.inst.SSH.PutFile(ctx, remote, []byte(body), 0o755); err != nil {
				continue
			}
			prefix := fmt.Sprintf("    %d| ", n)
			stdout := newLineWriter(b.out, prefix, b.secrets, tail)
			stderr := newLineWriter(b.out, prefix, b.secrets, tail)
			status, err = b.inst.SSH.Run(ctx, cmd, nil, stdout, stderr)
			stdout.Flush()
			stderr.Flush()
			if err != nil && p.ExpectDisconnect && ctx.Err() == nil {
				b.say("provisioner %d: the connection closed, as expect_disconnect allows", n)
				if rerr := b.reconnect(ctx); rerr != nil {
					return fail(-1, tail.String(), rerr)
				}
				err, status = nil, codes[0]
				break
			}
			if err == nil && slices.Contains(codes, status) {
				b.inst.SSH.Run(ctx, "rm -f "+shellQuote(remote), nil, nil, nil)
				break
			}
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && p.Timeout > 0 {
				err = fmt.Errorf("timed out after %s", p.Timeout)
			}
			return fail(-1, tail.String(), err)
		}
		if !slices.Contains(codes, status) {
			return fail(status, tail.String(), nil)
		}
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'" }

// shutdownCommand powers the guest off the way the template says, then
// waits for QEMU to end within shutdown_timeout.
func (b *builder) shutdownCommand(ctx context.Context) error {
	b.say("running shutdown_command")
	var out strings.Builder
	// The command usually ends the connection; its status means little.
	b.inst.SSH.Run(ctx, b.spec.ShutdownCommand, nil, &out, &out)
	b.inst.SSH.Close()
	select {
	case <-b.inst.VM.Done():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.spec.ShutdownTimeout):
		b.inst.VM.Kill()
		return fmt.Errorf("the guest did not power off within %s of shutdown_command and was stopped; nothing was stored (check the command, or raise shutdown_timeout); its output: %s",
			b.spec.ShutdownTimeout, strings.TrimSpace(redact(out.String(), b.secrets)))
	}
}

// writeArtifact writes the stored image where Packer would have left it:
// output_directory/vm_name, standalone, in the template's format.
func (b *builder) writeArtifact(ctx context.Context) error {
	o := b.spec.Output
	if fi, err := os.Stat(o.Dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("output_directory %s exists and is not a directory", o.Dir)
		}
		entries, _ := os.ReadDir(o.Dir)
		if len(entries) > 0 {
			if !o.Force {
				return fmt.Errorf("output_directory %s already exists; remove it or pass -force (the image is stored as %s:%s)", o.Dir, b.manifest.Name, b.manifest.Version)
			}
			if err := os.RemoveAll(o.Dir); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	dst := filepath.Join(o.Dir, o.Name)
	tmp := dst + ".kiln-tmp"
	copts := disk.ConvertOptions{Format: o.Format}
	if o.Compress && o.Format == "qcow2" {
		copts.Compression = "zlib" // what qemu-img convert -c writes, and every qcow2 reader reads
	}
	if err := disk.Convert(ctx, b.opts.Store.BlobPath(b.manifest.Digest), tmp, copts); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	b.artifacts = []string{dst}
	b.say("artifact %s", dst)
	return nil
}

// postProcess runs the post-processors in order. One that is not first in
// its chain takes the files the one before it made.
func (b *builder) postProcess(ctx context.Context) error {
	runUUID := NewRunUUID()
	chainFiles := b.artifacts
	for i, pp := range b.spec.PostProcessors {
		if i == 0 || pp.Chain != b.spec.PostProcessors[i-1].Chain {
			chainFiles = b.artifacts
		}
		b.say("post-processor %s", pp.Type)
		var err error
		var out []string
		switch pp.Type {
		case "manifest":
			out, err = b.manifestPP(pp, chainFiles, runUUID)
		case "checksum":
			out, err = b.checksumPP(pp, chainFiles)
		case "compress":
			out, err = b.compressPP(pp, chainFiles)
		case "shell-local":
			out, err = chainFiles, b.shellLocalPP(ctx, pp, chainFiles)
		default:
			err = fmt.Errorf("unknown post-processor %q", pp.Type)
		}
		if err != nil {
			return fmt.Errorf("post-processor %d (%s): %w", i+1, pp.Type, err)
		}
		chainFiles = out
	}
	return nil
}

// expandOutput fills the Packer variables a post-processor's output may use.
func (b *builder) expandOutput(s string, extra map[string]string) string {
	pairs := []string{}
	vars := map[string]string{"BuildName": b.spec.BuildName, "BuilderType": "qemu"}
	for k, v := range extra {
		vars[k] = v
	}
	for k, v := range vars {
		pairs = append(pairs, "{{ ."+k+" }}", v, "{{."+k+"}}", v)
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

func (b *builder) manifestPP(pp PostProcessor, files []string, runUUID string) ([]string, error) {
	out := pp.Output
	if out == "" {
		out = "packer-manifest.json"
	}
	out = b.expandOutput(out, nil)
	var pf []images.PackerFile
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		name := f
		if pp.StripPath {
			name = filepath.Base(f)
		}
		pf = append(pf, images.PackerFile{Name: name, Size: fi.Size()})
	}
	err := images.AppendPackerBuild(out, images.PackerBuild{
		Name: b.spec.BuildName, BuilderType: "qemu", BuildTime: time.Now().Unix(), Files: pf,
		ArtifactID: "VM", PackerRunUUID: runUUID, CustomData: pp.CustomData,
	})
	if err != nil {
		return nil, err
	}
	b.say("manifest %s", out)
	return files, nil
}

var checksumHashes = map[string]func() hash.Hash{
	"md5": md5.New, "sha1": sha1.New, "sha224": sha256.New224, "sha256": sha256.New,
	"sha384": sha512.New384, "sha512": sha512.New,
}

// checksumPP writes Packer's checksum files: "HEX\tNAME" lines, one file
// per checksum type.
func (b *builder) checksumPP(pp PostProcessor, files []string) ([]string, error) {
	types := pp.ChecksumTypes
	if len(types) == 0 {
		types = []string{"md5"}
	}
	outs := slices.Clone(files)
	for _, typ := range types {
		out := pp.Output
		if out == "" {
			out = "packer_{{.BuildName}}_{{.BuilderType}}_{{.ChecksumType}}.checksum"
		}
		out = b.expandOutput(out, map[string]string{"ChecksumType": typ})
		var lines strings.Builder
		for _, f := range files {
			h := checksumHashes[typ]()
			fh, err := os.Open(f)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(h, fh)
			fh.Close()
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&lines, "%x\t%s\n", h.Sum(nil), filepath.Base(f))
		}
		if dir := filepath.Dir(out); dir != "." {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
		}
		if err := images.WriteFileAtomic(out, []byte(lines.String()), 0o644); err != nil {
			return nil, err
		}
		b.say("checksum %s", out)
		outs = append(outs, out)
	}
	return outs, nil
}

// compressPP archives files by the output's extension: .tar.gz/.tgz,
// .tar, .gz (one file) or .zip.
func (b *builder) compressPP(pp PostProcessor, files []string) ([]string, error) {
	out := pp.Output
	if out == "" {
		out = "packer_{{.BuildName}}_{{.BuilderType}}.tar.gz"
	}
	out = b.expandOutput(out, nil)
	level := pp.CompressionLevel
	if level < 0 || level > 9 {
		level = gzip.DefaultCompression
	}
	if dir := filepath.Dir(out); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	tmp := out + ".kiln-tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return nil, err
	}
	err = writeArchive(f, out, files, level)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, out)
	}
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	b.say("compressed %s", out)
	return []string{out}, nil
}

func writeArchive(w io.Writer, name string, files []string, level int) error {
	switch {
	case strings.HasSuffix(name, ".tar.gz") || strings.HasSuffix(name, ".tgz"):
		zw, err := gzip.NewWriterLevel(w, level)
		if err != nil {
			return err
		}
		if err := writeTar(zw, files); err != nil {
			return err
		}
		return zw.Close()
	case strings.HasSuffix(name, ".tar"):
		return writeTar(w, files)
	case strings.HasSuffix(name, ".gz"):
		if len(files) != 1 {
			return fmt.Errorf("%s: a .gz holds one file, not %d; use .tar.gz", name, len(files))
		}
		zw, err := gzip.NewWriterLevel(w, level)
		if err != nil {
			return err
		}
		if err := copyFile(zw, files[0]); err != nil {
			return err
		}
		return zw.Close()
	case strings.HasSuffix(name, ".zip"):
		zw := zip.NewWriter(w)
		for _, f := range files {
			fw, err := zw.Create(filepath.Base(f))
			if err != nil {
				return err
			}
			if err := copyFile(fw, f); err != nil {
				return err
			}
		}
		return zw.Close()
	}
	return fmt.Errorf("%s: kiln compresses to .tar.gz, .tgz, .tar, .gz or .zip", name)
}

func writeTar(w io.Writer, files []string) error {
	tw := tar.NewWriter(w)
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if err := copyFile(tw, f); err != nil {
			return err
		}
	}
	return tw.Close()
}

func copyFile(w io.Writer, name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// shellLocalPP runs commands on the host, as Packer's shell-local does:
// each script (inline becomes one) through execute_command.
func (b *builder) shellLocalPP(ctx context.Context, pp PostProcessor, files []string) error {
	dir, err := os.MkdirTemp(b.dir, "shell-local-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	scripts := pp.Scripts
	if len(pp.Inline) > 0 {
		s := filepath.Join(dir, "inline.sh")
		if err := os.WriteFile(s, []byte("#!/bin/sh -e\n"+strings.Join(pp.Inline, "\n")+"\n"), 0o700); err != nil {
			return err
		}
		scripts = []string{s}
	}
	env := map[string]string{"PACKER_BUILD_NAME": b.spec.BuildName, "PACKER_BUILDER_TYPE": "qemu"}
	for k, v := range pp.Env {
		env[k] = v
	}
	vars := b.packerVars(pp.Env)
	for _, script := range scripts {
		local := filepath.Join(dir, "script.sh")
		if err := fileutil.Copy(script, local, 0o700); err != nil {
			return err
		}
		argv := pp.ExecuteCommand
		if len(argv) == 0 {
			argv = []string{"/bin/sh", "-c", "{{.Vars}} {{.Script}}"}
		}
		argv = slices.Clone(argv)
		for i := range argv {
			argv[i] = strings.NewReplacer("{{.Vars}}", vars, "{{ .Vars }}", vars, "{{.Script}}", local, "{{ .Script }}", local).Replace(argv[i])
		}
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = os.Environ()
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		w := newLineWriter(b.out, "    shell-local| ", b.secrets, nil)
		cmd.Stdout, cmd.Stderr = w, w
		err := cmd.Run()
		w.Flush()
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(script), err)
		}
	}
	return nil
}

// NewRunUUID is a random (version 4) UUID, naming a run in Packer's manifest.
func NewRunUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
