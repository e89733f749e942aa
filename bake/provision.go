package bake

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/provision"
)

func (b *builder) provision(ctx context.Context) error {
	for i, p := range b.spec.Provisioners {
		start := time.Now()
		b.say("provisioner %d/%d: %s", i+1, len(b.spec.Provisioners), p.Describe())
		if err := b.runProvisioner(ctx, i+1, p); err != nil {
			return err
		}
		b.say("provisioner %d done in %s", i+1, durationString(time.Since(start)))
	}
	return nil
}

func (b *builder) runProvisioner(ctx context.Context, n int, p Provisioner) error {
	fail := func(status int, tail string, err error) error {
		pe := &ProvisionerError{Index: n, Type: p.Type, Status: status, Tail: tail, Err: err}
		select {
		case <-b.inst.VM.Done():
			// The lost connection is a symptom; say what happened to the VM.
			pe.Err = fmt.Errorf("the VM stopped (%v); its console is in %s", b.inst.VM.Err(), b.inst.VM.SerialLog())
		default:
		}
		if strings.Contains(tail, "No space left on device") {
			size := "the base image's size"
			if b.spec.DiskSize > 0 {
				size = disk.FormatSize(b.spec.DiskSize)
			}
			pe.Hint = fmt.Sprintf("the guest's disk is full: raise disk_size (now %s) or remove files in the provisioner", size)
		}
		return pe
	}
	if p.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Timeout)
		defer cancel()
	}
	switch p.Type {
	case "breakpoint":
		b.breakpoint(p)
		return nil
	case "shell":
		if p.ExecuteCommand != "" {
			return b.packerShell(ctx, n, p, fail)
		}
	}
	switch p.Type {
	case "file":
		var err error
		if p.Direction == "download" {
			err = b.inst.SSH.Download(ctx, p.Source, p.Destination)
		} else if p.HasContent {
			err = b.uploadContent(ctx, p)
		} else {
			err = b.inst.SSH.Upload(ctx, p.Source, p.Destination)
		}
		if err != nil {
			return fail(-1, "", err)
		}
		return nil
	case "shell":
		for _, body := range shellBodies(p) {
			tail := &tailLines{n: 10}
			prefix := fmt.Sprintf("    %d| ", n)
			stdout := newLineWriter(b.out, prefix, b.secrets, tail)
			stderr := newLineWriter(b.out, prefix, b.secrets, tail)
			status, err := b.inst.SSH.RunScript(ctx, provision.Script{Body: body, Env: p.Env, User: p.RunAs()}, stdout, stderr)
			stdout.Flush()
			stderr.Flush()
			if p.ExpectReboot && (err != nil || status != 0) && ctx.Err() == nil {
				if rerr := b.reconnect(ctx); rerr != nil {
					return fail(-1, tail.String(), rerr)
				}
				continue
			}
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) && p.Timeout > 0 {
					err = fmt.Errorf("timed out after %s", p.Timeout)
				}
				return fail(-1, tail.String(), err)
			}
			if status != 0 {
				return fail(status, tail.String(), nil)
			}
			if p.ExpectReboot {
				if err := b.reconnect(ctx); err != nil {
					return fail(-1, tail.String(), err)
				}
			}
		}
		return nil
	}
	return fail(-1, "", fmt.Errorf("unknown provisioner type %q", p.Type))
}

// shellBodies turns a shell provisioner into the scripts to run: inline
// commands become one script; each script file is read as is.
func shellBodies(p Provisioner) []string {
	if len(p.Inline) > 0 {
		return []string{strings.Join(p.Inline, "\n") + "\n"}
	}
	var out []string
	for _, s := range p.Scripts {
		body, err := os.ReadFile(s)
		if err != nil {
			body = []byte(fmt.Sprintf("echo 'kiln: cannot read %s' >&2; exit 1\n", s))
		}
		out = append(out, string(body))
	}
	return out
}

// reconnect waits for the guest to come back after a reboot.
func (b *builder) reconnect(ctx context.Context) error {
	b.say("waiting for the guest to reboot")
	b.inst.SSH.Close()
	// Give the old sshd time to go away, so the first handshake is not the
	// dying one.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Second):
	}
	c, err := provision.WaitForSSH(ctx, b.inst.Target, b.spec.BootTimeout, b.inst.VM.Done())
	if err != nil {
		return err
	}
	b.inst.SSH = c
	return c.WaitCloudInit(ctx)
}

// generalizeScript makes the image boot as a new machine everywhere: cloud-init
// runs again, machine-id and SSH host keys are made anew, and kiln's build
// user, key and sudo rule are gone. fstrim last, so the blocks freed by the
// build leave the image when it is compacted.
//
// cloud-init's own clean (`cloud-init clean --logs --seed`) is done here in
// shell, as the same three steps: its Python takes 4 s to start under TCG.
const generalizeScript = `set -u
rm -f /var/log/cloud-init.log /var/log/cloud-init-output.log
rm -rf /var/lib/cloud/*
for f in /etc/cloud/clean.d/*; do if [ -f "$f" ] && [ -x "$f" ]; then "$f"; fi; done
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -f /etc/ssh/ssh_host_*
apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/*
find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' \) -delete
find /var/log -type f -exec truncate -s 0 {} +
rm -rf /var/log/journal/*
rm -f /etc/sudoers.d/90-cloud-init-users
rm -f /root/.bash_history
userdel --force --remove kiln 2>/dev/null || true
rm -rf /home/kiln
sync
fstrim --all --verbose || true
echo "kiln-guest-used: $(df -B1 --output=used / | tail -n 1)"
`

func (b *builder) generalize(ctx context.Context) error {
	if !b.spec.Generalize && b.spec.Login != nil {
		b.say("not generalising: the image stays as the template's provisioners left it (--generalize turns kiln's on)")
		return nil
	}
	if !b.spec.Generalize {
		b.say("generalize = false: keeping machine identity and the build user")
		return nil
	}
	var out strings.Builder
	// Fed on stdin rather than uploaded: a provisioner may have left the
	// disk full, and generalising (which frees space) must still run.
	status, err := b.inst.SSH.Run(ctx, "sudo -n bash -e -s", strings.NewReader(generalizeScript), &out, &out)
	if err != nil {
		return err
	}
	if status != 0 {
		return fmt.Errorf("generalize script exited %d:\n%s", status, out.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if strings.Contains(line, "trimmed") {
			b.say("%s", strings.TrimSpace(line))
		}
		if v, ok := strings.CutPrefix(line, "kiln-guest-used: "); ok {
			b.guestUsed, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if b.guestUsed > 0 {
		b.say("the guest's root holds %s", disk.FormatSize(b.guestUsed))
	}
	return nil
}

// uploadContent uploads a file provisioner's content (Packer's content =
// "…") through a file in the run folder.
func (b *builder) uploadContent(ctx context.Context, p Provisioner) error {
	f, err := os.CreateTemp(b.dir, "content-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(p.Content); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return b.inst.SSH.Upload(ctx, f.Name(), p.Destination)
}
