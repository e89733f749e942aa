package instance

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kiln-dev/kiln/cloudinit"
	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/fileutil"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/provision"
	"github.com/kiln-dev/kiln/qemu"
	"github.com/kiln-dev/kiln/savedstate"
)

// Warm starts. A booted guest is saved (Save) with QEMU's internal snapshot
// and resumed later (Resume) in a second or two instead of booting. Only the
// resume key, kept with the state, logs in to a saved guest: right after a
// save or a resume kiln logs in with it once and replaces it by the
// instance's own fresh key, sets the guest's clock (it resumes at the time
// it was saved) and reseeds the kernel's random number generator (resumed
// guests would otherwise share its state; Debian's cloud kernel has no
// vmgenid driver to do it).

// ResumeTimeout bounds the wait for SSH after a resume: a saved guest
// answers in seconds, one that does not is broken.
const ResumeTimeout = time.Minute

// StateInputs is what shapes a boot of o on a base with digest baseDigest:
// the key of the saved state Launch(o) could be replaced by. purpose tells
// states apart that are adopted differently (builds, fleets).
func StateInputs(ctx context.Context, o Options, baseDigest, purpose string) (savedstate.Inputs, error) {
	if o.Accel == "" {
		return savedstate.Inputs{}, errors.New("no accelerator chosen")
	}
	version, err := qemu.Version(ctx, "")
	if err != nil {
		return savedstate.Inputs{}, err
	}
	in := savedstate.Inputs{
		BaseDigest: baseDigest, CPUs: o.CPUs, MemoryMiB: o.MemoryMiB, DiskSize: o.DiskSize,
		Machine: qemu.ShapeArgs(o.qemuConfig("disk", "seed", nil)), QEMUVersion: version,
		Purpose: purpose, Hostname: o.Name,
	}
	if o.Firmware != "" {
		if in.Firmware, err = images.FileDigest(o.Firmware); err != nil {
			return in, fmt.Errorf("firmware: %w", err)
		}
	}
	if in.Seed, err = seedShape(o); err != nil {
		return in, err
	}
	return in, nil
}

// seedShape is the digest of the seed Launch writes for o with its
// per-boot parts (instance-id, keys) cut out: what is left is kiln's own
// cloud-config, the hostname and the template's cloud-init.
func seedShape(o Options) (string, error) {
	client, err := provision.NewKeyPair("")
	if err != nil {
		return "", err
	}
	host, err := cloudinit.NewHostKey()
	if err != nil {
		return "", err
	}
	cfg := cloudinit.Config{
		InstanceID: "i-0", Hostname: o.Name, User: User,
		AuthorizedKeys: []string{client.AuthorizedKey}, HostKeys: []cloudinit.HostKey{host},
		UserData: o.UserData,
	}
	ud, err := cfg.UserDataYAML()
	if err != nil {
		return "", err
	}
	text := string(ud)
	var cut []string
	for _, line := range strings.Split(host.PrivatePEM, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "-----") {
			cut = append(cut, line)
		}
	}
	for _, k := range []string{client.AuthorizedKey, host.Public} {
		fields := strings.Fields(k)
		cut = append(cut, fields[1])
	}
	for _, c := range cut {
		text = strings.ReplaceAll(text, c, "KEY")
	}
	h := sha256.New()
	h.Write(cfg.MetaData())
	h.Write([]byte{0})
	h.Write([]byte(text))
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// FreeMemory says what adopt does with the guest's free memory; Save
// takes KeepFreeMemory or ZeroFreeMemory.
type FreeMemory int

const (
	// KeepFreeMemory saves it as it is: the quickest save.
	KeepFreeMemory FreeMemory = iota
	// ZeroFreeMemory zeroes it (see adoptScript): the state holds only
	// what the guest uses, at a cost of about 1 s per 200 MiB under TCG.
	ZeroFreeMemory
	// giveBackFreeMemory zeroes it in the background of the guest, at low
	// priority, for a guest that is to run for long: loading a saved
	// state (-loadvm) makes every page of its RAM resident on the host,
	// and the guest only reports (free page reporting) what it frees
	// again. Zeroing allocates and frees its free memory, which the guest
	// then reports and QEMU drops (a resumed 512M hello instance: 696 ->
	// about 430 MiB) while the instance already serves.
	giveBackFreeMemory
)

// freeMemoryScript is, per FreeMemory, its line in adoptScript's input and
// what the script prints once it has done it ("" for nothing to check).
var freeMemoryScript = map[FreeMemory]struct{ line, done string }{
	KeepFreeMemory:     {"", ""},
	ZeroFreeMemory:     {"zero", "zeroed\n"},
	giveBackFreeMemory: {"giveback", "giving back\n"},
}

// Save stores the running guest in p: its disk with the internal snapshot
// of the machine, its seed, its pinned host key and a fresh resume key,
// which is the only key the saved guest accepts. The guest is paused while
// its disk is copied, then continues with the instance's own key, the
// host's clock and reseeded entropy. On error p holds no usable state (the
// caller aborts it); the guest may still be reachable over i.SSH, which
// callers check before going on.
func (i *Instance) Save(ctx context.Context, p *savedstate.Pending, free FreeMemory) error {
	resume, err := provision.NewKeyPair("kiln-resume")
	if err != nil {
		return err
	}
	// Only the resume key may log in to the saved guest, not this build's.
	if err := adopt(ctx, i.SSH, adoption{key: resume.AuthorizedKey, free: free}); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	i.SSH.Close()
	saveErr := i.snapshot(ctx, p)
	// From here the instance's own key goes back in, whatever happened.
	back := i.Target
	back.Signer = resume.Signer
	c, err := provision.WaitForSSH(ctx, back, ResumeTimeout, i.VM.Done())
	if err != nil {
		return errors.Join(saveErr, fmt.Errorf("reconnect after saving: %w", err))
	}
	err = adopt(ctx, c, adoption{key: i.Key.AuthorizedKey, entropy: rand.Reader})
	if err != nil {
		c.Close()
		return errors.Join(saveErr, fmt.Errorf("after saving: %w", err))
	}
	// The session outlives the change of login key; later connections
	// (i.Target) log in with the instance's own key again.
	i.SSH = c
	if saveErr != nil {
		return saveErr
	}
	if err := os.WriteFile(p.File(savedstate.KeyFile), resume.PrivatePEM, 0o600); err != nil {
		return err
	}
	for name, src := range map[string]string{
		savedstate.SeedFile:       layout.VM(i.Dir).Seed(),
		savedstate.KnownHostsFile: layout.VM(i.Dir).KnownHosts(),
	} {
		if err := fileutil.Copy(src, p.File(name), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// snapshot pauses the guest, saves its state into the overlay, copies the
// overlay (consistent: nothing writes while paused) into p, removes the
// snapshot from the working overlay and lets the guest continue.
func (i *Instance) snapshot(ctx context.Context, p *savedstate.Pending) (err error) {
	start := time.Now()
	if err := i.VM.Pause(ctx); err != nil {
		return err
	}
	defer func() { slog.Debug("save: guest paused", "for", time.Since(start).Round(time.Millisecond)) }()
	defer func() {
		if cerr := i.VM.Continue(ctx); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := i.VM.SaveSnapshot(ctx, savedstate.Snapshot); err != nil {
		return err
	}
	slog.Debug("save: savevm done", "at", time.Since(start).Round(time.Millisecond))
	if err := fileutil.Copy(i.Overlay, p.File(savedstate.DiskFile), 0o600); err != nil {
		return err
	}
	slog.Debug("save: disk copied", "at", time.Since(start).Round(time.Millisecond))
	// The working disk must not carry the guest's memory on.
	return i.VM.DeleteSnapshot(ctx, savedstate.Snapshot)
}

// Resume starts o's guest from the saved state s instead of booting it: a
// copy of the state's disk, put on o.Image, with its seed and pinned host
// key; then it logs in with the resume key once and gives the guest this
// instance's own fresh key, the right time and fresh entropy. On failure
// nothing is left running, the run folder is removed, and the caller
// should drop the state and boot. The guest keeps the saved hostname,
// machine-id and host key: a build's guest is generalised before it
// becomes an image.
func Resume(ctx context.Context, o Options, s savedstate.State) (*Instance, error) {
	return resume(ctx, o, s, nil)
}

// ResumeAs is Resume for a guest that will run as a machine of its own (a
// fleet instance): before it is handed over it also gets a new machine-id,
// its own SSH host key (generated and pinned by kiln) and o.Name as its
// hostname.
func ResumeAs(ctx context.Context, o Options, s savedstate.State) (*Instance, error) {
	ident, err := newIdentity(o.Name)
	if err != nil {
		return nil, err
	}
	return resume(ctx, o, s, ident)
}

func resume(ctx context.Context, o Options, s savedstate.State, ident *identity) (_ *Instance, err error) {
	o.defaults()
	inst, format, err := newRun(ctx, o)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			inst.Remove()
		}
	}()
	inst.InstanceID = s.Meta.InstanceID
	start := time.Now()
	seed := layout.VM(o.Dir).Seed()
	for src, dst := range map[string]string{
		s.File(savedstate.DiskFile):       inst.Overlay,
		s.File(savedstate.SeedFile):       seed,
		s.File(savedstate.KnownHostsFile): layout.VM(o.Dir).KnownHosts(),
	} {
		if err := fileutil.Copy(src, dst, 0o600); err != nil {
			return nil, fmt.Errorf("copy the saved state: %w", err)
		}
	}
	image, err := filepath.Abs(o.Image)
	if err != nil {
		return nil, err
	}
	if err := disk.Rebase(ctx, inst.Overlay, image, format); err != nil {
		return nil, err
	}
	resumePEM, err := os.ReadFile(s.File(savedstate.KeyFile))
	if err != nil {
		return nil, err
	}
	resumeKey, err := ssh.ParsePrivateKey(resumePEM)
	if err != nil {
		return nil, fmt.Errorf("the saved state's key: %w", err)
	}
	known, err := os.ReadFile(s.File(savedstate.KnownHostsFile))
	if err != nil {
		return nil, err
	}
	hostKey := strings.TrimSpace(strings.TrimPrefix(string(known), knownHostsAlias+" "))
	if inst.Key, err = provision.NewKeyPair("kiln@" + o.Name); err != nil {
		return nil, err
	}
	if err := os.WriteFile(layout.VM(o.Dir).Key(), inst.Key.PrivatePEM, 0o600); err != nil {
		return nil, err
	}

	slog.Debug("resume: state copied", "took", time.Since(start).Round(time.Millisecond))
	cfg := o.qemuConfig(inst.Overlay, seed, nil)
	cfg.ExtraArgs = append(cfg.ExtraArgs, qemu.LoadSnapshotArgs(savedstate.Snapshot)...)
	if inst.VM, err = qemu.Start(ctx, cfg); err != nil {
		return nil, err
	}
	slog.Debug("resume: QEMU loaded the state", "at", time.Since(start).Round(time.Millisecond))
	o.Log("resume (%s) %s from saved state %s, instance %s, ssh on 127.0.0.1:%d", inst.VM.Accel(), o.Name, s.Meta.Key, inst.InstanceID, inst.VM.HostPort(22))
	inst.Target = provision.Target{
		Addr:      fmt.Sprintf("127.0.0.1:%d", inst.VM.HostPort(22)),
		User:      User,
		Signer:    resumeKey,
		HostKeys:  []string{hostKey},
		SerialLog: inst.VM.SerialLog(),
	}
	c, err := provision.WaitForSSH(ctx, inst.Target, ResumeTimeout, inst.VM.Done())
	if err != nil {
		return nil, err
	}
	slog.Debug("resume: SSH login with the resume key", "at", time.Since(start).Round(time.Millisecond))
	free := KeepFreeMemory
	if ident != nil {
		// A fleet instance runs for long: it should cost the host what it
		// uses, not all the RAM the state's loading made resident.
		free = giveBackFreeMemory
	}
	if err := adopt(ctx, c, adoption{key: inst.Key.AuthorizedKey, ident: ident, free: free, entropy: rand.Reader}); err != nil {
		c.Close()
		return nil, err
	}
	inst.Target.Signer = inst.Key.Signer
	if ident == nil {
		// The guest kept the host key this connection verified; only the
		// login key changed, and an open session outlives that.
		inst.SSH = c
	} else {
		c.Close()
		if err := inst.pinHostKey(ident); err != nil {
			return nil, err
		}
		// Connect again, verifying the guest's new host key.
		if inst.SSH, err = provision.WaitForSSH(ctx, inst.Target, ResumeTimeout, inst.VM.Done()); err != nil {
			return nil, err
		}
	}
	inst.BootTime = time.Since(start)
	// The working disk must not carry the saved memory (or the resume
	// key's use) into what is built from it.
	if err := inst.VM.DeleteSnapshot(ctx, savedstate.Snapshot); err != nil {
		return nil, err
	}
	o.Log("ssh ready in %.1fs (resumed)", inst.BootTime.Seconds())
	return inst, nil
}

// pinHostKey makes ident's host key the one SSH verifies, from now on and
// for later connections from the run folder (kiln fleet ssh).
func (i *Instance) pinHostKey(ident *identity) error {
	if ident == nil {
		return nil
	}
	i.Target.HostKeys = []string{ident.hostKey.Public}
	return os.WriteFile(layout.VM(i.Dir).KnownHosts(), []byte(knownHostsAlias+" "+ident.hostKey.Public+"\n"), 0o600)
}

// Reidentify gives a running guest a new identity as ResumeAs does: the
// fleet instance that booted to make a saved state must not share its
// machine-id, host key and hostname with the instances resumed from it.
func (i *Instance) Reidentify(ctx context.Context, hostname string) error {
	ident, err := newIdentity(hostname)
	if err != nil {
		return err
	}
	// Zeroing its free memory for the save made all of it resident.
	if err := adopt(ctx, i.SSH, adoption{key: i.Key.AuthorizedKey, ident: ident, free: giveBackFreeMemory, entropy: rand.Reader}); err != nil {
		return err
	}
	i.SSH.Close()
	if err := i.pinHostKey(ident); err != nil {
		return err
	}
	i.SSH, err = provision.WaitForSSH(ctx, i.Target, ResumeTimeout, i.VM.Done())
	return err
}

// adoptScript runs as root in the guest (perl-base is essential in Debian
// and starts fast). Its input:
//
//  1. the key line that becomes the only one logging in as kiln's user;
//  2. an identity line, "" or "HOSTNAME MACHINE-ID HOSTKEY-HEX PUBKEY-HEX":
//     a new hostname (/etc/hostname, /etc/hosts, sethostname), machine-id
//     and SSH host key (the others removed; sshd is told to reload);
//  3. "zero", "giveback" or "" (FreeMemory): "zero" zeroes the guest's
//     free memory before a save. Freed pages keep what they held, and
//     QEMU saves every page that is not zero, so without this a state
//     carries the garbage of boot (the initramfs, freed caches) that every
//     resume loads. One anonymous mapping of MemFree less 48 MiB,
//     populated (MAP_POPULATE: the kernel clears each page) and dropped at
//     exit, leaves those pages zero without pushing out the page cache.
//     "giveback" does the same in a child of its own (its own session,
//     nice 19, first in line for the OOM killer, output to /dev/null), so
//     the script goes on at once and the freed pages are reported to QEMU
//     a few seconds later;
//
// then it says "ready" and, when reseeding, reads
//
//  4. the host's time, set at once (clock_settime, syscall 227 on x86-64:
//     starting date(1) under TCG would put it a second behind);
//  5. 64 bytes from the host, credited to the kernel's pool (RNDADDENTROPY),
//     after which the kernel's generator reseeds from the pool at once
//     (RNDRESEEDCRNG), as a vmgenid driver does after a restore.
const adoptScript = `use strict; $| = 1;
sub put { my ($path, $mode, $text) = @_;
  open(my $f, ">", "$path.kiln") or die "kiln: $path: $!\n"; print $f $text; close($f) or die "kiln: $path: $!\n";
  chmod $mode, "$path.kiln"; rename("$path.kiln", $path) or die "kiln: $path: $!\n"; }
my $key = <STDIN>; chomp $key;
$key =~ m{\Assh-ed25519 [A-Za-z0-9+/=]+( [\w@.-]+)?\z} or die "kiln: not a key line\n";
my (undef, undef, $uid, $gid, undef, undef, undef, $home) = getpwnam("%s") or die "kiln: no user %s\n";
umask 077; mkdir "$home/.ssh";
put("$home/.ssh/authorized_keys", 0600, "$key\n");
chown $uid, $gid, "$home/.ssh/authorized_keys";
my $id = <STDIN>; chomp $id;
if ($id ne "") {
  my ($host, $mid, $priv, $pub) = split / /, $id;
  $host =~ m{\A[A-Za-z0-9-]{1,63}\z} && $mid =~ m{\A[0-9a-f]{32}\z} or die "kiln: not an identity\n";
  unlink glob("/etc/ssh/ssh_host_*");
  put("/etc/ssh/ssh_host_ed25519_key", 0600, pack("H*", $priv));
  put("/etc/ssh/ssh_host_ed25519_key.pub", 0644, pack("H*", $pub));
  put("/etc/machine-id", 0444, "$mid\n");
  if (-f "/var/lib/dbus/machine-id" && ! -l "/var/lib/dbus/machine-id") { put("/var/lib/dbus/machine-id", 0444, "$mid\n"); }
  open(my $h, "<", "/etc/hostname"); my $old = <$h> // ""; chomp $old; close($h);
  put("/etc/hostname", 0644, "$host\n");
  syscall(170, $host, length($host)) == 0 or die "kiln: sethostname: $!\n";
  if ($old ne "" && open(my $hf, "<", "/etc/hosts")) {
    local $/; my $hosts = <$hf>; close($hf);
    $hosts =~ s/(?<![\w.-])\Q$old\E(?![\w-])/$host/g; put("/etc/hosts", 0644, $hosts); }
  if (open(my $p, "<", "/run/sshd.pid")) { my $pid = <$p>; kill("HUP", int($pid)) or die "kiln: reload sshd: $!\n"; }
  else { system("systemctl", "reload", "ssh") == 0 or die "kiln: reload sshd\n"; }
  print "identity\n";
}
my $free = <STDIN>; chomp $free;
if ($free eq "zero" || $free eq "giveback") {
  my $bg = $free eq "giveback";
  my $pid = $bg ? fork() : 0;
  defined $pid or die "kiln: fork: $!\n";
  if ($pid == 0) {
    if ($bg) {
      open(STDIN, "<", "/dev/null"); open(STDOUT, ">", "/dev/null"); open(STDERR, ">", "/dev/null");
      syscall(112); setpriority(0, 0, 19);
      if (open(my $o, ">", "/proc/self/oom_score_adj")) { print $o "1000\n"; close($o); }
    }
    open(my $mi, "<", "/proc/meminfo") or die "kiln: /proc/meminfo: $!\n";
    my ($kib) = map { /^MemFree:\s+(\d+) kB/ ? $1 : () } <$mi>; close($mi);
    my $len = ($kib // 0) * 1024 - (48 << 20); $len -= $len %% 4096;
    if ($len > 0) {
      my $at = syscall(9, 0, $len, 3, 0x8022, -1, 0);
      $at != -1 or die "kiln: mmap: $!\n";
      syscall(11, $at, $len) == 0 or die "kiln: munmap: $!\n";
    }
    exit 0 if $bg;
    print "zeroed\n";
  } else {
    print "giving back\n";
  }
}
print "ready\n";
my $now = <STDIN>;
exit 0 if !defined $now;
$now =~ m{\A(\d+)\.(\d{9})\n\z} or die "kiln: not a time\n";
syscall(227, 0, pack("q<q<", $1, $2)) == 0 or die "kiln: clock_settime: $!\n";
print "clock set\n";
read(STDIN, my $seed, 64) == 64 or die "kiln: short entropy\n";
open(my $r, "<", "/dev/urandom") or die "kiln: $!\n";
ioctl($r, 0x40085203, pack("ii", 512, 64) . $seed) or die "kiln: RNDADDENTROPY: $!\n";
ioctl($r, 0x5207, 0) or die "kiln: RNDRESEEDCRNG: $!\n";
print "reseeded\n";
`

// identity is what makes a resumed fleet instance a machine of its own.
type identity struct {
	hostname  string
	machineID string // 32 lower-case hex digits
	hostKey   cloudinit.HostKey
}

func newIdentity(hostname string) (*identity, error) {
	hk, err := cloudinit.NewHostKey()
	if err != nil {
		return nil, err
	}
	var mid [16]byte
	rand.Read(mid[:])
	return &identity{hostname: hostname, machineID: hex.EncodeToString(mid[:]), hostKey: hk}, nil
}

func (id *identity) line() string {
	if id == nil {
		return ""
	}
	return fmt.Sprintf("%s %s %s %s", id.hostname, id.machineID,
		hex.EncodeToString([]byte(id.hostKey.PrivatePEM)), hex.EncodeToString([]byte(id.hostKey.Public+"\n")))
}

// adoption is what adopt does to a guest.
type adoption struct {
	key     string    // the authorized_keys line that becomes the only login key
	ident   *identity // nil keeps the guest's identity
	free    FreeMemory
	entropy io.Reader // nil: neither clock nor entropy (the guest is about to be saved)
}

// adopt runs adoptScript. The time is sent once the script is running, so
// the clock is off by little more than one SSH round trip.
func adopt(ctx context.Context, c *provision.Client, a adoption) error {
	var seed []byte
	if a.entropy != nil {
		seed = make([]byte, 64)
		if _, err := io.ReadFull(a.entropy, seed); err != nil {
			return err
		}
	}
	script := fmt.Sprintf(adoptScript, User, User)
	stdinR, stdinW := io.Pipe()
	defer stdinR.Close()
	out := &markWriter{mark: "ready\n", seen: make(chan struct{})}
	finished := make(chan struct{})
	sent := make(chan time.Time, 1)
	go func() {
		defer stdinW.Close()
		fmt.Fprintf(stdinW, "%s\n%s\n%s\n", a.key, a.ident.line(), freeMemoryScript[a.free].line)
		if seed == nil {
			return
		}
		select {
		case <-out.seen:
		case <-finished:
			return
		}
		now := time.Now()
		fmt.Fprintf(stdinW, "%d.%09d\n", now.Unix(), now.Nanosecond())
		sent <- now
		stdinW.Write(seed)
	}()
	var stderr bytes.Buffer
	status, err := c.Run(ctx, "sudo -n perl -e "+shellQuote(script), stdinR, out, &stderr)
	close(finished)
	if err != nil {
		return fmt.Errorf("adopt the guest: %w", err)
	}
	if status != 0 {
		return fmt.Errorf("adopt the guest: exit status %d: %s", status, strings.TrimSpace(stderr.String()))
	}
	if a.ident != nil && !strings.Contains(out.String(), "identity\n") {
		return fmt.Errorf("adopt the guest: no new identity: %s", strings.TrimSpace(out.String()))
	}
	if fm := freeMemoryScript[a.free]; fm.done != "" && !strings.Contains(out.String(), fm.done) {
		return fmt.Errorf("adopt the guest: free memory not handled (%s): %s", fm.line, strings.TrimSpace(out.String()))
	}
	if seed != nil && !strings.Contains(out.String(), "reseeded\n") {
		return fmt.Errorf("adopt the guest: the kernel was not reseeded: %s", strings.TrimSpace(out.String()))
	}
	if seed != nil {
		// The guest set the time it was sent somewhere between sending and
		// hearing back: that is the clock's error bound.
		slog.Debug("guest clock set", "error at most", out.clockSetAt().Sub(<-sent).Round(time.Millisecond))
	}
	return nil
}

// markWriter collects output and closes seen once mark has been written.
type markWriter struct {
	mu   sync.Mutex
	b    bytes.Buffer
	mark string
	seen chan struct{}
	once sync.Once

	setAt time.Time // when the guest said it set its clock
}

func (w *markWriter) clockSetAt() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.setAt
}

func (w *markWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if w.setAt.IsZero() && strings.Contains(w.b.String(), "clock set\n") {
		w.setAt = time.Now()
	}
	if strings.Contains(w.b.String(), w.mark) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *markWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
