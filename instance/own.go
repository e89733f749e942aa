package instance

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/crypto/ssh"

	"github.com/kiln-dev/kiln/cloudinit"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/provision"
)

// OwnSeed is a template's own seed and login (a Packer template's cd_files,
// http_directory and communicator), used instead of kiln's.
type OwnSeed struct {
	ISOFiles map[string][]byte // the seed ISO's files by path; nil = no ISO
	Label    string            // its volume label ("cidata" for cloud-init)

	User       string // the account the seed creates (ssh_username)
	Password   string // ssh_password
	PrivateKey []byte // ssh_private_key_file's PEM

	// HostKeys are the host keys kiln added to the seed's user-data. When
	// empty (a seed kiln cannot change), the first key the guest presents
	// is trusted, said so, and pinned from then on.
	HostKeys []string

	ExtraArgs []string // appended to QEMU's command line (qemuargs)
}

func (inst *Instance) launchOwn(ctx context.Context, o Options) error {
	own := o.Own
	inst.InstanceID = "of the template's seed"
	seed := ""
	if own.ISOFiles != nil {
		seed = layout.VM(o.Dir).Seed()
		if err := cloudinit.WriteFilesISO(seed, own.Label, own.ISOFiles); err != nil {
			return err
		}
	}
	target := provision.Target{User: own.User, Password: own.Password, HostKeys: own.HostKeys, TrustFirstKey: len(own.HostKeys) == 0}
	if len(own.PrivateKey) > 0 {
		signer, err := ssh.ParsePrivateKey(own.PrivateKey)
		if err != nil {
			return fmt.Errorf("ssh_private_key_file: %w", err)
		}
		target.Signer = signer
		if err := os.WriteFile(layout.VM(o.Dir).Key(), own.PrivateKey, 0o600); err != nil {
			return err
		}
	}
	if err := inst.start(ctx, o, seed, target, own.ExtraArgs); err != nil {
		return err
	}
	key := inst.SSH.HostKey()
	if len(own.HostKeys) == 0 {
		o.Log("trusted the guest's first host key (kiln could not put its own in this seed): %s; pinned for the rest of the build", fingerprint(key))
		inst.Target.HostKeys, inst.Target.TrustFirstKey = []string{key}, false
	}
	return os.WriteFile(layout.VM(o.Dir).KnownHosts(), []byte(knownHostsAlias+" "+key+"\n"), 0o600)
}

func fingerprint(authorizedKey string) string {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(authorizedKey))
	if err != nil {
		return authorizedKey
	}
	return ssh.FingerprintSHA256(k)
}
