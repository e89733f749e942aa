package images

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	testDigest  = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testDigest2 = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

func fullManifest() Manifest {
	return Manifest{
		SchemaVersion:  1,
		Name:           "hello",
		Version:        "1.0.0",
		Digest:         testDigest,
		Format:         "qcow2",
		VirtualSize:    10 << 30,
		FileSize:       123456,
		Compression:    "zstd",
		Base:           BaseInfo{Source: "image:debian:12", Checksum: "sha256:abc"},
		Parent:         &Parent{Ref: "debian:12", Digest: testDigest2},
		BackingDigest:  testDigest2,
		TemplateDigest: "sha256:feed",
		Fingerprint:    "sha256:cafe",
		Variables:      map[string]string{"user": "kiln", "password": "(sensitive)"},
		Provisioners:   []string{"shell: apt-get install -y nginx", "file: upload site/ -> /var/www"},
		KilnVersion:    "0.1.0",
		Accelerator:    "kvm",
		BuildStart:     time.Date(2025, 11, 25, 17, 0, 0, 123456789, time.UTC),
		BuildEnd:       time.Date(2025, 11, 25, 17, 4, 2, 0, time.UTC),
		Labels:         map[string]string{"team": "infra"},
	}
}

func TestManifestRoundTrip(t *testing.T) {
	minimal := Manifest{SchemaVersion: 1, Name: "a", Version: "1", Digest: testDigest, Format: "raw"}
	for name, m := range map[string]Manifest{"full": fullManifest(), "minimal": minimal} {
		t.Run(name, func(t *testing.T) {
			data, err := encodeManifest(m)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "m.json")
			if err := WriteFileAtomic(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := ReadManifest(path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, m)
			}
		})
	}
}

// TestManifestJSONNames pins the on-disk field names, which other tools and
// older kilns read.
func TestManifestJSONNames(t *testing.T) {
	data, err := encodeManifest(fullManifest())
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema_version", "name", "version", "digest", "format", "virtual_size", "file_size",
		"compression", "base", "parent", "backing_digest", "template_digest", "fingerprint", "variables", "provisioners",
		"kiln_version", "accelerator", "build_start", "build_end", "labels"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("encoded manifest lacks %q", k)
		}
	}
	data, _ = encodeManifest(Manifest{SchemaVersion: 1, Name: "a", Version: "1", Digest: testDigest, Format: "raw"})
	for _, k := range []string{"parent", "backing_digest", "labels", "variables", "compression", "fingerprint"} {
		if strings.Contains(string(data), `"`+k+`"`) {
			t.Errorf("minimal manifest has empty %q", k)
		}
	}
}

func TestReadManifestErrors(t *testing.T) {
	good, _ := encodeManifest(fullManifest())
	replace := func(old, new string) string { return strings.Replace(string(good), old, new, 1) }
	tests := []struct {
		name, data, wantErr string
	}{
		{"not json", "{", "unexpected end of JSON"},
		{"trailing garbage", string(good) + "x", "invalid character"},
		{"no schema", replace(`"schema_version": 1`, `"schema_version": 0`), "schema_version is missing"},
		{"newer schema", replace(`"schema_version": 1`, `"schema_version": 2`), "upgrade kiln"},
		{"bad name", replace(`"name": "hello"`, `"name": "../etc"`), "name must be"},
		{"bad digest", replace(`"digest": "sha256:0123`, `"digest": "sha256:../../`), "digest"},
		{"md5 digest", replace(`"digest": "sha256:`, `"digest": "md5:`), `does not start with "sha256:"`},
		{"no format", replace(`"format": "qcow2"`, `"format": ""`), "format is empty"},
		{"bad backing", replace(`"backing_digest": "sha256:`, `"backing_digest": "sha256:x`), "backing_digest"},
		{"too big", `{"labels":{"x":"` + strings.Repeat("a", maxManifestSize) + `"}}`, "larger than"},
		{"huge fingerprint", replace(`"fingerprint": "sha256:cafe"`, `"fingerprint": "`+strings.Repeat("f", maxFingerprintLen+1)+`"`), "fingerprint is longer than"},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".json")
			if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := ReadManifest(path)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ReadManifest = %v, want error containing %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
	// Unknown fields are fine: a newer kiln may add optional ones. And a
	// manifest from before fingerprints reads with an empty one.
	old := replace(`"fingerprint": "sha256:cafe",`, ``)
	os.WriteFile(filepath.Join(dir, "old.json"), []byte(old), 0o600)
	if m, err := ReadManifest(filepath.Join(dir, "old.json")); err != nil || m.Fingerprint != "" {
		t.Errorf("manifest without a fingerprint: %+v, %v", m.Fingerprint, err)
	}
	path := filepath.Join(dir, "extra.json")
	os.WriteFile(path, []byte(replace(`"name"`, `"future_field": [1,2], "name"`)), 0o600)
	if _, err := ReadManifest(path); err != nil {
		t.Errorf("unknown field refused: %v", err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	for _, content := range []string{"one", "two, longer"} {
		if err := WriteFileAtomic(path, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("read %q, %v; want %q", got, err, content)
		}
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("writing into a missing folder succeeded")
	}
}

// FuzzReadManifest feeds arbitrary bytes to ReadManifest. Whatever it
// accepts must pass Validate, give store paths inside the store, and
// survive being written back: encoding it and reading that back gives an
// equal manifest, and encoding is stable (encode∘read∘encode = encode).
func FuzzReadManifest(f *testing.F) {
	good, _ := encodeManifest(fullManifest())
	f.Add(good)
	f.Add([]byte(`{"schema_version":1,"name":"a","version":"1","digest":"` + testDigest + `","format":"raw"}`))
	f.Add([]byte(`{"schema_version":1,"parent":{}}`))
	f.Add([]byte(`{"schema_version":1,"name":"a","version":"1","digest":"` + testDigest + `","format":"raw","parent":null,"build_end":"x"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	f.Add([]byte(`{"schema_version":1e400}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		tmp, err := os.CreateTemp(dir, "m-*.json")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(tmp.Name())
		tmp.Write(data)
		tmp.Close()
		m, err := ReadManifest(tmp.Name())
		if err != nil {
			if !strings.Contains(err.Error(), tmp.Name()) {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		// Whatever is accepted must be safe to turn into store paths and
		// survive being written back.
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an invalid manifest: %v", err)
		}
		if m.Format != "qcow2" && m.Format != "raw" {
			t.Fatalf("accepted format %q", m.Format)
		}
		s := &Store{Root: "/store"}
		if s.BlobPath(m.Digest) == "" || !strings.HasPrefix(s.manifestPath(m.Ref()), "/store/manifests/"+m.Name+"/") {
			t.Fatalf("unsafe paths for %+v", m)
		}
		if filepath.Dir(s.manifestPath(m.Ref())) != filepath.Join("/store/manifests", m.Name) {
			t.Fatalf("manifest path %s is not directly in its name's folder", s.manifestPath(m.Ref()))
		}
		again, err := encodeManifest(m)
		if err != nil {
			t.Fatalf("accepted manifest does not encode: %v\n%+v", err, m)
		}
		back, err := decodeManifest(again)
		if err != nil {
			t.Fatalf("re-encoded manifest does not decode: %v\n%s", err, again)
		}
		if !sameManifest(m, back) {
			t.Fatalf("round trip changed the manifest:\nread    %+v\nre-read %+v\nfrom\n%s", m, back, again)
		}
		if third, err := encodeManifest(back); err != nil || !bytes.Equal(third, again) {
			t.Fatalf("encoding is not stable (%v):\n%s\nthen\n%s", err, again, third)
		}
	})
}

// sameManifest reports whether a and b say the same: times compare as
// instants (JSON keeps the offset, not the *time.Location) and an empty
// map or list is the same as none (omitempty drops both).
func sameManifest(a, b Manifest) bool {
	if !a.BuildStart.Equal(b.BuildStart) || !a.BuildEnd.Equal(b.BuildEnd) {
		return false
	}
	norm := func(m Manifest) Manifest {
		m.BuildStart, m.BuildEnd = time.Time{}, time.Time{}
		if len(m.Variables) == 0 {
			m.Variables = nil
		}
		if len(m.Labels) == 0 {
			m.Labels = nil
		}
		if len(m.Provisioners) == 0 {
			m.Provisioners = nil
		}
		if len(m.Phases) == 0 {
			m.Phases = nil
		}
		return m
	}
	return reflect.DeepEqual(norm(a), norm(b))
}
