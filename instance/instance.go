// Package instance boots one guest from a disk image and connects to it: a
// copy-on-write overlay (the image is never modified), a per-boot seed with
// fresh keys, a QEMU process and a verified SSH connection. kiln run, the
// build pipeline and fleets all start guests this way.
package instance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kiln-dev/kiln/cloudinit"
	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/provision"
	"github.com/kiln-dev/kiln/qemu"
)

// User is the login kiln creates in every guest it boots. Builds remove it
// when they generalise the image.
const User = "kiln"

// knownHostsAlias names the guest in its known_hosts file, whatever port it
// is forwarded to.
const knownHostsAlias = "kiln-guest"

// DefaultBootTimeout bounds the wait for SSH. TCG boots take about a minute
// on a small machine; the margin covers a loaded CI runner.
const DefaultBootTimeout = 5 * time.Minute

// Options says what to boot.
type Options struct {
	Name        string // hostname and QEMU process name
	Image       string // disk image the overlay is backed by
	ImageFormat string // "" = detect
	Dir         string // run folder for overlay, seed, key and logs; created 0700
	DiskSize    int64  // 0 = the image's size
	CPUs        int
	MemoryMiB   int
	Accel       qemu.Accel
	CPU         string         // -cpu model; "" = the accelerator's default
	Forwards    []qemu.Forward // guest ports besides SSH
	UserData    []byte         // the user's user-data: cloud-config merged into kiln's, any other form passed through beside it
	BootTimeout time.Duration
	Firmware    string
	SerialLog   string // where the serial console goes; "" = inside Dir (removed with it)
	Log         func(format string, args ...any)
	// Own, when set, boots with the template's own seed and login instead
	// of kiln's (Packer templates); UserData is then unused.
	Own *OwnSeed
}

// Instance is a booted guest with an open SSH connection.
type Instance struct {
	VM         *qemu.Machine
	SSH        *provision.Client
	Dir        string
	Overlay    string
	InstanceID string
	Key        provision.KeyPair
	Target     provision.Target
	BootTime   time.Duration // from QEMU start to SSH ready
}

// Launch creates the overlay and seed, starts QEMU and waits until SSH
// answers with the expected host key. On failure nothing is left running
// and the run folder is removed.
func Launch(ctx context.Context, o Options) (_ *Instance, err error) {
	o.defaults()
	if o.BootTimeout == 0 {
		o.BootTimeout = DefaultBootTimeout
	}
	inst, format, err := newRun(ctx, o)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			inst.Remove()
		}
	}()
	if err := disk.CreateOverlay(ctx, o.Image, format, inst.Overlay, o.DiskSize); err != nil {
		return nil, err
	}
	if o.Own != nil {
		if err := inst.launchOwn(ctx, o); err != nil {
			return nil, err
		}
		return inst, nil
	}
	if inst.Key, err = provision.NewKeyPair("kiln@" + o.Name); err != nil {
		return nil, err
	}
	if err := os.WriteFile(layout.VM(o.Dir).Key(), inst.Key.PrivatePEM, 0o600); err != nil {
		return nil, err
	}
	hostKey, err := cloudinit.NewHostKey()
	if err != nil {
		return nil, err
	}
	inst.InstanceID = cloudinit.NewInstanceID()
	seed := layout.VM(o.Dir).Seed()
	err = cloudinit.WriteISO(seed, cloudinit.Config{
		InstanceID:     inst.InstanceID,
		Hostname:       o.Name,
		User:           User,
		AuthorizedKeys: []string{inst.Key.AuthorizedKey},
		HostKeys:       []cloudinit.HostKey{hostKey},
		UserData:       o.UserData,
	})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(layout.VM(o.Dir).KnownHosts(), []byte(knownHostsAlias+" "+hostKey.Public+"\n"), 0o600); err != nil {
		return nil, err
	}

	target := provision.Target{User: User, Signer: inst.Key.Signer, HostKeys: []string{hostKey.Public}}
	if err := inst.start(ctx, o, seed, target, nil); err != nil {
		return nil, err
	}
	return inst, nil
}

// start boots QEMU with the seed and waits for SSH as target (whose Addr
// and SerialLog it fills in).
func (inst *Instance) start(ctx context.Context, o Options, seed string, target provision.Target, extraArgs []string) (err error) {
	start := time.Now()
	inst.VM, err = qemu.Start(ctx, o.qemuConfig(inst.Overlay, seed, extraArgs))
	if err != nil {
		return err
	}
	o.Log("boot (%s) %s, instance %s, ssh on 127.0.0.1:%d", inst.VM.Accel(), o.Name, inst.InstanceID, inst.VM.HostPort(22))
	target.Addr = "127.0.0.1:" + strconv.Itoa(inst.VM.HostPort(22))
	target.SerialLog = inst.VM.SerialLog()
	inst.Target = target
	inst.SSH, err = waitForSSH(ctx, inst.VM, inst.Target, o.BootTimeout)
	if err != nil {
		return err
	}
	inst.BootTime = time.Since(start)
	o.Log("ssh ready in %.1fs", inst.BootTime.Seconds())
	return nil
}

// waitForSSH waits for the guest's SSH as provision.WaitForSSH does, and
// stops early, with the reason, when the VM exits or spins without output
// (its firmware never ran: an accelerator that cannot run guests).
func waitForSSH(ctx context.Context, vm *qemu.Machine, t provision.Target, timeout time.Duration) (*provision.Client, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stalled := vm.WatchFirmware(wctx)
	stop := make(chan struct{})
	stall := make(chan error, 1)
	go func() {
		select {
		case <-vm.Done():
		case err, ok := <-stalled:
			if !ok { // the guest wrote output: only its exit stops the wait
				select {
				case <-vm.Done():
				case <-wctx.Done():
					return
				}
				break
			}
			stall <- err
		case <-wctx.Done():
			return
		}
		close(stop)
	}()
	c, err := provision.WaitForSSH(wctx, t, timeout, stop)
	if err != nil {
		select {
		case serr := <-stall:
			return nil, serr
		default:
		}
	}
	return c, err
}

func (o *Options) defaults() {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
}

// newRun makes o's run folder and finds the image's format.
func newRun(ctx context.Context, o Options) (*Instance, string, error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, "", err
	}
	inst := &Instance{Dir: o.Dir, Overlay: layout.VM(o.Dir).Disk()}
	format := o.ImageFormat
	if format == "" {
		var err error
		if format, err = disk.DetectFormat(ctx, o.Image); err != nil {
			inst.Remove()
			return nil, "", err
		}
	}
	return inst, format, nil
}

// qemuConfig is the machine Launch and Resume start for o: the same
// devices either way, or a saved state would not load.
func (o Options) qemuConfig(overlay, seed string, extraArgs []string) qemu.Config {
	forwards := append([]qemu.Forward{{GuestPort: 22}}, o.Forwards...)
	return qemu.Config{
		Name: o.Name, Dir: o.Dir, Disk: overlay, DiskFormat: "qcow2", Seed: seed,
		CPUs: o.CPUs, MemoryMiB: o.MemoryMiB, Accel: o.Accel, CPU: o.CPU, Forwards: forwards, Firmware: o.Firmware,
		SerialLog: o.SerialLog, ExtraArgs: extraArgs,
	}
}

// SSHCommand is the OpenSSH command line that reaches this guest, for users
// who want to look inside (e.g. after a failed build).
func (i *Instance) SSHCommand() string {
	return "ssh " + SSHArgs(i.Dir, i.VM.HostPort(22))
}

// SSHArgs are OpenSSH's arguments for the guest whose run folder is dir:
// its key, its known host key, and the forwarded port.
func SSHArgs(dir string, port int) string { return SSHArgsAt(dir, "127.0.0.1", port) }

// SSHArgsAt is SSHArgs for a guest whose port is forwarded on addr (a
// libvirt host's address) rather than on this machine's loopback.
func SSHArgsAt(dir, addr string, port int) string {
	return fmt.Sprintf("-i %s -o UserKnownHostsFile=%s -o HostKeyAlias=%s -o IdentitiesOnly=yes -p %d %s@%s",
		layout.VM(dir).Key(), layout.VM(dir).KnownHosts(), knownHostsAlias, port, User, addr)
}

// Connect opens a verified SSH connection to a running guest from the key
// and host key kept in its run folder, e.g. from another kiln process.
func Connect(ctx context.Context, dir string, port int) (*provision.Client, error) {
	return ConnectAt(ctx, dir, "127.0.0.1", port)
}

// ConnectAt is Connect for a guest whose SSH port is forwarded on addr.
func ConnectAt(ctx context.Context, dir, addr string, port int) (*provision.Client, error) {
	keyPEM, err := os.ReadFile(layout.VM(dir).Key())
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("read key in %s: %w", dir, err)
	}
	known, err := os.ReadFile(layout.VM(dir).KnownHosts())
	if err != nil {
		return nil, err
	}
	hostKey := strings.TrimSpace(strings.TrimPrefix(string(known), knownHostsAlias+" "))
	return provision.Dial(ctx, provision.Target{
		Addr: net.JoinHostPort(addr, strconv.Itoa(port)), User: User, Signer: signer,
		HostKeys: []string{hostKey}, SerialLog: layout.VM(dir).Serial(),
	}, 10*time.Second)
}

// Shutdown closes SSH and powers the guest off through ACPI, stopping it
// hard if it has not gone within timeout. The SSH client stays set (closed):
// health probes may still hold the instance, and a closed client fails
// cleanly where a nil one would not.
func (i *Instance) Shutdown(ctx context.Context, timeout time.Duration) error {
	if i.SSH != nil {
		i.SSH.Close()
	}
	if i.VM == nil {
		return nil
	}
	return i.VM.Shutdown(ctx, timeout)
}

// Remove stops the guest if it still runs and deletes its run folder.
func (i *Instance) Remove() error {
	var errs []error
	if i.SSH != nil {
		i.SSH.Close()
	}
	if i.VM != nil {
		errs = append(errs, i.VM.Kill())
	}
	errs = append(errs, os.RemoveAll(i.Dir))
	return errors.Join(errs...)
}
