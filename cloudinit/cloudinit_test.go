package cloudinit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
)

const testAuthKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGRkcz5tB0dO0vYxBhj9kQ0Ukq1xfl1dDmbTvEMCmTQd kiln@test"

var (
	hostKeyOnce sync.Once
	hostKey     HostKey
)

// testHostKey generates one host key per test binary: tests and fuzz
// iterations need a valid key, not a fresh one.
func testHostKey(t testing.TB) HostKey {
	hostKeyOnce.Do(func() {
		var err error
		if hostKey, err = NewHostKey(); err != nil {
			t.Fatal(err)
		}
	})
	return hostKey
}

func testConfig(t testing.TB) Config {
	return Config{
		InstanceID:     "i-0123456789abcdef",
		Hostname:       "guest",
		AuthorizedKeys: []string{testAuthKey},
		HostKeys:       []HostKey{testHostKey(t)},
	}
}

func parseUserDataOutput(t testing.TB, ud []byte) map[string]any {
	t.Helper()
	if !bytes.HasPrefix(ud, []byte("#cloud-config\n")) {
		t.Fatalf("user-data does not start with #cloud-config:\n%s", ud)
	}
	var m map[string]any
	if err := yaml.Unmarshal(ud, &m); err != nil {
		t.Fatalf("user-data does not parse: %v\n%s", err, ud)
	}
	return m
}

func TestNewHostKey(t *testing.T) {
	k, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	if k.Type != "ed25519" {
		t.Errorf("Type = %q", k.Type)
	}
	if !strings.HasPrefix(k.PrivatePEM, "-----BEGIN OPENSSH PRIVATE KEY-----\n") {
		t.Errorf("PrivatePEM is not an OpenSSH key:\n%s", k.PrivatePEM)
	}
	if !strings.HasPrefix(k.Public, "ssh-ed25519 ") || strings.HasSuffix(k.Public, "\n") {
		t.Errorf("Public = %q", k.Public)
	}
	signer, err := ssh.ParsePrivateKey([]byte(k.PrivatePEM))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(signer.PublicKey().Marshal(), pub.Marshal()) {
		t.Error("private key does not match Public")
	}
	if got := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(signer.PublicKey())), "\n"); got != k.Public {
		t.Errorf("Public = %q, private key's public is %q", k.Public, got)
	}
	if err := k.validate(); err != nil {
		t.Error(err)
	}

	k2, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	if k2.Public == k.Public {
		t.Error("two NewHostKey calls returned the same key")
	}
}

func TestHostKeyCallback(t *testing.T) {
	k := testHostKey(t)
	other, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	cb, err := HostKeyCallback(k)
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := k.PublicKey()
	op, _ := other.PublicKey()
	if err := cb("guest:22", nil, kp); err != nil {
		t.Errorf("own key rejected: %v", err)
	}
	if err := cb("guest:22", nil, op); err == nil {
		t.Error("foreign key accepted")
	}
	if _, err := HostKeyCallback(); err == nil {
		t.Error("HostKeyCallback() with no keys succeeded")
	}
}

func TestNewInstanceID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewInstanceID()
		if len(id) != len("i-")+16 || !strings.HasPrefix(id, "i-") || strings.Trim(id[2:], "0123456789abcdef") != "" {
			t.Fatalf("NewInstanceID() = %q, want i-<16 hex>", id)
		}
		if seen[id] {
			t.Fatalf("NewInstanceID() repeated %q", id)
		}
		seen[id] = true
		if err := validInstanceID(id); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMetaData(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want map[string]string
	}{
		{"with hostname", Config{InstanceID: "i-1", Hostname: "web.example.org"},
			map[string]string{"instance-id": "i-1", "local-hostname": "web.example.org"}},
		{"without hostname", Config{InstanceID: "i-2"},
			map[string]string{"instance-id": "i-2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got map[string]string
			if err := yaml.Unmarshal(tt.c.MetaData(), &got); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Errorf("meta-data = %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("meta-data %s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	k := testHostKey(t)
	badPair := k
	other, _ := NewHostKey()
	badPair.Public = other.Public
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"fqdn", func(c *Config) { c.Hostname = "a.b-c.example" }, ""},
		{"no instance id", func(c *Config) { c.InstanceID = "" }, "instance ID"},
		{"slash in instance id", func(c *Config) { c.InstanceID = "a/b" }, "instance ID"},
		{"space in instance id", func(c *Config) { c.InstanceID = "a b" }, "instance ID"},
		{"bad hostname", func(c *Config) { c.Hostname = "under_score" }, "hostname"},
		{"bad hostname dash", func(c *Config) { c.Hostname = "-x" }, "hostname"},
		{"bad user", func(c *Config) { c.User = "Bad User" }, "user name"},
		{"root", func(c *Config) { c.User = "root" }, "root"},
		{"no authorized keys", func(c *Config) { c.AuthorizedKeys = nil }, "no authorized keys"},
		{"garbage authorized key", func(c *Config) { c.AuthorizedKeys = []string{"nonsense"} }, "authorized key 0"},
		{"two keys in one entry", func(c *Config) { c.AuthorizedKeys = []string{testAuthKey + "\n" + testAuthKey} }, "line break"},
		{"no host keys", func(c *Config) { c.HostKeys = nil }, "no host keys"},
		{"duplicate host key type", func(c *Config) { c.HostKeys = []HostKey{k, k} }, "two ed25519"},
		{"unknown host key type", func(c *Config) { c.HostKeys[0].Type = "dsa" }, "dsa"},
		{"mismatched type", func(c *Config) { c.HostKeys[0].Type = "rsa" }, "rsa host key has a ssh-ed25519"},
		{"mismatched pair", func(c *Config) { c.HostKeys = []HostKey{badPair} }, "do not match"},
		{"bad private key", func(c *Config) { c.HostKeys[0].PrivatePEM = "x" }, "private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(t)
			c.HostKeys = append([]HostKey(nil), c.HostKeys...)
			tt.mod(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
			if _, err2 := c.UserDataYAML(); err2 == nil {
				t.Error("UserDataYAML succeeded on an invalid config")
			}
			if err2 := WriteISO(filepath.Join(t.TempDir(), "seed.iso"), c); err2 == nil {
				t.Error("WriteISO succeeded on an invalid config")
			}
		})
	}
}

func TestBaseUserData(t *testing.T) {
	c := testConfig(t)
	ud, err := c.UserDataYAML()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Users []struct {
			Name              string   `yaml:"name"`
			Sudo              string   `yaml:"sudo"`
			Shell             string   `yaml:"shell"`
			LockPasswd        *bool    `yaml:"lock_passwd"`
			SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
			Groups            []string `yaml:"groups"`
		} `yaml:"users"`
		SSHKeys          map[string]string `yaml:"ssh_keys"`
		SSHDeleteKeys    *bool             `yaml:"ssh_deletekeys"`
		SSHGenKeyTypes   []string          `yaml:"ssh_genkeytypes"`
		DisableRoot      *bool             `yaml:"disable_root"`
		SSHPwAuth        *bool             `yaml:"ssh_pwauth"`
		ManageEtcHosts   *bool             `yaml:"manage_etc_hosts"`
		PreserveHostname *bool             `yaml:"preserve_hostname"`
		Growpart         struct {
			Mode    string   `yaml:"mode"`
			Devices []string `yaml:"devices"`
		} `yaml:"growpart"`
		ResizeRootfs *bool `yaml:"resize_rootfs"`
	}
	if err := yaml.Unmarshal(ud, &got); err != nil {
		t.Fatal(err)
	}
	raw := parseUserDataOutput(t, ud)
	for _, k := range []string{"hostname", "fqdn", "locale"} {
		if _, ok := raw[k]; ok {
			t.Errorf("user-data sets %s", k)
		}
	}
	isTrue := func(name string, b *bool, want bool) {
		t.Helper()
		if b == nil || *b != want {
			t.Errorf("%s = %v, want %v", name, b, want)
		}
	}
	if len(got.Users) != 1 {
		t.Fatalf("users = %+v, want only kiln's user (no \"default\")", got.Users)
	}
	u := got.Users[0]
	if u.Name != "kiln" || u.Sudo != "ALL=(ALL) NOPASSWD:ALL" || u.Shell != "/bin/bash" ||
		len(u.SSHAuthorizedKeys) != 1 || u.SSHAuthorizedKeys[0] != testAuthKey ||
		len(u.Groups) != 1 || u.Groups[0] != "sudo" {
		t.Errorf("user = %+v", u)
	}
	isTrue("lock_passwd", u.LockPasswd, true)
	k := testHostKey(t)
	if got.SSHKeys["ed25519_private"] != k.PrivatePEM || got.SSHKeys["ed25519_public"] != k.Public || len(got.SSHKeys) != 2 {
		t.Errorf("ssh_keys = %v", got.SSHKeys)
	}
	isTrue("ssh_deletekeys", got.SSHDeleteKeys, true)
	if !reflect.DeepEqual(got.SSHGenKeyTypes, []string{"ed25519"}) {
		t.Errorf("ssh_genkeytypes = %#v, want [ed25519]", got.SSHGenKeyTypes)
	}
	isTrue("disable_root", got.DisableRoot, true)
	isTrue("ssh_pwauth", got.SSHPwAuth, false)
	isTrue("manage_etc_hosts", got.ManageEtcHosts, true)
	isTrue("preserve_hostname", got.PreserveHostname, false)
	isTrue("resize_rootfs", got.ResizeRootfs, true)
	if got.Growpart.Mode != "auto" || len(got.Growpart.Devices) != 1 || got.Growpart.Devices[0] != "/" {
		t.Errorf("growpart = %+v", got.Growpart)
	}

	c.User = "builder"
	ud, err = c.UserDataYAML()
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(ud, &got); err != nil {
		t.Fatal(err)
	}
	if got.Users[0].Name != "builder" {
		t.Errorf("user name = %q, want builder", got.Users[0].Name)
	}

	// Deterministic output.
	again, err := c.UserDataYAML()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ud, again) {
		t.Error("UserDataYAML is not deterministic")
	}
}

func TestWriteISO(t *testing.T) {
	netcfg := []byte("version: 2\nethernets:\n  id0:\n    match: {name: \"e*\"}\n    dhcp4: true\n")
	tests := []struct {
		name      string
		netcfg    []byte
		wantFiles []string
	}{
		{"without network-config", nil, []string{"meta-data", "user-data"}},
		{"with network-config", netcfg, []string{"meta-data", "network-config", "user-data"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(t)
			c.NetworkConfig = tt.netcfg
			c.UserData = []byte("#cloud-config\npackages: [curl]\n")
			dir := t.TempDir()
			path := filepath.Join(dir, "seed.iso")
			if err := WriteISO(path, c); err != nil {
				t.Fatal(err)
			}

			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("temporary files left behind: %v", ents)
			}

			label, err := ReadISOLabel(path)
			if err != nil {
				t.Fatal(err)
			}
			if label != "cidata" {
				t.Errorf("label = %q, want cidata", label)
			}

			files, err := ReadISO(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(files) != len(tt.wantFiles) {
				t.Errorf("files = %v, want %v", keys(files), tt.wantFiles)
			}
			for _, name := range tt.wantFiles {
				if _, ok := files[name]; !ok {
					t.Errorf("no %s in ISO (got %v)", name, keys(files))
				}
			}
			if tt.netcfg != nil && !bytes.Equal(files["network-config"], tt.netcfg) {
				t.Errorf("network-config = %q", files["network-config"])
			}

			if !bytes.Equal(files["meta-data"], c.MetaData()) {
				t.Errorf("meta-data = %q", files["meta-data"])
			}
			var md map[string]string
			if err := yaml.Unmarshal(files["meta-data"], &md); err != nil {
				t.Fatal(err)
			}
			if md["instance-id"] != c.InstanceID || md["local-hostname"] != c.Hostname {
				t.Errorf("meta-data = %v", md)
			}

			ud := files["user-data"]
			m := parseUserDataOutput(t, ud)
			if !strings.Contains(string(ud), "name: kiln") || !strings.Contains(string(ud), testAuthKey) {
				t.Errorf("user-data lacks the user or its key:\n%s", ud)
			}
			sk, _ := m["ssh_keys"].(map[string]any)
			if sk["ed25519_public"] != c.HostKeys[0].Public || sk["ed25519_private"] != c.HostKeys[0].PrivatePEM {
				t.Errorf("user-data ssh_keys = %v", sk)
			}
			if pk, _ := m["packages"].([]any); len(pk) != 1 || pk[0] != "curl" {
				t.Errorf("user's packages not merged: %v", m["packages"])
			}

			// Overwriting an existing seed works and keeps the mode.
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := WriteISO(path, c); err != nil {
				t.Fatal(err)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
				t.Errorf("mode after rewrite = %v, want 0600", fi.Mode().Perm())
			}
		})
	}
}

// TestISONamesXorriso checks the names an independent ISO 9660 reader sees,
// since cloud-init ignores a seed whose files are not named exactly
// meta-data and user-data.
func TestISONamesXorriso(t *testing.T) {
	xorriso, err := exec.LookPath("xorriso")
	if err != nil {
		t.Skip("xorriso not installed")
	}
	c := testConfig(t)
	c.NetworkConfig = []byte("version: 2\n")
	path := filepath.Join(t.TempDir(), "seed.iso")
	if err := WriteISO(path, c); err != nil {
		t.Fatal(err)
	}
	// -rr_reading off: read the plain ISO 9660 names, as Linux does without Rock Ridge.
	out, err := exec.Command(xorriso, "-rockridge", "off", "-indev", path, "-pvd_info", "-lsl", "/").CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"'meta-data'", "'user-data'", "'network-config'", "Volume Id    : cidata"} {
		if !strings.Contains(s, want) {
			t.Errorf("xorriso output lacks %s:\n%s", want, s)
		}
	}
}

func keys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
