package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/kiln-dev/kiln/cloudinit"
	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/instance"
	"github.com/kiln-dev/kiln/internal/fileutil"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/qemu"
	"github.com/kiln-dev/kiln/workdir"
)

func cmdRun(ctx context.Context, args []string) error {
	fs := newFlags("run", "run IMAGE [flags] [-- CMD...]")
	cpus := fs.Int("cpus", 2, "virtual CPUs")
	memory := fs.String("memory", "1G", "guest memory")
	diskSize := fs.String("disk-size", "", "grow the (ephemeral) disk to this size, e.g. 8G")
	var ports []string
	fs.StringArrayVar(&ports, "port", nil, "forward 127.0.0.1:HOST to the guest's GUEST port (HOST:GUEST; repeatable)")
	userData := fs.String("user-data", "", "user-data file: #cloud-config is merged into kiln's; scripts, MIME multipart, #include, boothooks, gzip and jinja are passed through beside it")
	accel := addAccelFlag(fs)
	bootTimeout := fs.Duration("boot-timeout", instance.DefaultBootTimeout, "how long to wait for SSH")
	firmware := fs.String("firmware", "bios", "bios, or uefi (needs the ovmf package)")
	force := forceFlag(fs, "boot a revoked image anyway")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	pos := fs.Args()
	dash := fs.ArgsLenAtDash()
	var guestCmd []string
	if dash >= 0 {
		guestCmd = pos[dash:]
		pos = pos[:dash]
	}
	if len(pos) != 1 {
		return usageError{"give one image: a file (e.g. base.qcow2) or a stored ref (e.g. hello:1.0.0)"}
	}
	mem, err := parseMemoryFlag(*memory)
	if err != nil {
		return err
	}
	var size int64
	if *diskSize != "" {
		if size, err = parseSizeFlag("--disk-size", *diskSize, "8G"); err != nil {
			return err
		}
	}
	forwards, err := parseForwards(ports, true)
	if err != nil {
		return usageError{err.Error()}
	}
	var extra []byte
	if *userData != "" {
		if extra, err = fileutil.ReadRegular(*userData, cloudinit.MaxUserData); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--user-data %s: no such file", *userData)
		} else if err != nil {
			return fmt.Errorf("--user-data: %w", err)
		}
	}
	fw, err := firmwarePath(*firmware)
	if err != nil {
		return usageError{err.Error()}
	}
	req, err := parseAccel(*accel)
	if err != nil {
		return err
	}
	if err := needTools(qemuSystem, qemuImg); err != nil {
		return err
	}
	// Everything that can be refused is refused before the work folder
	// exists: a bad image leaves nothing behind.
	paths := layout.Default()
	image, format, virtual, err := resolveImage(ctx, paths, pos[0], *force)
	if err != nil {
		return err
	}
	if size > 0 && size < virtual {
		return usageError{fmt.Sprintf("--disk-size %s is smaller than %s (%s); disks can only grow", *diskSize, pos[0], disk.FormatSize(virtual))}
	}
	ac, err := req.choose(ctx)
	if err != nil {
		return err
	}

	dir, err := workdir.Create(paths.Work(), layout.RunPrefix)
	if err != nil {
		return err
	}
	name := "kiln-" + filepath.Base(dir)[len(layout.RunPrefix+"-"):]
	// The serial log lives outside the run folder so it survives a failed
	// boot, when it is what the user needs to read.
	if err := os.MkdirAll(paths.RunLogs(), 0o700); err != nil {
		return err
	}
	serialLog := paths.RunSerial(name)
	inst, err := instance.Launch(ctx, instance.Options{
		Name: name, Image: image, ImageFormat: format, Dir: dir, DiskSize: size,
		CPUs: *cpus, MemoryMiB: mem, Accel: ac.Accel, CPU: ac.CPU, Forwards: forwards, UserData: extra,
		BootTimeout: *bootTimeout, Firmware: fw, SerialLog: serialLog,
		Log: func(f string, a ...any) { say(f, a...) },
	})
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	defer inst.Remove()
	keepLog := true
	defer func() {
		if !keepLog {
			os.Remove(serialLog)
		}
	}()
	for _, f := range forwards {
		say("guest port %d on 127.0.0.1:%d", f.GuestPort, inst.VM.HostPort(f.GuestPort))
	}

	start := time.Now()
	if err := inst.SSH.WaitCloudInit(ctx); err != nil {
		return err
	}
	say("cloud-init done in %.1fs", time.Since(start).Seconds())

	var status int
	switch {
	case len(guestCmd) > 0:
		status, err = inst.SSH.Run(ctx, shellJoin(guestCmd), os.Stdin, os.Stdout, os.Stderr)
	case term.IsTerminal(int(os.Stdin.Fd())):
		status, err = inst.SSH.Shell()
	default:
		status, err = inst.SSH.Run(ctx, "bash -s", os.Stdin, os.Stdout, os.Stderr)
	}
	if err != nil {
		return err
	}
	start = time.Now()
	if err := inst.Shutdown(context.WithoutCancel(ctx), 30*time.Second); err != nil {
		return err
	}
	say("powered off in %.1fs", time.Since(start).Seconds())
	keepLog = false
	if status != 0 {
		return exitError{status}
	}
	return nil
}

// resolveImage turns the IMAGE argument into a disk path, its format and
// virtual size: an existing file that is a disk image, or a ref in the store.
func resolveImage(ctx context.Context, paths layout.Home, arg string, force bool) (path, format string, virtual int64, err error) {
	if _, err := os.Lstat(arg); err == nil {
		// A file from outside: through the image gate, which determines its
		// format once and refuses one that would read other files.
		img, err := disk.Admit(ctx, arg, disk.AdmitOptions{BlobDir: images.BlobDir(paths.StoreDir())})
		if err != nil {
			return "", "", 0, err
		}
		return img.Path, img.Format, img.VirtualSize, nil
	}
	if arg, err = localRef(ctx, arg); err != nil {
		return "", "", 0, err
	}
	if !images.LooksLikeRef(arg) {
		return "", "", 0, fmt.Errorf("image %s: no such file", arg)
	}
	store, err := images.Open(paths.StoreDir())
	if err != nil {
		return "", "", 0, err
	}
	img, err := store.Use(arg, force)
	if err != nil {
		return "", "", 0, err
	}
	return img.Blob, img.Format, img.VirtualSize, nil
}

// parseForwards reads --port HOST:GUEST values. HOST 0 ("any free port")
// is allowed when anyHost is; a leading 127.0.0.1: (Docker's spelling of a
// loopback port) is accepted, any other address refused: kiln forwards
// ports on 127.0.0.1 only.
func parseForwards(specs []string, anyHost bool) ([]qemu.Forward, error) {
	hint := "use HOST:GUEST, e.g. 8080:80"
	if anyHost {
		hint += " (HOST 0 picks a free port)"
	}
	var out []qemu.Forward
	for _, s := range specs {
		spec := s
		if parts := strings.Split(s, ":"); len(parts) == 3 {
			if parts[0] != "127.0.0.1" && parts[0] != "localhost" {
				return nil, fmt.Errorf("--port %q: kiln serves forwarded ports on 127.0.0.1 only; drop %q and %s", s, parts[0]+":", hint)
			}
			spec = parts[1] + ":" + parts[2]
		}
		var h, g int
		if _, err := fmt.Sscanf(spec, "%d:%d", &h, &g); err != nil || h < 0 || h > 65535 || g < 1 || g > 65535 || strings.Count(spec, ":") != 1 {
			return nil, fmt.Errorf("--port %q: %s", s, hint)
		}
		if h == 0 && !anyHost {
			return nil, fmt.Errorf("--port %q: a fleet's front port must be fixed: %s", s, hint)
		}
		out = append(out, qemu.Forward{HostPort: h, GuestPort: g})
	}
	return out, nil
}

// ovmfPaths are where Debian and Ubuntu install UEFI firmware for QEMU.
var ovmfPaths = []string{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/ovmf/OVMF.fd"}

func firmwarePath(name string) (string, error) {
	switch name {
	case "bios", "":
		return "", nil
	case "uefi":
		for _, p := range ovmfPaths {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		return "", fmt.Errorf("--firmware uefi needs OVMF: run `apt-get install ovmf`")
	}
	return "", fmt.Errorf("--firmware %q: use bios or uefi", name)
}

// shellJoin quotes argv for the guest's shell.
func shellJoin(argv []string) string {
	if len(argv) == 1 {
		return argv[0] // one argument is a command line, as with ssh
	}
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r == '-' || r == '_' || r == '.' || r == '/' || r == '=' || r == ':' || r == ',' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) < 0 {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}
