// Package cloudinit builds the cloud-init NoCloud seed that kiln attaches to
// a guest: an ISO 9660 image labelled "cidata" holding meta-data, user-data
// and, optionally, network-config.
//
// kiln's user-data creates kiln's login user and installs SSH host keys that
// kiln generated itself, so the SSH client can verify the guest without
// trust-on-first-use. The user's own cloud-config is merged on top (see
// Merge), except for the keys kiln needs for that verification.
//
// The seed contains a host private key, so WriteISO creates it with mode
// 0600 and callers should treat it as a secret.
package cloudinit

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
)

// Names inside the seed. cloud-init's NoCloud datasource finds the seed by
// this volume label and reads exactly these file names.
const (
	VolumeLabel       = "cidata"
	MetaDataFile      = "meta-data"
	UserDataFile      = "user-data"
	NetworkConfigFile = "network-config"
)

// DefaultUser is the login user kiln creates when Config.User is empty.
const DefaultUser = "kiln"

// cloudConfigHeader marks user-data as cloud-config; cloud-init ignores
// user-data of unknown type, so the header is mandatory in the output.
const cloudConfigHeader = "#cloud-config\n"

// Config describes one boot of one guest.
type Config struct {
	InstanceID     string   // unique per boot; NewInstanceID() makes one like "i-<16 hex>"
	Hostname       string   // written to meta-data as local-hostname; may be empty
	User           string   // kiln's login user; "" means DefaultUser
	AuthorizedKeys []string // authorized_keys lines for User; at least one is required
	HostKeys       []HostKey
	UserData       []byte // the user's own cloud-config (YAML, optionally starting with "#cloud-config"), merged in
	NetworkConfig  []byte // optional; written as network-config when non-empty
}

// NewInstanceID returns a random instance ID like "i-0123456789abcdef".
// cloud-init runs its per-instance modules (users, SSH keys, growpart) only
// when the instance ID changes, so every fresh seed needs a new one.
func NewInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead)
	return "i-" + hex.EncodeToString(b[:])
}

func (c Config) user() string {
	if c.User == "" {
		return DefaultUser
	}
	return c.User
}

var (
	// A conservative POSIX login name (what useradd accepts by default on Debian).
	userRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	// One RFC 1123 label; a hostname is one or more separated by dots.
	labelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
)

// Validate reports configuration mistakes before they turn into a guest that
// boots but cannot be reached. WriteISO and UserDataYAML call it.
func (c Config) Validate() error {
	if err := validInstanceID(c.InstanceID); err != nil {
		return err
	}
	if c.Hostname != "" {
		if len(c.Hostname) > 253 {
			return fmt.Errorf("cloudinit: hostname %q is longer than 253 characters", c.Hostname)
		}
		for _, l := range strings.Split(c.Hostname, ".") {
			if !labelRE.MatchString(l) {
				return fmt.Errorf("cloudinit: invalid hostname %q: labels must be 1-63 letters, digits or inner hyphens", c.Hostname)
			}
		}
	}
	u := c.user()
	if !userRE.MatchString(u) {
		return fmt.Errorf("cloudinit: invalid user name %q", u)
	}
	if u == "root" {
		return errors.New(`cloudinit: user must not be "root": kiln's user-data disables root login`)
	}
	if len(c.AuthorizedKeys) == 0 {
		return fmt.Errorf("cloudinit: no authorized keys for user %q: the password is locked, so kiln could not log in", u)
	}
	for i, k := range c.AuthorizedKeys {
		k = strings.TrimSpace(k)
		if strings.ContainsAny(k, "\r\n") {
			return fmt.Errorf("cloudinit: authorized key %d contains a line break; pass one key per entry", i)
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
			return fmt.Errorf("cloudinit: authorized key %d: %w", i, err)
		}
	}
	if len(c.HostKeys) == 0 {
		return errors.New("cloudinit: no host keys: kiln replaces the guest's host keys with its own so the client can verify them")
	}
	seen := map[string]bool{}
	for _, k := range c.HostKeys {
		if err := k.validate(); err != nil {
			return err
		}
		if seen[k.Type] {
			return fmt.Errorf("cloudinit: two %s host keys: cloud-init keeps one key per type", k.Type)
		}
		seen[k.Type] = true
	}
	return nil
}

// validInstanceID rejects IDs that break cloud-init, which uses the ID as a
// directory name under /var/lib/cloud/instances.
func validInstanceID(id string) error {
	if id == "" {
		return errors.New("cloudinit: empty instance ID (use NewInstanceID)")
	}
	if id == "." || id == ".." || strings.ContainsAny(id, "/\\") {
		return fmt.Errorf("cloudinit: invalid instance ID %q", id)
	}
	for _, r := range id {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("cloudinit: instance ID %q contains whitespace or control characters", id)
		}
	}
	return nil
}

// MetaData returns the meta-data file: instance-id and local-hostname.
// The hostname goes here rather than into user-data so that cloud-init sets
// it (and /etc/hosts, via manage_etc_hosts) from one place.
func (c Config) MetaData() []byte {
	md := struct {
		InstanceID    string `yaml:"instance-id"`
		LocalHostname string `yaml:"local-hostname,omitempty"`
	}{c.InstanceID, c.Hostname}
	out, err := yaml.Marshal(md)
	if err != nil { // two strings cannot fail to marshal
		panic("cloudinit: marshal meta-data: " + err.Error())
	}
	return out
}

// baseUserData is kiln's own cloud-config, before the user's is merged in.
func (c Config) baseUserData() map[string]any {
	keys := make([]any, len(c.AuthorizedKeys))
	for i, k := range c.AuthorizedKeys {
		keys[i] = strings.TrimSpace(k)
	}
	sshKeys := map[string]any{}
	for _, k := range c.HostKeys {
		priv := k.PrivatePEM
		if !strings.HasSuffix(priv, "\n") {
			priv += "\n" // sshd rejects a key file whose last line is unterminated
		}
		sshKeys[k.Type+"_private"] = priv
		sshKeys[k.Type+"_public"] = strings.TrimSpace(k.Public)
	}
	return map[string]any{
		// Only kiln's user: no "default" entry, so the image's debian user is
		// not created.
		"users": []any{map[string]any{
			"name":                c.user(),
			"sudo":                "ALL=(ALL) NOPASSWD:ALL",
			"shell":               "/bin/bash",
			"lock_passwd":         true,
			"ssh_authorized_keys": keys,
			"groups":              []any{"sudo"},
		}},
		// Exactly kiln's host keys: delete the image's; with ssh_keys
		// given cloud-init generates none. ssh_genkeytypes names only the
		// type kiln gives (its schema wants at least one), so a cloud-init
		// that generated anyway would find that key present.
		"ssh_keys":        sshKeys,
		"ssh_deletekeys":  true,
		"ssh_genkeytypes": []any{"ed25519"},

		"disable_root":      true,
		"ssh_pwauth":        false,
		"manage_etc_hosts":  true,
		"preserve_hostname": false,
		"growpart":          map[string]any{"mode": "auto", "devices": []any{"/"}},
		"resize_rootfs":     true,
		// No locale: setting one runs locale-gen, which fails on images
		// without the locales package; Debian images default to C.UTF-8.
	}
}

// UserDataYAML returns the user-data file: "#cloud-config\n" followed by
// kiln's cloud-config merged with c.UserData (see Merge). Keys are sorted,
// so equal inputs give equal output.
func (c Config) UserDataYAML() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	user, err := ParseUserData(c.UserData)
	if err != nil {
		return nil, err
	}
	merged := Merge(c.baseUserData(), user)
	if _, ok := asList(merged["users"]); !ok {
		return nil, errors.New(`user-data: "users" must be a list: kiln adds its login user to it`)
	}
	body, err := encodeYAML(merged)
	if err != nil {
		return nil, fmt.Errorf("user-data: %w", err)
	}
	return append([]byte(cloudConfigHeader), body...), nil
}

// encodeYAML marshals v with 2-space indentation, quoting plain strings
// that cloud-init's YAML 1.1 parser (PyYAML) would read differently.
// yaml.v3 already quotes YAML 1.1 booleans and sexagesimal numbers; "=" is
// the remaining case (PyYAML's "value" tag, which safe_load rejects).
func encodeYAML(v any) ([]byte, error) {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	walkScalars(&n, func(s *yaml.Node) {
		if s.Style == 0 && s.ShortTag() == "!!str" && s.Value == "=" {
			s.Style = yaml.DoubleQuotedStyle
		}
	})
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// walkScalars calls f on every scalar node under n. It does not follow
// aliases: the anchored node is reached once, where it is defined.
func walkScalars(n *yaml.Node, f func(*yaml.Node)) {
	if n.Kind == yaml.ScalarNode {
		f(n)
	}
	for _, c := range n.Content {
		walkScalars(c, f)
	}
}
