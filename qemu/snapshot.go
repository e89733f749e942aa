package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
)

// Saving and resuming a running guest. QEMU's internal snapshots (HMP
// savevm, -loadvm) keep the machine's memory and device state inside the
// qcow2 disk; they work under TCG and KVM alike. (A migration stream to a
// file was tried and did not restore reliably on QEMU 7.2.)

// HMP runs a human-monitor command through QMP and returns what it printed.
// HMP reports most failures as printed text, not as a QMP error.
func (m *Machine) HMP(ctx context.Context, command string) (string, error) {
	out, err := m.QMP(ctx, "human-monitor-command", map[string]string{"command-line": command})
	if err != nil {
		return "", err
	}
	var text string
	if err := json.Unmarshal(out, &text); err != nil {
		return "", fmt.Errorf("hmp %s: %w", command, err)
	}
	return text, nil
}

// Pause stops the guest's CPUs (QMP stop); Continue starts them again.
func (m *Machine) Pause(ctx context.Context) error {
	_, err := m.QMP(ctx, "stop", nil)
	return err
}

// Continue resumes a paused guest (QMP cont).
func (m *Machine) Continue(ctx context.Context) error {
	_, err := m.QMP(ctx, "cont", nil)
	return err
}

// SaveSnapshot stores the machine's state as the internal snapshot name in
// its writable disks (HMP savevm), and checks that the snapshot is listed.
// A paused guest stays paused, so its disk can be copied consistently.
func (m *Machine) SaveSnapshot(ctx context.Context, name string) error {
	if !snapshotNameRE.MatchString(name) {
		return fmt.Errorf("save snapshot: invalid name %q", name)
	}
	out, err := m.HMP(ctx, "savevm "+name)
	if err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	if strings.TrimSpace(out) != "" {
		return fmt.Errorf("save snapshot: %s", strings.TrimSpace(out))
	}
	list, err := m.HMP(ctx, "info snapshots")
	if err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	if !snapshotListed(list, name) {
		return fmt.Errorf("save snapshot: %q is not listed after savevm: %s", name, strings.TrimSpace(list))
	}
	return nil
}

// DeleteSnapshot removes the internal snapshot name from the disks (HMP
// delvm), freeing the saved memory inside them.
func (m *Machine) DeleteSnapshot(ctx context.Context, name string) error {
	if !snapshotNameRE.MatchString(name) {
		return fmt.Errorf("delete snapshot: invalid name %q", name)
	}
	out, err := m.HMP(ctx, "delvm "+name)
	if err != nil {
		return fmt.Errorf("delete snapshot: %w", err)
	}
	if strings.TrimSpace(out) != "" {
		return fmt.Errorf("delete snapshot: %s", strings.TrimSpace(out))
	}
	return nil
}

var snapshotNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,63}$`)

// snapshotListed reports whether HMP's "info snapshots" table names the
// snapshot (its TAG column).
func snapshotListed(table, name string) bool {
	for _, line := range strings.Split(table, "\n") {
		for _, f := range strings.Fields(line) {
			if f == name {
				return true
			}
		}
	}
	return false
}

// LoadSnapshotArgs are the extra arguments that start QEMU from the
// internal snapshot name of its disk instead of booting.
func LoadSnapshotArgs(name string) []string { return []string{"-loadvm", name} }

// ShapeArgs are the parts of c's command line that shape the machine a
// snapshot can be loaded into: machine type, accelerator, CPU model,
// CPUs, memory, devices, and drives without their files. Paths, names
// and host ports are left out; they may differ between save and resume.
func ShapeArgs(c Config) []string {
	argv := Argv(c, nil)
	var out []string
	for i := 0; i+1 < len(argv); i++ {
		flag, val := argv[i], argv[i+1]
		switch flag {
		case "-machine", "-accel", "-cpu", "-smp", "-m", "-global", "-device":
			out = append(out, flag, val)
			i++
		case "-bios":
			out = append(out, flag)
			i++
		case "-drive":
			var keep []string
			for _, opt := range strings.Split(strings.ReplaceAll(val, ",,", "\x00"), ",") {
				if !strings.HasPrefix(opt, "file=") {
					keep = append(keep, strings.ReplaceAll(opt, "\x00", ",,"))
				}
			}
			out = append(out, flag, strings.Join(keep, ","))
			i++
		}
	}
	return out
}

var versions sync.Map // binary → first line of --version

// Version is the first line of `BINARY --version` ("" = qemu-system-x86_64),
// e.g. "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)".
func Version(ctx context.Context, binary string) (string, error) {
	if binary == "" {
		binary = "qemu-system-x86_64"
	}
	if v, ok := versions.Load(binary); ok {
		return v.(string), nil
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, binary, "--version")
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s --version: %w", binary, err)
	}
	line, _, _ := strings.Cut(out.String(), "\n")
	line = strings.TrimSpace(line)
	if line == "" {
		return "", fmt.Errorf("%s --version printed nothing", binary)
	}
	versions.Store(binary, line)
	return line, nil
}
