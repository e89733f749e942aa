package qemu

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProbeGuestRunsUnderTCG boots the embedded probe guest on real QEMU
// under TCG, which runs it everywhere: every stage prints and QEMU exits
// through isa-debug-exit.
func TestProbeGuestRunsUnderTCG(t *testing.T) {
	needQEMU(t)
	a := Probe(context.Background(), Config{Accel: TCG}, 30*time.Second)
	if a.Outcome != ProbeWorks {
		t.Fatalf("probe under TCG: %s", a)
	}
	if !strings.Contains(strings.Join(a.Argv, " "), "-accel tcg") {
		t.Errorf("argv probed %q", a.Argv)
	}
}

// TestProbeBootSectorMatchesSource reassembles probeguest/boot.S and checks
// the embedded boot.bin is what it makes.
func TestProbeBootSectorMatchesSource(t *testing.T) {
	for _, tool := range []string{"as", "ld"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s (binutils) not installed: cannot reassemble probeguest/boot.S", tool)
		}
	}
	dir := t.TempDir()
	obj, bin := filepath.Join(dir, "boot.o"), filepath.Join(dir, "boot.bin")
	for _, argv := range [][]string{
		{"as", "--32", "-o", obj, "probeguest/boot.S"},
		{"ld", "-m", "elf_i386", "-Ttext", "0x7c00", "--oformat", "binary", "-o", bin, obj},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", argv, err, out)
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, probeBootSector) {
		t.Error("probeguest/boot.bin is out of date: run go generate ./qemu")
	}
	if len(probeBootSector) != 512 || probeBootSector[510] != 0x55 || probeBootSector[511] != 0xaa {
		t.Errorf("boot.bin is not a 512-byte boot sector (%d bytes)", len(probeBootSector))
	}
}

func TestProbeClassify(t *testing.T) {
	all := strings.Join([]string{probeStages[0].line, probeStages[1].line, probeStages[2].line}, "\r\n")
	for _, tc := range []struct {
		name string
		run  probeRun
		want Outcome
		says string
	}{
		{"works", probeRun{status: 33, serial: all}, ProbeWorks, ""},
		{"msr abort", probeRun{signal: syscall.SIGABRT, stderr: "error: failed to set MSR 0x10a to 0x69\nqemu-system-x86_64: ../../target/i386/kvm/kvm.c:3002: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n"},
			ProbeAborted, "failed to set MSR 0x10a"},
		{"abort through a shell", probeRun{status: 134, stderr: "Aborted\n"}, ProbeAborted, "Aborted"},
		{"segfault", probeRun{signal: syscall.SIGSEGV}, ProbeAborted, "segmentation fault"},
		{"hung silent", probeRun{timedOut: true}, ProbeHung, "firmware never ran"},
		{"hung after the interrupt", probeRun{timedOut: true, serial: probeStages[0].line + "\r\n" + probeStages[1].line}, ProbeHung, "stage 2 of 3"},
		{"no kvm module", probeRun{status: 1, stderr: "Could not access KVM kernel module: No such file or directory\nqemu-system-x86_64: -accel kvm: failed to initialize kvm: No such file or directory\n"},
			ProbeFailed, "Could not access KVM kernel module"},
		{"exit 33 without output", probeRun{status: 33}, ProbeFailed, "printed nothing"},
		{"other status", probeRun{status: 3}, ProbeFailed, "status 3"},
		{"oom kill", probeRun{signal: syscall.SIGKILL}, ProbeFailed, "killed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, says := tc.run.classify(2 * time.Second)
			if got != tc.want || !strings.Contains(says, tc.says) {
				t.Errorf("classify = %s (%q), want %s containing %q", got, says, tc.want, tc.says)
			}
		})
	}
}

// standIn writes a fake qemu-system-x86_64 that behaves, for each -cpu
// value, as the script fragment in behave says; $SERIAL is the probe's
// console file. Every run appends its -cpu to calls.
func standIn(t *testing.T, behave map[string]string) (bin, calls string) {
	t.Helper()
	dir := t.TempDir()
	bin, calls = filepath.Join(dir, "qemu-system-x86_64"), filepath.Join(dir, "calls")
	var sb strings.Builder
	sb.WriteString("#!/bin/sh\nCPU=\nSERIAL=\nprev=\n")
	sb.WriteString("[ \"$1\" = --version ] && { echo 'QEMU emulator version 0.0-standin'; exit 0; }\n")
	sb.WriteString("for a in \"$@\"; do\n  [ \"$prev\" = -cpu ] && CPU=$a\n  case \"$a\" in file,id=serial0,path=*) SERIAL=${a#file,id=serial0,path=};; esac\n  prev=$a\ndone\n")
	sb.WriteString("echo \"$CPU\" >> " + calls + "\ncase \"$CPU\" in\n")
	for cpu, script := range behave {
		sb.WriteString("'" + cpu + "') " + script + ";;\n")
	}
	sb.WriteString("esac\nexit 9\n")
	if err := os.WriteFile(bin, []byte(sb.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, calls
}

const (
	works   = `printf 'kiln-probe: real mode\r\nkiln-probe: interrupt\r\nkiln-probe: protected mode\r\n' > "$SERIAL"; exit 33`
	aborts  = `echo 'error: failed to set MSR 0x10a to 0x69' >&2; kill -ABRT $$`
	hangs   = `exec sleep 60`
	noKVM   = `echo 'Could not access KVM kernel module: Permission denied' >&2; exit 1`
	stalls  = `printf 'kiln-probe: real mode\r\n' > "$SERIAL"; exec sleep 60`
	timeout = 2 * time.Second // a stand-in that works finishes in milliseconds, if the machine is not loaded
)

// fakeDevice is a file standing in for /dev/kvm: it opens read-write.
func fakeDevice(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProbeStandIn(t *testing.T) {
	bin, _ := standIn(t, map[string]string{"a": works, "b": aborts, "c": hangs, "d": noKVM, "e": stalls, "f": "exit 33"})
	for cpu, want := range map[string]Outcome{"a": ProbeWorks, "b": ProbeAborted, "c": ProbeHung, "d": ProbeFailed, "e": ProbeHung, "f": ProbeFailed} {
		start := time.Now()
		a := Probe(context.Background(), Config{Binary: bin, Accel: KVM, CPU: cpu}, timeout)
		if a.Outcome != want {
			t.Errorf("-cpu %s: %s, want %s", cpu, a, want)
		}
		if took := time.Since(start); took > timeout+3*time.Second {
			t.Errorf("-cpu %s: the probe took %s, past its %s bound", cpu, took, timeout)
		}
	}
}

func TestChooseFallsBackInOrder(t *testing.T) {
	for _, tc := range []struct {
		name     string
		behave   map[string]string
		want     Accel
		cpu      string
		explicit string // the error --accel kvm gets; "" = none
	}{
		{"host works", map[string]string{"host": works, "host,-arch-capabilities": works, "Nehalem": works}, KVM, "host", ""},
		{"msr abort, workaround works", map[string]string{"host": aborts, "host,-arch-capabilities": works, "Nehalem": works}, KVM, "host,-arch-capabilities", ""},
		{"only the named model", map[string]string{"host": aborts, "host,-arch-capabilities": hangs, "Nehalem": works}, KVM, "Nehalem", ""},
		{"nothing runs", map[string]string{"host": hangs, "host,-arch-capabilities": hangs, "Nehalem": hangs}, TCG, "", "cannot run a guest: -cpu host: hung"},
		{"no module", map[string]string{"host": noKVM, "host,-arch-capabilities": noKVM, "Nehalem": noKVM}, TCG, "", "Permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, _ := standIn(t, tc.behave)
			sel := Selector{Binary: bin, KVMDevice: fakeDevice(t), Timeout: timeout}
			c, err := sel.Choose(context.Background(), Auto)
			if err != nil {
				t.Fatal(err)
			}
			if c.Accel != tc.want || c.CPU != tc.cpu {
				t.Errorf("auto chose %s -cpu %q, want %s %q; probe: %v", c.Accel, c.CPU, tc.want, tc.cpu, c.Probe)
			}
			if tc.want == TCG && !strings.Contains(c.Note, "/dev/kvm is present but cannot run a guest") {
				t.Errorf("fallback note %q", c.Note)
			}
			if tc.want == KVM && c.Note != "" {
				t.Errorf("KVM works but the note says %q", c.Note)
			}
			_, err = sel.Choose(context.Background(), KVM)
			switch {
			case tc.explicit == "" && err != nil:
				t.Errorf("explicit kvm: %v", err)
			case tc.explicit != "" && (err == nil || !strings.Contains(err.Error(), tc.explicit)):
				t.Errorf("explicit kvm: %v, want an error containing %q", err, tc.explicit)
			}
		})
	}
}

func TestChooseWithoutDevice(t *testing.T) {
	sel := Selector{Binary: "/nonexistent/qemu", KVMDevice: filepath.Join(t.TempDir(), "kvm")}
	c, err := sel.Choose(context.Background(), Auto)
	if err != nil || c.Accel != TCG || !strings.Contains(c.Note, "no such file") || c.Probe != nil {
		t.Errorf("auto without /dev/kvm: %+v, %v", c, err)
	}
	if _, err := sel.Choose(context.Background(), KVM); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("explicit kvm without /dev/kvm: %v", err)
	}
	if c, err := sel.Choose(context.Background(), TCG); err != nil || c.Accel != TCG || c.Note != "" {
		t.Errorf("explicit tcg: %+v, %v", c, err)
	}
}

func TestProbeCache(t *testing.T) {
	bin, calls := standIn(t, map[string]string{"host": works, "host,-arch-capabilities": works, "Nehalem": works})
	cache := filepath.Join(t.TempDir(), "accel-probe.json")
	sel := Selector{Binary: bin, KVMDevice: fakeDevice(t), Timeout: timeout, CacheFile: cache}
	runs := func() int {
		b, _ := os.ReadFile(calls)
		return strings.Count(string(b), "\n")
	}
	rep, err := sel.ProbeKVM(context.Background())
	if err != nil || rep.Cached || runs() != len(KVMCPUModels) {
		t.Fatalf("first probe: cached=%v runs=%d err=%v", rep != nil && rep.Cached, runs(), err)
	}
	if rep.QEMUVersion != "QEMU emulator version 0.0-standin" {
		t.Errorf("QEMU version %q", rep.QEMUVersion)
	}
	if st, err := os.Stat(cache); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v %v", st, err)
	}
	rep, err = sel.ProbeKVM(context.Background())
	if err != nil || !rep.Cached || runs() != len(KVMCPUModels) {
		t.Errorf("second probe should be cached: cached=%v runs=%d err=%v", rep.Cached, runs(), err)
	}
	fresh := sel
	fresh.Fresh = true
	if rep, _ = fresh.ProbeKVM(context.Background()); rep.Cached || runs() != 2*len(KVMCPUModels) {
		t.Errorf("Fresh should probe again: runs=%d", runs())
	}
	// Another QEMU binary (an upgrade changes its size or time) is a new key.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(bin, later, later); err != nil {
		t.Fatal(err)
	}
	if rep, _ = sel.ProbeKVM(context.Background()); rep.Cached {
		t.Error("a changed QEMU binary reused the old verdict")
	}
	// A corrupt cache is probed again, not trusted.
	os.WriteFile(cache, []byte("{not json"), 0o600)
	if rep, _ = sel.ProbeKVM(context.Background()); rep.Cached {
		t.Error("a corrupt cache was trusted")
	}
}

func TestProbeKey(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "qemu")
	os.WriteFile(bin, []byte("x"), 0o755)
	base := probeKey("boot-1 6.1", bin, KVMCPUModels)
	if probeKey("boot-1 6.1", bin, KVMCPUModels) != base {
		t.Fatal("probeKey is not stable")
	}
	for name, k := range map[string]string{
		"another boot":   probeKey("boot-2 6.1", bin, KVMCPUModels),
		"another kernel": probeKey("boot-1 6.2", bin, KVMCPUModels),
		"another qemu":   probeKey("boot-1 6.1", bin+"-other", KVMCPUModels),
		"other argv":     probeKey("boot-1 6.1", bin, []string{"host"}),
	} {
		if k == base {
			t.Errorf("%s: same key", name)
		}
	}
}

func TestParseAccel(t *testing.T) {
	for in, want := range map[string]Accel{"": Auto, "auto": Auto, "KVM": KVM, "tcg": TCG, " hvf ": HVF} {
		if got, err := ParseAccel(in); err != nil || got != want {
			t.Errorf("ParseAccel(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseAccel("xen"); err == nil {
		t.Error("ParseAccel(xen) accepted")
	}
}
