package cloudinit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/crypto/ssh"
)

// HostKey is an SSH host key kiln generates for a guest, so the client can verify it.
type HostKey struct {
	Type       string // cloud-init's key type: "ed25519" (also "rsa", "ecdsa")
	PrivatePEM string // OpenSSH private key PEM ("-----BEGIN OPENSSH PRIVATE KEY-----")
	Public     string // authorized_keys format line, e.g. "ssh-ed25519 AAAA..."
}

// NewHostKey generates an ed25519 host key. ed25519 is fast to generate and
// every supported Debian sshd accepts it.
func NewHostKey() (HostKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return HostKey{}, fmt.Errorf("cloudinit: generate host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return HostKey{}, fmt.Errorf("cloudinit: marshal host key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return HostKey{}, fmt.Errorf("cloudinit: host public key: %w", err)
	}
	return HostKey{
		Type:       "ed25519",
		PrivatePEM: string(pem.EncodeToMemory(block)),
		Public:     strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(sshPub)), "\n"),
	}, nil
}

// PublicKey parses k.Public, for use in an SSH client's host key check.
func (k HostKey) PublicKey() (ssh.PublicKey, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.Public))
	if err != nil {
		return nil, fmt.Errorf("cloudinit: %s host public key: %w", k.Type, err)
	}
	return pub, nil
}

// HostKeyCallback returns an ssh.HostKeyCallback that accepts a server only
// if it presents one of keys: the keys kiln put in the seed.
func HostKeyCallback(keys ...HostKey) (ssh.HostKeyCallback, error) {
	if len(keys) == 0 {
		return nil, errors.New("cloudinit: no host keys to verify against")
	}
	want := make([][]byte, len(keys))
	for i, k := range keys {
		pub, err := k.PublicKey()
		if err != nil {
			return nil, err
		}
		want[i] = pub.Marshal()
	}
	return func(hostname string, _ net.Addr, key ssh.PublicKey) error {
		got := key.Marshal()
		for _, w := range want {
			if bytes.Equal(got, w) {
				return nil
			}
		}
		return fmt.Errorf("cloudinit: host key mismatch for %s: got %s %s, which kiln did not put in the seed",
			hostname, key.Type(), ssh.FingerprintSHA256(key))
	}, nil
}

// keyAlgos maps the host key types cloud-init's ssh_keys accepts to the SSH
// algorithm names their public keys may carry.
var keyAlgos = map[string][]string{
	"ed25519": {ssh.KeyAlgoED25519},
	"rsa":     {ssh.KeyAlgoRSA},
	"ecdsa":   {ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521},
}

// validate checks that cloud-init will install k and that the guest will
// then present exactly k.Public: the private key must parse and match it.
func (k HostKey) validate() error {
	algos, ok := keyAlgos[k.Type]
	if !ok {
		return fmt.Errorf("cloudinit: host key type %q is not one cloud-init installs (ed25519, rsa, ecdsa)", k.Type)
	}
	pub, err := k.PublicKey()
	if err != nil {
		return err
	}
	typeOK := false
	for _, a := range algos {
		typeOK = typeOK || pub.Type() == a
	}
	if !typeOK {
		return fmt.Errorf("cloudinit: %s host key has a %s public key", k.Type, pub.Type())
	}
	signer, err := ssh.ParsePrivateKey([]byte(k.PrivatePEM))
	if err != nil {
		return fmt.Errorf("cloudinit: %s host private key: %w", k.Type, err)
	}
	if !bytes.Equal(signer.PublicKey().Marshal(), pub.Marshal()) {
		return fmt.Errorf("cloudinit: %s host key: private and public keys do not match", k.Type)
	}
	return nil
}
