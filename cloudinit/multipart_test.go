package cloudinit

import (
	"bytes"
	"compress/gzip"
	"io"
	"mime"
	"mime/multipart"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// readMultipart parses a multipart user-data the way cloud-init's MIME
// reader does and returns its parts.
func readMultipart(t *testing.T, ud []byte) []Part {
	t.Helper()
	head, body, ok := bytes.Cut(ud, []byte("\n\n"))
	if !ok {
		t.Fatalf("no header in\n%s", ud)
	}
	var ctype string
	for _, l := range strings.Split(string(head), "\n") {
		if v, ok := strings.CutPrefix(l, "Content-Type: "); ok {
			ctype = v
		}
	}
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q: %v", ctype, err)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var parts []Part
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		parts = append(parts, Part{ContentType: p.Header.Get("Content-Type"), Filename: p.FileName(), Header: p.Header, Body: b})
	}
	return parts
}

func TestSplitUserData(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("#!/bin/sh\necho zipped\n"))
	zw.Close()
	mimeIn := "Content-Type: multipart/mixed; boundary=\"XX\"\nMIME-Version: 1.0\n\n--XX\n" +
		"Content-Type: text/x-shellscript; charset=\"us-ascii\"\nContent-Disposition: attachment; filename=\"a.sh\"\n\n#!/bin/sh\necho a\n" +
		"--XX\nContent-Type: text/cloud-config\nMerge-Type: list(append)+dict(recurse_array)+str()\n\n#cloud-config\nruncmd: [b]\n" +
		"--XX\nContent-Type: multipart/mixed; boundary=\"YY\"\n\n--YY\nContent-Type: text/cloud-boothook\n\n#cloud-boothook\necho c\n--YY--\n" +
		"--XX--\n"
	tests := []struct {
		name  string
		in    string
		types []string
	}{
		{"empty", "", nil},
		{"script", "#!/bin/sh\necho hi\n", []string{"text/x-shellscript"}},
		{"include", "#include\nhttp://10.0.2.2/x\n", []string{"text/x-include-url"}},
		{"include-once", "#include-once\nhttp://10.0.2.2/x\n", []string{"text/x-include-once-url"}},
		{"boothook", "#cloud-boothook\necho\n", []string{"text/cloud-boothook"}},
		{"jinja", "## template: jinja\n#cloud-config\na: {{ v1.instance_id }}\n", []string{"text/jinja2"}},
		{"archive", "#cloud-config-archive\n- type: text/x-shellscript\n", []string{"text/cloud-config-archive"}},
		{"cloud-config", "#cloud-config\na: 1\n", []string{"text/cloud-config"}},
		{"headerless YAML", "a: 1\n", []string{"text/cloud-config"}},
		{"gzip", gz.String(), []string{"text/x-shellscript"}},
		{"mime", mimeIn, []string{`text/x-shellscript; charset=us-ascii`, "text/cloud-config", "text/cloud-boothook"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parts, err := SplitUserData([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var types []string
			for _, p := range parts {
				types = append(types, p.ContentType)
			}
			if !reflect.DeepEqual(types, tt.types) {
				t.Errorf("types = %q, want %q", types, tt.types)
			}
			if tt.name == "mime" {
				if parts[0].Filename != "a.sh" || string(parts[0].Body) != "#!/bin/sh\necho a" {
					t.Errorf("first part = %+v", parts[0])
				}
				if parts[1].Header.Get("Merge-Type") == "" {
					t.Errorf("Merge-Type not kept: %v", parts[1].Header)
				}
			}
			if tt.name == "headerless YAML" && !bytes.HasPrefix(parts[0].Body, []byte("#cloud-config\n")) {
				t.Errorf("a headerless cloud-config part needs its header: %q", parts[0].Body)
			}
		})
	}
}

func TestSplitUserDataRefusesBombs(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(bytes.Repeat([]byte("#"), maxUserData+10))
	zw.Close()
	if _, err := SplitUserData(gz.Bytes()); err == nil || !strings.Contains(err.Error(), "decompressed") {
		t.Errorf("gzip bomb: err = %v", err)
	}
	if _, err := SplitUserData([]byte("Content-Type: multipart/mixed\n\nx")); err == nil || !strings.Contains(err.Error(), "boundary") {
		t.Errorf("no boundary: err = %v", err)
	}
	if _, err := SplitUserData([]byte("\x1f\x8bnot gzip")); err == nil || !strings.HasPrefix(err.Error(), "user-data") {
		t.Errorf("bad gzip: err = %v", err)
	}
}

// TestUserDataFileMultipart: a script user-data is passed through, with
// kiln's defaults before it and kiln's login and host keys after it.
func TestUserDataFileMultipart(t *testing.T) {
	c := testConfig(t)
	c.UserData = []byte("#!/bin/sh\necho hi > /tmp/x\n")
	ud, err := c.UserDataFile()
	if err != nil {
		t.Fatal(err)
	}
	parts := readMultipart(t, ud)
	if len(parts) != 4 {
		t.Fatalf("%d parts, want 4:\n%s", len(parts), ud)
	}
	if parts[1].ContentType != "text/x-shellscript" || string(parts[1].Body) != string(c.UserData) {
		t.Errorf("user's part = %q %q", parts[1].ContentType, parts[1].Body)
	}
	var first, users, keys map[string]any
	for i, m := range []*map[string]any{&first, nil, &users, &keys} {
		if m != nil {
			if err := yaml.Unmarshal(parts[i].Body, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, ok := first["users"]; ok {
		t.Errorf("kiln's user is in the first part; a user's users: would replace it")
	}
	if first["ssh_pwauth"] != false || first["manage_etc_hosts"] != true {
		t.Errorf("defaults missing: %v", first)
	}
	u, _ := users["users"].([]any)
	if len(u) != 1 || u[0].(map[string]any)["name"] != "kiln" || len(users) != 2 {
		t.Errorf("users part = %v", users)
	}
	// cloud-init's dict merger replaces lists wholesale under "replace":
	// the users part must say no_replace and recurse_array, lists append.
	want := []any{
		map[string]any{"name": "list", "settings": []any{"append"}},
		map[string]any{"name": "dict", "settings": []any{"no_replace", "recurse_array"}},
	}
	if !reflect.DeepEqual(users["merge_how"], want) {
		t.Errorf("merge_how = %v", users["merge_how"])
	}
	sk, _ := keys["ssh_keys"].(map[string]any)
	if sk["ed25519_public"] != testHostKey(t).Public || keys["ssh_deletekeys"] != true || keys["merge_how"] != nil {
		t.Errorf("host keys part (default merge: kiln's keys replace the user's) = %v", keys)
	}
	// cloud-config stays the single merged document it was.
	c.UserData = []byte("#cloud-config\nruncmd: [x]\n")
	ud, err = c.UserDataFile()
	if err != nil || !bytes.HasPrefix(ud, []byte("#cloud-config\n")) {
		t.Errorf("cloud-config user-data: %v\n%s", err, ud)
	}
}

func TestHostKeysConfig(t *testing.T) {
	m, err := HostKeysConfig([]HostKey{testHostKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m["users"]; ok || m["ssh_deletekeys"] != true || m["ssh_keys"] == nil {
		t.Errorf("HostKeysConfig = %v", m)
	}
	ud, err := Combine(nil, m, []byte("#cloud-config\nusers: [{name: packer}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	parts := readMultipart(t, ud)
	if len(parts) != 2 || !strings.Contains(string(parts[0].Body), "packer") {
		t.Errorf("parts = %+v", parts)
	}
	if _, err := HostKeysConfig(nil); err == nil {
		t.Error("no keys accepted")
	}
}

// FuzzSplitUserData: any bytes give parts or an error, never a panic, and
// the multipart kiln writes from them reads back with the same bodies.
func FuzzSplitUserData(f *testing.F) {
	f.Add([]byte("#!/bin/sh\necho hi\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n--b--\n"))
	f.Add([]byte("#include\nhttp://x/y\n"))
	f.Add([]byte("\x1f\x8b\x08\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		parts, err := SplitUserData(data)
		if err != nil {
			return
		}
		out, err := Multipart(parts)
		if err != nil {
			return
		}
		back := readMultipart(t, out)
		if len(back) != len(parts) {
			t.Fatalf("%d parts written, %d read back", len(parts), len(back))
		}
		for i := range parts {
			if !bytes.Equal(back[i].Body, parts[i].Body) {
				t.Fatalf("part %d body changed: %q -> %q", i, parts[i].Body, back[i].Body)
			}
		}
	})
}
