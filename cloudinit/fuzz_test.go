package cloudinit

import (
	"bytes"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzMergeUserData feeds arbitrary user-data through the merge. It must
// never panic, and whatever it accepts must still give kiln its login user
// and its host keys.
func FuzzMergeUserData(f *testing.F) {
	for _, s := range []string{
		"",
		"#cloud-config\n",
		"#cloud-config\nusers: [default, {name: alice}]\npackages: [curl]\nruncmd:\n  - [echo, hi]\n",
		"#cloud-config\nssh_keys: {rsa_private: x}\nssh_deletekeys: false\ngrowpart: {mode: off}\n",
		"a: &a [1, 2]\nb: *a\nc: {<<: {x: 1}}\n",
		"#!/bin/sh\necho hi\n",
		"- not\n- a map\n",
		"a: [1,\n",
		"users: default\n",
		"1: 2\n",
		"a: 1\n---\nb: 2\n",
	} {
		f.Add([]byte(s))
	}
	c := testConfig(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c := c
		c.UserData = data
		ud, err := c.UserDataYAML()
		if err != nil {
			return
		}
		if !bytes.HasPrefix(ud, []byte("#cloud-config\n")) {
			t.Fatalf("no #cloud-config header:\n%s", ud)
		}
		var m map[string]any
		if err := yaml.Unmarshal(ud, &m); err != nil {
			t.Fatalf("output does not parse: %v\n%s", err, ud)
		}
		users, ok := m["users"].([]any)
		if !ok || len(users) == 0 {
			t.Fatalf("users = %#v", m["users"])
		}
		if u, _ := users[0].(map[string]any); u["name"] != DefaultUser {
			t.Fatalf("first user = %#v", users[0])
		}
		base := c.baseUserData()
		for k := range protected {
			if !reflect.DeepEqual(m[k], base[k]) {
				t.Fatalf("protected %s = %#v, want %#v", k, m[k], base[k])
			}
		}
	})
}
