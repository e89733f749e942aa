package bake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/instance"
	"github.com/kiln-dev/kiln/internal/fileutil"
	"github.com/kiln-dev/kiln/qemu"
	"github.com/kiln-dev/kiln/savedstate"
	"github.com/kiln-dev/kiln/workdir"
)

// Defaults for a Spec's zero values.
const (
	DefaultCPUs            = 2
	DefaultMemoryMiB       = 1024
	DefaultShutdownTimeout = 2 * time.Minute
)

// Options are the build's surroundings: where things go and how to behave
// on failure. They are not part of what is baked.
type Options struct {
	Store       *images.Store
	RunDir      string // parent of the build's run folder (overlay, seed, logs)
	CacheDir    string // downloads cache
	Force       bool   // replace an existing name:version
	KeepOnError bool   // --on-error=abort: leave the failed VM running for debugging
	Accel       qemu.Accel
	CPU         string    // -cpu model chosen with Accel; "" = its default
	Out         io.Writer // progress and provisioner output
	Debug       bool      // copy the serial console to Out
	NoCache     bool      // build even when identical inputs were built before
	KilnVersion string
	// KeepWorkDisk, when set, receives the generalised working disk (a
	// qcow2 overlay on the source) instead of it being deleted: for
	// comparing compaction methods and for looking at what the image holds.
	KeepWorkDisk string
	// Cold boots even when a saved state could be resumed, and saves none.
	Cold bool
}

// Result is a finished build.
type Result struct {
	Manifest images.Manifest
	Phases   []Phase
	Cached   bool // identical inputs had been built before; Manifest is that build's
}

// Phase is one step's name and duration, for the summary and benchmarks.
type Phase struct {
	Name     string
	Duration time.Duration
}

// ProvisionerError is a provisioner that failed; cmd maps it to its own exit
// status so pipelines can tell it from kiln's own errors.
type ProvisionerError struct {
	Index  int    // 1-based
	Type   string // "shell" or "file"
	Status int    // exit status, or -1 when the command did not finish
	Tail   string // last lines of its output
	Hint   string // what to change, when kiln can tell (a full disk)
	Err    error
}

func (e *ProvisionerError) Error() string {
	msg := fmt.Sprintf("provisioner %d (%s) failed", e.Index, e.Type)
	if e.Status >= 0 {
		msg += fmt.Sprintf(" with exit status %d", e.Status)
	} else if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Tail != "" {
		msg += "; last output:\n    " + strings.ReplaceAll(e.Tail, "\n", "\n    ")
	}
	if e.Hint != "" {
		msg += "\n" + e.Hint
	}
	return msg
}

// builder carries one build's state between steps.
type builder struct {
	spec    Spec
	opts    Options
	out     io.Writer
	log     *os.File
	secrets []string

	dir         string // run folder
	source      sourceInfo
	inst        *instance.Instance
	output      string // compacted image in the store's tmp folder
	manifest    images.Manifest
	fingerprint string
	start       time.Time
	phases      []Phase
	guestUsed   int64 // bytes in use on the guest's root after generalising

	httpServer *http.Server       // the template's HTTP seed files, while the VM runs
	httpPort   int                // its port, for Packer's PACKER_HTTP_* variables
	artifacts  []string           // the files of Packer's artifact (Spec.Output)
	bootKind   string             // bootCold, bootSaved or bootResumed
	savedState string             // the saved state resumed or saved
	saveAs     *savedstate.Inputs // save the cold-booted guest under these inputs
}

// Run bakes spec into a new image version in opts.Store. On failure or
// interruption nothing is added to the store and no QEMU process is left,
// unless opts.KeepOnError asks to keep the VM.
func Run(ctx context.Context, spec Spec, opts Options) (Result, error) {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	applyDefaults(&spec)
	// One build per name:version at a time: the second would only find out
	// at the end that its version exists, after minutes of work.
	release, err := workdir.Claim(opts.RunDir, "build "+spec.Name+":"+spec.Version)
	if err != nil {
		var ce *workdir.ClaimedError
		if errors.As(err, &ce) {
			return Result{}, fmt.Errorf("%s:%s is already being built (kiln pid %d); wait for that build, or stop it, and try again", spec.Name, spec.Version, ce.Pid)
		}
		return Result{}, err
	}
	defer release()
	dir, err := workdir.Create(opts.RunDir, "build-"+spec.Name)
	if err != nil {
		return Result{}, err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "build.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		os.RemoveAll(dir)
		return Result{}, err
	}
	b := &builder{spec: spec, opts: opts, dir: dir, log: logFile, start: time.Now()}
	for _, v := range spec.Variables {
		if v.Sensitive {
			b.secrets = append(b.secrets, v.Value)
		}
	}
	b.out = newLineWriter(io.MultiWriter(opts.Out, logFile), "", b.secrets, nil)
	for _, n := range spec.Notes {
		b.say("note: %s", n)
	}

	steps := b.steps()
	offset := 0
	report := func(i, n int, name string, d time.Duration, err error) {
		b.phases = append(b.phases, Phase{name, d})
		status := "done"
		if err != nil {
			status = "failed"
		}
		b.say("[%d/%d] %s %s in %s", i+offset, len(steps), name, status, durationString(d))
	}
	// Without the cache an existing version is refused before the source
	// step, which may download gigabytes; with it, identical inputs must
	// first be told apart from a clash, which needs the source's digest.
	if !opts.Force && opts.NoCache {
		if _, err := opts.Store.Get(images.Ref{Name: spec.Name, Version: spec.Version}); err == nil {
			logFile.Close()
			os.RemoveAll(dir)
			return Result{}, images.ExistsError(images.Ref{Name: spec.Name, Version: spec.Version}, "bump the version")
		}
	}
	// The source comes first: its digest completes the build's fingerprint.
	err = runSteps(ctx, steps[:1], report, opts.KeepOnError)
	if err == nil {
		var cached *images.Manifest
		cached, err = b.checkCacheAndVersion()
		if cached != nil {
			// A Packer template's artifact and post-processors are written
			// from the stored image all the same: a pipeline reads them.
			b.manifest = *cached
			offset = len(steps) - len(b.artifactSteps())
			err = runSteps(ctx, b.artifactSteps(), report, false)
			logFile.Close()
			os.RemoveAll(dir)
			if err != nil {
				return Result{Phases: b.phases}, err
			}
			return Result{Manifest: *cached, Phases: b.phases, Cached: true}, nil
		}
	}
	if err == nil {
		offset = 1
		err = runSteps(ctx, steps[1:], report, opts.KeepOnError)
	}
	logFile.Close()
	if err != nil {
		if opts.KeepOnError && b.inst != nil && b.inst.VM != nil {
			workdir.Keep(dir)
			b.say("the VM is still running for debugging (--on-error=abort):")
			fmt.Fprintf(opts.Out, "    %s\n    remove it with: kill %d; rm -rf %s\n", b.inst.SSHCommand(), b.inst.VM.Pid(), dir)
		} else {
			os.RemoveAll(dir)
		}
		var pe *ProvisionerError
		if errors.As(err, &pe) {
			return Result{Phases: b.phases}, pe
		}
		return Result{Phases: b.phases}, err
	}
	os.RemoveAll(dir)
	return Result{Manifest: b.manifest, Phases: b.phases}, nil
}

// checkCacheAndVersion returns the stored image built from identical inputs,
// if any (unless NoCache), and otherwise refuses to overwrite an existing
// name:version without Force.
func (b *builder) checkCacheAndVersion() (*images.Manifest, error) {
	b.fingerprint = fingerprint(b.spec, b.source.base.Checksum)
	if !b.opts.NoCache && b.fingerprint != "" {
		m, ok, err := b.opts.Store.FindByFingerprint(b.fingerprint)
		if err != nil {
			return nil, err
		}
		if ok {
			b.say("identical inputs were built before as %s:%s (%s): reusing it; --no-cache rebuilds", m.Name, m.Version, m.BuildEnd.Local().Format(time.DateTime))
			return &m, nil
		}
	}
	if !b.opts.Force {
		if _, err := b.opts.Store.Get(images.Ref{Name: b.spec.Name, Version: b.spec.Version}); err == nil {
			return nil, images.ExistsError(images.Ref{Name: b.spec.Name, Version: b.spec.Version}, "bump the version")
		}
	}
	return nil, nil
}

func applyDefaults(s *Spec) {
	if s.CPUs == 0 {
		s.CPUs = DefaultCPUs
	}
	if s.MemoryMiB == 0 {
		s.MemoryMiB = DefaultMemoryMiB
	}
	if s.Compression == "" {
		s.Compression = "zstd"
	}
	if s.ShutdownTimeout == 0 {
		s.ShutdownTimeout = DefaultShutdownTimeout
	}
	if s.BootTimeout == 0 {
		s.BootTimeout = instance.DefaultBootTimeout
	}
}

func (b *builder) say(format string, args ...any) {
	fmt.Fprintf(b.out, "==> "+format+"\n", args...)
}

func (b *builder) steps() []step {
	steps := []step{
		{name: "source", run: b.resolveSource},
		{name: "boot", run: b.boot, cleanup: b.removeVM},
		{name: "cloud-init", run: b.waitCloudInit},
		{name: "provision", run: b.provision},
		{name: "generalize", run: b.generalize},
		{name: "shutdown", run: b.shutdown},
		{name: "compact", run: b.compact, cleanup: b.removeOutput},
		{name: "store", run: b.store},
	}
	return append(steps, b.artifactSteps()...)
}

// artifactSteps write what a Packer build leaves: the image in
// output_directory, then the post-processors' files.
func (b *builder) artifactSteps() []step {
	var steps []step
	if b.spec.Output != nil {
		steps = append(steps, step{name: "artifact", run: b.writeArtifact})
	}
	if len(b.spec.PostProcessors) > 0 {
		steps = append(steps, step{name: "post-process", run: b.postProcess})
	}
	return steps
}

func (b *builder) boot(ctx context.Context) error {
	if b.opts.Debug {
		go followFile(ctx, filepath.Join(b.dir, "vm", "serial.log"), newLineWriter(b.opts.Out, "serial: ", b.secrets, nil))
	}
	var own *instance.OwnSeed
	if b.spec.Seed != nil || b.spec.Login != nil {
		var err error
		if own, err = b.ownSeed(ctx); err != nil {
			return err
		}
	}
	o := instance.Options{
		Name: b.spec.Name + "-build", Image: b.source.path, ImageFormat: b.source.format,
		Dir: filepath.Join(b.dir, "vm"), DiskSize: b.spec.DiskSize, CPUs: b.spec.CPUs,
		MemoryMiB: b.spec.MemoryMiB, Accel: b.opts.Accel, CPU: b.opts.CPU, UserData: b.spec.UserData,
		BootTimeout: b.spec.BootTimeout, Log: b.say, Own: own, Firmware: b.spec.Firmware,
	}
	if resumed, err := b.bootWarm(ctx, o); err != nil || resumed {
		return err
	}
	inst, err := instance.Launch(ctx, o)
	if err != nil {
		return err
	}
	b.inst, b.bootKind = inst, bootCold
	return nil
}

func (b *builder) removeVM() {
	b.stopHTTP()
	if b.inst != nil {
		b.inst.Remove()
	}
}

func (b *builder) waitCloudInit(ctx context.Context) error {
	if b.spec.SkipCloudInitWait {
		b.say("not waiting for cloud-init (a Packer template waits for it itself, if it needs to)")
		return nil
	}
	if err := b.inst.SSH.WaitCloudInit(ctx); err != nil {
		return err
	}
	if b.saveAs != nil {
		return b.saveState(ctx)
	}
	return nil
}

func (b *builder) shutdown(ctx context.Context) error {
	defer b.stopHTTP()
	if b.spec.ShutdownCommand != "" {
		return b.shutdownCommand(ctx)
	}
	if err := b.inst.Shutdown(ctx, b.spec.ShutdownTimeout); err != nil {
		return err
	}
	if b.inst.VM.Killed() {
		return fmt.Errorf("the guest did not power off within %s of the ACPI power button and was stopped hard; its disk may be inconsistent, so nothing was stored (raise shutdown_timeout, or check that acpid/systemd handles the power button)", b.spec.ShutdownTimeout)
	}
	return nil
}

// compact writes a fresh qcow2 holding only the allocated, non-zero data,
// compressed. On a stored base it stays an overlay on that base's blob
// unless the spec asks to flatten it.
func (b *builder) compact(ctx context.Context) error {
	out := filepath.Join(b.opts.Store.Root, "tmp", fmt.Sprintf("build-%s-%d.qcow2", b.spec.Name, os.Getpid()))
	b.output = out
	o := disk.ConvertOptions{Format: "qcow2", Compression: b.spec.Compression}
	if b.source.parent != nil && !b.spec.Flatten {
		o.BackingFile = b.source.path
		o.BackingFormat = b.source.format
	}
	if err := disk.Convert(ctx, b.inst.Overlay, out, o); err != nil {
		return err
	}
	if b.opts.KeepWorkDisk != "" {
		if err := fileutil.Move(b.inst.Overlay, b.opts.KeepWorkDisk, 0o600); err != nil {
			return fmt.Errorf("keep the working disk: %w", err)
		}
		b.say("working disk kept as %s", b.opts.KeepWorkDisk)
	}
	if o.BackingFile != "" {
		// The store wants the backing file named by the blob's bare hex
		// digest, relative to the blobs folder, so the store can move.
		hex := strings.TrimPrefix(b.source.parent.Digest, "sha256:")
		if err := disk.Rebase(ctx, out, hex, "qcow2"); err != nil {
			return err
		}
	}
	info, err := disk.ReadInfo(ctx, out)
	if err == nil {
		b.say("image %s (virtual %s)", disk.FormatSize(info.ActualSize), disk.FormatSize(info.VirtualSize))
	}
	return nil
}

func (b *builder) removeOutput() {
	if b.output != "" {
		os.Remove(b.output)
	}
}

func (b *builder) store(ctx context.Context) error {
	m := images.Manifest{
		Name: b.spec.Name, Version: b.spec.Version, Format: "qcow2",
		Compression:    b.spec.Compression,
		Base:           b.source.base,
		Parent:         b.source.parent,
		TemplateDigest: b.spec.TemplateDigest,
		Fingerprint:    b.fingerprint,
		Variables:      redactedVariables(b.spec.Variables),
		Provisioners:   describeProvisioners(b.spec.Provisioners),
		KilnVersion:    b.opts.KilnVersion,
		Accelerator:    string(b.inst.VM.Accel()),
		CPUModel:       b.inst.VM.CPU(),
		BuildStart:     b.start.UTC(),
		BuildEnd:       time.Now().UTC(),
		GuestUsedBytes: b.guestUsed,
		Boot:           b.bootKind,
		SavedState:     b.savedState,
	}
	for _, p := range b.phases {
		m.Phases = append(m.Phases, images.PhaseTime{Name: p.Name, Seconds: p.Duration.Seconds()})
	}
	if b.source.parent != nil && !b.spec.Flatten {
		m.BackingDigest = b.source.parent.Digest
	}
	b.log.Sync()
	logs := map[string]string{"build.log": b.log.Name()}
	if serial := b.inst.VM.SerialLog(); fileExists(serial) {
		logs["serial.log"] = serial
	}
	stored, err := b.opts.Store.Add(ctx, m, b.output, images.AddOptions{Force: b.opts.Force, Logs: logs})
	if err != nil {
		return err
	}
	b.output = ""
	b.manifest = stored
	return nil
}

func redactedVariables(vars []Variable) map[string]string {
	if len(vars) == 0 {
		return nil
	}
	m := make(map[string]string, len(vars))
	for _, v := range vars {
		if v.Sensitive {
			m[v.Name] = "(sensitive)"
		} else {
			m[v.Name] = v.Value
		}
	}
	return m
}

func describeProvisioners(ps []Provisioner) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Describe())
	}
	return out
}

// Describe is a one-line summary for manifests and progress lines.
// RunAs is the guest account a shell provisioner runs as: root unless the
// template names another.
func (p Provisioner) RunAs() string {
	if p.User == "" {
		return "root"
	}
	return p.User
}

func (p Provisioner) Describe() string {
	switch p.Type {
	case "file":
		if p.Direction == "download" {
			return fmt.Sprintf("file: download %s -> %s", p.Source, filepath.Base(p.Destination))
		}
		return fmt.Sprintf("file: %s -> %s", filepath.Base(p.Source), p.Destination)
	case "shell":
		as := ""
		if p.RunAs() != "root" {
			as = " as " + p.User
		}
		if len(p.Inline) > 0 {
			return fmt.Sprintf("shell: inline (%d commands)%s", len(p.Inline), as)
		}
		var names []string
		for _, s := range p.Scripts {
			names = append(names, filepath.Base(s))
		}
		return "shell: " + strings.Join(names, ", ") + as
	}
	return p.Type
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// followFile copies what is appended to path to w until ctx ends.
func followFile(ctx context.Context, path string, w *lineWriter) {
	var off int64
	buf := make([]byte, 32<<10)
	for ctx.Err() == nil {
		if f, err := os.Open(path); err == nil {
			for {
				n, err := f.ReadAt(buf, off)
				if n > 0 {
					w.Write(buf[:n])
					off += int64(n)
				}
				if err != nil || n == 0 {
					break
				}
			}
			f.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	w.Flush()
}
