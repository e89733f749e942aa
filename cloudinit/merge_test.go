package cloudinit

import (
	"reflect"
	"strings"
	"testing"
)

func TestMerge(t *testing.T) {
	tests := []struct {
		name       string
		base, user map[string]any
		want       map[string]any
	}{
		{"nil user", map[string]any{"a": 1}, nil, map[string]any{"a": 1}},
		{"nil base", nil, map[string]any{"a": 1}, map[string]any{"a": 1}},
		{"new key added",
			map[string]any{"a": 1}, map[string]any{"b": 2},
			map[string]any{"a": 1, "b": 2}},
		{"scalar overridden",
			map[string]any{"manage_etc_hosts": true, "ssh_pwauth": false},
			map[string]any{"manage_etc_hosts": false},
			map[string]any{"manage_etc_hosts": false, "ssh_pwauth": false}},
		{"lists appended base first",
			map[string]any{"users": []any{"kiln"}},
			map[string]any{"users": []any{"alice", "bob"}},
			map[string]any{"users": []any{"kiln", "alice", "bob"}}},
		{"maps merged recursively",
			map[string]any{"growpart": map[string]any{"mode": "auto", "devices": []any{"/"}}},
			map[string]any{"growpart": map[string]any{"ignore_growroot_disabled": true, "devices": []any{"/var"}}},
			map[string]any{"growpart": map[string]any{"mode": "auto", "ignore_growroot_disabled": true, "devices": []any{"/", "/var"}}}},
		{"nested scalar overridden",
			map[string]any{"growpart": map[string]any{"mode": "auto"}},
			map[string]any{"growpart": map[string]any{"mode": "off"}},
			map[string]any{"growpart": map[string]any{"mode": "off"}}},
		{"protected keys keep base",
			map[string]any{"ssh_keys": map[string]any{"ed25519_public": "K"}, "ssh_deletekeys": true, "ssh_genkeytypes": []any{"ed25519"}},
			map[string]any{"ssh_keys": map[string]any{"rsa_public": "X"}, "ssh_deletekeys": false, "ssh_genkeytypes": []any{"rsa"}},
			map[string]any{"ssh_keys": map[string]any{"ed25519_public": "K"}, "ssh_deletekeys": true, "ssh_genkeytypes": []any{"ed25519"}}},
		{"protection is top-level only",
			map[string]any{"x": map[string]any{"ssh_keys": 1}},
			map[string]any{"x": map[string]any{"ssh_keys": 2}},
			map[string]any{"x": map[string]any{"ssh_keys": 2}}},
		{"user null keeps base",
			map[string]any{"runcmd": []any{"a"}},
			map[string]any{"runcmd": nil},
			map[string]any{"runcmd": []any{"a"}}},
		{"type mismatch: user wins",
			map[string]any{"growpart": map[string]any{"mode": "auto"}},
			map[string]any{"growpart": "off"},
			map[string]any{"growpart": "off"}},
		{"user list for base map: user wins",
			map[string]any{"a": map[string]any{"b": 1}},
			map[string]any{"a": []any{1}},
			map[string]any{"a": []any{1}}},
		{"other slice and map types",
			map[string]any{"l": []string{"a"}, "m": map[string]string{"k": "v"}},
			map[string]any{"l": []any{"b"}, "m": map[string]any{"k2": "v2"}},
			map[string]any{"l": []any{"a", "b"}, "m": map[string]any{"k": "v", "k2": "v2"}}},
		{"non-string-key map is a scalar",
			map[string]any{"m": map[string]any{"a": 1}},
			map[string]any{"m": map[any]any{1: "x"}},
			map[string]any{"m": map[any]any{1: "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Merge(tt.base, tt.user)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Merge =\n %#v\nwant\n %#v", got, tt.want)
			}
		})
	}
}

func TestMergeDoesNotModifyInputs(t *testing.T) {
	base := map[string]any{"l": []any{"a"}, "m": map[string]any{"k": 1}}
	user := map[string]any{"l": []any{"b"}, "m": map[string]any{"k": 2, "j": 3}, "n": 4}
	Merge(base, user)
	if !reflect.DeepEqual(base, map[string]any{"l": []any{"a"}, "m": map[string]any{"k": 1}}) {
		t.Errorf("base modified: %v", base)
	}
	if !reflect.DeepEqual(user, map[string]any{"l": []any{"b"}, "m": map[string]any{"k": 2, "j": 3}, "n": 4}) {
		t.Errorf("user modified: %v", user)
	}
}

func TestParseUserData(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]any
		wantErr string
	}{
		{"empty", "", nil, ""},
		{"header only", "#cloud-config\n", nil, ""},
		{"comments only", "# nothing here\n", nil, ""},
		{"null document", "#cloud-config\n~\n", nil, ""},
		{"with header", "#cloud-config\npackages: [curl]\n", map[string]any{"packages": []any{"curl"}}, ""},
		{"without header", "packages: [curl]\n", map[string]any{"packages": []any{"curl"}}, ""},
		{"BOM", "\ufeff#cloud-config\na: 1\n", map[string]any{"a": 1}, ""},
		{"explicit document start", "#cloud-config\n---\na: 1\n", map[string]any{"a": 1}, ""},
		{"YAML 1.1 booleans", "a: yes\nb: off\nc: 'yes'\nd: [on, No]\ne: y\nyes: 1\n",
			map[string]any{"a": true, "b": false, "c": "yes", "d": []any{true, false}, "e": "y", "yes": 1}, ""},
		{"anchors and merge keys", "x: &x {a: 1}\ny:\n  <<: *x\n  b: 2\n",
			map[string]any{"x": map[string]any{"a": 1}, "y": map[string]any{"a": 1, "b": 2}}, ""},
		{"bad YAML", "#cloud-config\na: [1,\n", nil, "must be a cloud-config YAML mapping"},
		{"tab indentation", "a:\n\tb: 1\n", nil, "must be a cloud-config YAML mapping"},
		{"list", "#cloud-config\n- a\n- b\n", nil, "top level is a list: must be a cloud-config YAML mapping"},
		{"scalar", "just words\n", nil, "must be a cloud-config YAML mapping"},
		{"two documents", "a: 1\n---\nb: 2\n", nil, "more than one YAML document"},
		{"int key", "1: a\n", nil, "string keys"},
		{"script", "#!/bin/sh\necho hi\n", nil, "only #cloud-config YAML can be merged"},
		{"include", "#include\nhttp://example.com/x\n", nil, "only #cloud-config YAML can be merged"},
		{"archive", "#cloud-config-archive\n- type: foo\n", nil, "cloud-config archive"},
		{"boothook", "#cloud-boothook\necho\n", nil, "only #cloud-config YAML can be merged"},
		{"jinja", "## template: jinja\n#cloud-config\na: {{ x }}\n", nil, "template"},
		{"mime", "Content-Type: multipart/mixed; boundary=x\n", nil, "MIME"},
		{"gzip", "\x1f\x8b\x08\x00", nil, "gzip"},
		{"recursive alias", "a: &a [*a]\n", nil, "must be a cloud-config YAML mapping"},
		{"alias bomb", "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" +
			"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n" +
			"g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n", nil, "excessive aliasing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUserData([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseUserData() error = %v, want one containing %q", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "user-data") {
					t.Errorf("error %q does not say it is about user-data", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseUserData() =\n %#v\nwant\n %#v", got, tt.want)
			}
		})
	}
}

// TestUserDataYAMLMerge checks the merged document cloud-init will read.
func TestUserDataYAMLMerge(t *testing.T) {
	other, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      string
		check   func(t *testing.T, m map[string]any)
		wantErr string
	}{
		{"users appended after kiln's", "#cloud-config\nusers:\n  - default\n  - name: alice\n",
			func(t *testing.T, m map[string]any) {
				users := m["users"].([]any)
				if len(users) != 3 || users[0].(map[string]any)["name"] != "kiln" || users[1] != "default" ||
					users[2].(map[string]any)["name"] != "alice" {
					t.Errorf("users = %v", users)
				}
			}, ""},
		{"packages, runcmd and write_files kept", "packages: [curl]\nruncmd: [[touch, /x]]\nwrite_files:\n  - path: /etc/x\n    content: hi\n",
			func(t *testing.T, m map[string]any) {
				if !reflect.DeepEqual(m["packages"], []any{"curl"}) ||
					!reflect.DeepEqual(m["runcmd"], []any{[]any{"touch", "/x"}}) ||
					len(m["write_files"].([]any)) != 1 {
					t.Errorf("merged = %v", m)
				}
			}, ""},
		{"scalar override", "manage_etc_hosts: false\nssh_pwauth: yes\n",
			func(t *testing.T, m map[string]any) {
				if m["manage_etc_hosts"] != false || m["ssh_pwauth"] != true {
					t.Errorf("manage_etc_hosts = %v, ssh_pwauth = %v", m["manage_etc_hosts"], m["ssh_pwauth"])
				}
			}, ""},
		{"map merge", "growpart:\n  devices: [/srv]\n",
			func(t *testing.T, m map[string]any) {
				gp := m["growpart"].(map[string]any)
				if gp["mode"] != "auto" || !reflect.DeepEqual(gp["devices"], []any{"/", "/srv"}) {
					t.Errorf("growpart = %v", gp)
				}
			}, ""},
		{"protected keys kept", "ssh_keys:\n  ed25519_private: x\n  ed25519_public: " + other.Public + "\nssh_deletekeys: false\nssh_genkeytypes: [rsa]\n",
			func(t *testing.T, m map[string]any) {
				k := testHostKey(t)
				sk := m["ssh_keys"].(map[string]any)
				if len(sk) != 2 || sk["ed25519_public"] != k.Public || sk["ed25519_private"] != k.PrivatePEM {
					t.Errorf("ssh_keys = %v", sk)
				}
				if m["ssh_deletekeys"] != true || !reflect.DeepEqual(m["ssh_genkeytypes"], []any{"ed25519"}) {
					t.Errorf("ssh_deletekeys = %v, ssh_genkeytypes = %v", m["ssh_deletekeys"], m["ssh_genkeytypes"])
				}
			}, ""},
		{"strings PyYAML would misread stay strings", "runcmd: [[echo, '=', '1:20', 'on', '0644']]\n",
			func(t *testing.T, m map[string]any) {
				if !reflect.DeepEqual(m["runcmd"], []any{[]any{"echo", "=", "1:20", "on", "0644"}}) {
					t.Errorf("runcmd = %#v", m["runcmd"])
				}
			}, ""},
		{"users not a list", "users: default\n", nil, `"users" must be a list`},
		{"bad YAML", "a: : b\n", nil, "must be a cloud-config YAML mapping"},
		{"script", "#!/bin/bash\necho hi\n", nil, "only #cloud-config YAML can be merged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(t)
			c.UserData = []byte(tt.in)
			ud, err := c.UserDataYAML()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("UserDataYAML() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := parseUserDataOutput(t, ud)
			if !strings.Contains(string(ud), `- "="`) && strings.Contains(tt.in, "'='") {
				t.Errorf("\"=\" not quoted for PyYAML:\n%s", ud)
			}
			tt.check(t, m)
		})
	}
}
