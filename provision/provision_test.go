package provision

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestParseCloudInitStatus(t *testing.T) {
	cases := []struct {
		json, wantErr string
	}{
		{`{"status":"done","errors":[]}`, ""},
		{`{"status":"error","errors":["('locale', ProcessExecutionError())"]}`, "status error: ('locale'"},
		{`{"status":"degraded done","errors":[],"detail":"DataSourceNoCloud"}`, "degraded done"},
		{`not json`, "read cloud-init status"},
	}
	for _, c := range cases {
		err := parseCloudInitStatus([]byte(c.json))
		if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%s: err = %v, want %q", c.json, err, c.wantErr)
		}
	}
}

func TestParseCloudInitResult(t *testing.T) {
	cases := []struct {
		json, wantErr string
	}{
		{`{"v1": {"datasource": "DataSourceNoCloud [seed=/dev/vdb][dsmode=net]", "errors": []}}`, ""},
		{`{"v1": {"datasource": "DataSourceNoCloud", "errors": ["('scripts_user', RuntimeError('Runparts: 1 failures in 1 attempted commands'))"]}}`,
			"cloud-init finished with status error: ('scripts_user', RuntimeError("},
		{`{"v1": {"errors": ["a", "b"], "recoverable_errors": {"WARNING": ["w"]}}}`, "status error: a; b (see /var/log/cloud-init.log"},
		{`{}`, "not the JSON cloud-init writes"},
		{``, "not the JSON cloud-init writes"},
	}
	for _, c := range cases {
		err := parseCloudInitResult([]byte(c.json))
		if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%s: err = %v, want %q", c.json, err, c.wantErr)
		}
	}
}

func TestScriptCommand(t *testing.T) {
	cases := []struct {
		s       Script
		want    string
		wantErr bool
	}{
		{Script{Body: "echo hi", User: "root", Env: map[string]string{"B": "it's", "A": "1"}}, `sudo -n env A='1' B='it'\''s' bash -e '/tmp/s'`, false},
		{Script{Body: "echo hi", User: "www-data"}, `sudo -n -H -u www-data env bash -e '/tmp/s'`, false},
		{Script{Body: "x", User: "root; rm -rf /"}, "", true},
		{Script{Body: "#!/usr/bin/python3\n"}, `env '/tmp/s'`, false},
		{Script{Body: "x", Env: map[string]string{"BAD-NAME": "1"}}, "", true},
	}
	for _, c := range cases {
		got, err := c.s.Command("/tmp/s")
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("Command() = %q, %v; want %q", got, err, c.want)
		}
	}
}

func TestNewKeyPair(t *testing.T) {
	kp, err := NewKeyPair("kiln@test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(kp.PrivatePEM)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(kp.AuthorizedKey))
	if err != nil {
		t.Fatal(err)
	}
	if string(pub.Marshal()) != string(signer.PublicKey().Marshal()) || !strings.HasSuffix(kp.AuthorizedKey, " kiln@test") {
		t.Errorf("authorized key %q does not match the private key", kp.AuthorizedKey)
	}
}

func TestHostKeyMismatchRefused(t *testing.T) {
	guest, _ := NewKeyPair("")
	other, _ := NewKeyPair("")
	cfg, err := Target{Addr: "x", User: "kiln", Signer: guest.Signer, HostKeys: []string{guest.AuthorizedKey}}.config(0, new(string))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.HostKeyCallback("x", nil, guest.Signer.PublicKey()); err != nil {
		t.Errorf("the expected key was refused: %v", err)
	}
	if err := cfg.HostKeyCallback("x", nil, other.Signer.PublicKey()); err == nil || !strings.Contains(err.Error(), "host key mismatch") {
		t.Errorf("another key was accepted: %v", err)
	}
	if _, err := (Target{Signer: guest.Signer}).config(0, new(string)); err == nil {
		t.Error("a target with no host key was accepted")
	}
}

// TestSerialTail: the guest writes the serial log, so only its end is read
// and what it holds is escaped before it reaches a terminal.
func TestSerialTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	body := strings.Repeat("boot noise\n", 1<<20) + "\x1bM\r\x1b[K[\x1b[0;31m*\x1b[0m] Job networking.service/start running\r\r\nlogin: \x1b]0;owned\x07\nlast line\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	got := serialTail(path)
	if len(got) > 4096 || !strings.Contains(got, "last line") || strings.ContainsAny(got, "\x1b\x07\r") ||
		!strings.Contains(got, "[*] Job networking.service/start running") || !strings.Contains(got, `owned\x07`) {
		t.Errorf("serialTail = %q", got)
	}
}

// TestTrustFirstKey: only a target that asks for it accepts an unknown
// host key, and says which it saw so the caller can pin it; a password
// target offers password and keyboard-interactive auth.
func TestTrustFirstKey(t *testing.T) {
	guest, _ := NewKeyPair("")
	var seen string
	cfg, err := Target{User: "packer", Password: "pw", TrustFirstKey: true}.config(0, &seen)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.HostKeyCallback("x", nil, guest.Signer.PublicKey()); err != nil {
		t.Fatalf("first key refused: %v", err)
	}
	if !strings.HasPrefix(guest.AuthorizedKey, seen) || seen == "" {
		t.Errorf("seen = %q, want %q", seen, guest.AuthorizedKey)
	}
	if len(cfg.Auth) != 2 {
		t.Errorf("%d auth methods for a password login, want password and keyboard-interactive", len(cfg.Auth))
	}
	// Once pinned (HostKeys set), TrustFirstKey no longer applies.
	other, _ := NewKeyPair("")
	cfg, _ = Target{User: "packer", Password: "pw", TrustFirstKey: true, HostKeys: []string{seen}}.config(0, &seen)
	if err := cfg.HostKeyCallback("x", nil, other.Signer.PublicKey()); err == nil {
		t.Error("a pinned target accepted another key")
	}
}
