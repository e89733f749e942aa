package cloudinit

import (
	"bytes"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzMergeUserData feeds arbitrary user-data through the merge. It must
// never panic, and whatever it accepts must give valid YAML headed by
// #cloud-config that reads the same to cloud-init (YAML 1.1 booleans) as
// to kiln, with kiln's login user first and unchanged, kiln's host keys,
// every top-level key the user gave, and lists concatenated, not replaced.
// Equal input gives equal output.
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
	base := c.baseUserData()
	// kiln's user as it reads back from YAML, to compare with the output.
	kilnUser := yamlRoundTrip(f, base["users"].([]any)[0])
	f.Fuzz(func(t *testing.T, data []byte) {
		c := c
		c.UserData = data
		ud, err := c.UserDataYAML()
		if err != nil {
			return
		}
		user, err := ParseUserData(data)
		if err != nil {
			t.Fatalf("UserDataYAML accepted what ParseUserData refuses: %v", err)
		}
		if !bytes.HasPrefix(ud, []byte("#cloud-config\n")) {
			t.Fatalf("no #cloud-config header:\n%s", ud)
		}
		var m map[string]any
		if err := yaml.Unmarshal(ud, &m); err != nil {
			t.Fatalf("output does not parse: %v\n%s", err, ud)
		}
		// cloud-init reads yes/no/on/off as booleans; kiln's own parser does
		// the same, so the output must mean the same to both.
		if back, err := ParseUserData(ud); err != nil || !reflect.DeepEqual(back, m) {
			t.Fatalf("output reads differently with YAML 1.1 booleans (%v):\n%s", err, ud)
		}
		users, ok := m["users"].([]any)
		if !ok || len(users) == 0 {
			t.Fatalf("users = %#v", m["users"])
		}
		if !reflect.DeepEqual(users[0], kilnUser) {
			t.Fatalf("first user = %#v, want kiln's %#v", users[0], kilnUser)
		}
		for k := range protected {
			if !reflect.DeepEqual(m[k], yamlRoundTrip(t, base[k])) {
				t.Fatalf("protected %s = %#v, want %#v", k, m[k], base[k])
			}
		}
		for k, uv := range user {
			if _, ok := m[k]; !ok {
				t.Fatalf("user-data key %q was dropped:\n%s", k, ud)
			}
			bl, bok := asList(base[k])
			ul, uok := asList(uv)
			ml, _ := asList(m[k])
			if bok && uok && !protected[k] && len(ml) != len(bl)+len(ul) {
				t.Fatalf("%s has %d entries, want kiln's %d and the user's %d:\n%s", k, len(ml), len(bl), len(ul), ud)
			}
		}
		if again, err := c.UserDataYAML(); err != nil || !bytes.Equal(again, ud) {
			t.Fatalf("same input, different output (%v):\n%s\nthen\n%s", err, ud, again)
		}
	})
}

// yamlRoundTrip returns v as it reads back after encoding to YAML, so that
// values built in Go compare equal to decoded output.
func yamlRoundTrip(t testing.TB, v any) any {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := yaml.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
