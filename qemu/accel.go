package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/fileutil"
)

// Accel is the QEMU accelerator a VM runs under.
type Accel string

const (
	KVM Accel = "kvm" // Linux hardware virtualisation
	HVF Accel = "hvf" // macOS Hypervisor.framework
	TCG Accel = "tcg" // software emulation: works everywhere, ~10x slower
)

// Auto asks Choose for the fastest accelerator that really runs a guest.
const Auto Accel = "auto"

// ParseAccel checks an accelerator name as users give it ("" is Auto).
func ParseAccel(s string) (Accel, error) {
	switch a := Accel(strings.ToLower(strings.TrimSpace(s))); a {
	case "", Auto:
		return Auto, nil
	case KVM, HVF, TCG:
		return a, nil
	}
	return "", fmt.Errorf("unknown accelerator %q: use auto, kvm, hvf or tcg", s)
}

// KVMCPUModels are the -cpu values tried under KVM, in order: the host's
// CPU; the same without IA32_ARCH_CAPABILITIES, which some hosts' KVM
// refuses to set (QEMU then aborts with "failed to set MSR 0x10a"); and a
// named model (x86-64-v2) for hosts where passing the CPU through fails.
var KVMCPUModels = []string{"host", "host,-arch-capabilities", "Nehalem"}

// Choice is the accelerator and CPU model VMs will run under, and why.
type Choice struct {
	Accel Accel
	CPU   string // the -cpu value; "" = the accelerator's default
	// Note is one line for the user when VMs will be slow or kiln did not
	// use what it found (a KVM that cannot run a guest); "" otherwise.
	Note string
	// Probe is the KVM probe's verdict, when one was needed.
	Probe *ProbeReport
}

// CPUModel is the -cpu value VMs get under this choice.
func (c Choice) CPUModel() string { return Config{Accel: c.Accel, CPU: c.CPU}.cpuModel() }

// ProbeReport is the cached verdict on this host's KVM.
type ProbeReport struct {
	Key         string         `json:"key"` // what the verdict depends on; see probeKey
	QEMUVersion string         `json:"qemu_version"`
	Modules     []string       `json:"kvm_modules"` // kvm_* kernel modules loaded
	CPUFlags    []string       `json:"cpu_flags"`   // vmx, svm, hypervisor: what the host CPU claims
	Attempts    []ProbeAttempt `json:"attempts"`
	At          time.Time      `json:"at"`
	Cached      bool           `json:"-"` // read from the cache rather than run now
}

// Working is the first attempt that ran the guest.
func (r *ProbeReport) Working() (ProbeAttempt, bool) {
	for _, a := range r.Attempts {
		if a.Outcome == ProbeWorks {
			return a, true
		}
	}
	return ProbeAttempt{}, false
}

// Finding is the report in one clause, for messages.
func (r *ProbeReport) Finding() string {
	if a, ok := r.Working(); ok {
		return fmt.Sprintf("KVM runs a guest with -cpu %s", a.CPU)
	}
	var parts []string
	for _, a := range r.Attempts {
		parts = append(parts, a.String())
	}
	return "/dev/kvm is present but cannot run a guest: " + strings.Join(parts, "; ")
}

// shortFinding is the first failed attempt's outcome, as the fallback line
// shows it ("probe hung after 3s").
func (r *ProbeReport) shortFinding() string {
	if len(r.Attempts) == 0 {
		return "no probe ran"
	}
	a := r.Attempts[0]
	switch a.Outcome {
	case ProbeHung:
		return fmt.Sprintf("probe hung after %s", ProbeTimeout)
	case ProbeAborted:
		return "QEMU aborted: " + a.Detail
	}
	return a.Detail
}

// Selector chooses the accelerator for this host, probing KVM by running a
// guest and caching the verdict.
type Selector struct {
	Binary    string // QEMU; "" = qemu-system-x86_64 from PATH
	CacheFile string // where the probe's verdict is kept; "" = not kept
	KVMDevice string // "" = /dev/kvm
	Timeout   time.Duration
	// Fresh ignores a cached verdict (doctor --probe).
	Fresh bool
}

func (s Selector) device() string {
	if s.KVMDevice != "" {
		return s.KVMDevice
	}
	return "/dev/kvm"
}

// Choose resolves want (Auto, KVM, HVF or TCG) to what VMs will use. Auto is
// KVM when the probe guest runs under it (with the first CPU model that
// works), HVF on Intel macOS, else TCG with a Note saying why. An explicit
// KVM that cannot run a guest is an error carrying the probe's finding, so
// it fails at once instead of at an SSH timeout.
func (s Selector) Choose(ctx context.Context, want Accel) (Choice, error) {
	switch want {
	case TCG:
		return Choice{Accel: TCG}, nil
	case HVF:
		return Choice{Accel: HVF}, nil
	case KVM, Auto, "":
	default:
		return Choice{}, fmt.Errorf("unknown accelerator %q: use auto, kvm, hvf or tcg", want)
	}
	if want != KVM && runtime.GOOS == "darwin" {
		if runtime.GOARCH == "amd64" {
			return Choice{Accel: HVF}, nil
		}
		return Choice{Accel: TCG, Note: "HVF cannot run x86 guests on this Mac: running under TCG software emulation, about 10x slower"}, nil
	}
	if err := s.openDevice(); err != nil {
		if want == KVM {
			return Choice{}, fmt.Errorf("KVM is not usable: %v", err)
		}
		return Choice{Accel: TCG, Note: fmt.Sprintf("no KVM (%v): running under TCG software emulation, about 10x slower", err)}, nil
	}
	rep, err := s.ProbeKVM(ctx)
	if err != nil {
		return Choice{}, err
	}
	if a, ok := rep.Working(); ok {
		return Choice{Accel: KVM, CPU: a.CPU, Probe: rep}, nil
	}
	if want == KVM {
		return Choice{}, errors.New(rep.Finding())
	}
	return Choice{Accel: TCG, Probe: rep,
		Note: fmt.Sprintf("/dev/kvm is present but cannot run a guest (%s): using TCG, about 10x slower", rep.shortFinding())}, nil
}

// openDevice says why /dev/kvm cannot be opened read-write, or nil.
func (s Selector) openDevice() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("KVM needs Linux")
	}
	f, err := os.OpenFile(s.device(), os.O_RDWR, 0)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("%s: %v", s.device(), pe.Err)
		}
		return err
	}
	return f.Close()
}

// ProbeKVM returns the verdict on KVM for this host boot, QEMU and argv: the
// cached one when its key matches (unless Fresh), else a new probe of every
// CPU model in KVMCPUModels, run at once, which is then cached.
func (s Selector) ProbeKVM(ctx context.Context) (*ProbeReport, error) {
	path, err := findBinary(s.Binary)
	if err != nil {
		return nil, err
	}
	key := probeKey(hostBoot(), path, KVMCPUModels)
	if !s.Fresh && s.CacheFile != "" {
		if rep, ok := readProbeCache(s.CacheFile, key); ok {
			return rep, nil
		}
	}
	timeout := s.Timeout
	if timeout == 0 {
		timeout = ProbeTimeout
	}
	rep := &ProbeReport{Key: key, QEMUVersion: qemuVersion(ctx, path), Modules: kvmModules(), CPUFlags: virtFlags(), At: time.Now().UTC()}
	rep.Attempts = make([]ProbeAttempt, len(KVMCPUModels))
	var wg sync.WaitGroup
	for i, cpu := range KVMCPUModels {
		wg.Go(func() {
			rep.Attempts[i] = Probe(ctx, Config{Binary: path, Accel: KVM, CPU: cpu}, timeout)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.CacheFile != "" {
		// A verdict that cannot be kept is probed again next time: slower,
		// never wrong.
		if b, err := json.MarshalIndent(rep, "", "  "); err == nil {
			_ = fileutil.WriteAtomic(s.CacheFile, append(b, '\n'), 0o600)
		}
	}
	return rep, nil
}

// probeKey is what a verdict depends on: the host boot (kernel and its
// modules, boot id), the QEMU binary (path, size, modification time: an
// upgrade changes it), and the arguments probed.
func probeKey(boot, qemuPath string, cpus []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "boot %s\nqemu %s", boot, qemuPath)
	if st, err := os.Stat(qemuPath); err == nil {
		fmt.Fprintf(h, " %d %d", st.Size(), st.ModTime().UnixNano())
	}
	for _, cpu := range cpus {
		fmt.Fprintf(h, "\nargv %q", platformArgs(Config{Accel: KVM, CPU: cpu}))
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// hostBoot identifies this boot of the host: its boot id and kernel.
func hostBoot() string {
	id, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(id)) + " " + strings.TrimSpace(string(rel))
}

func readProbeCache(path, key string) (*ProbeReport, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	var rep ProbeReport
	if json.Unmarshal(b, &rep) != nil || rep.Key != key || len(rep.Attempts) == 0 {
		return nil, false
	}
	rep.Cached = true
	return &rep, true
}

func qemuVersion(ctx context.Context, path string) string {
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// kvmModules lists the KVM kernel modules loaded: kvm_intel or kvm_amd on
// ordinary hosts; others (kvm_pvm) are software backends that may not run
// ordinary guests.
func kvmModules() []string {
	ents, _ := os.ReadDir("/sys/module")
	var mods []string
	for _, e := range ents {
		if n := e.Name(); n == "kvm" || strings.HasPrefix(n, "kvm_") {
			mods = append(mods, n)
		}
	}
	return mods
}

// virtFlags are the virtualisation flags the host CPU advertises.
func virtFlags() []string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	var flags []string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, f := range strings.Fields(v) {
			if f == "vmx" || f == "svm" || f == "hypervisor" {
				flags = append(flags, f)
			}
		}
		break
	}
	return flags
}
