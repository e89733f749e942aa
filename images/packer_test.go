package images

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestWritePackerManifest(t *testing.T) {
	m := fullManifest()
	m.BuildEnd = time.Unix(1764090242, 0).UTC()
	blob := "/store/blobs/sha256/" + strings.TrimPrefix(m.Digest, "sha256:")
	build := map[string]any{
		"name":            "hello",
		"builder_type":    "kiln",
		"build_time":      float64(1764090242),
		"files":           []any{map[string]any{"name": blob, "size": float64(123456)}},
		"artifact_id":     "hello:1.0.0",
		"packer_run_uuid": "run-2",
		"custom_data":     map[string]any{"digest": m.Digest, "version": "1.0.0", "parent": "debian:12"},
	}
	PackerBuild := map[string]any{ // as Packer itself writes one, with a field kiln does not know
		"name": "docker", "builder_type": "docker", "build_time": float64(1507245986),
		"files": []any{map[string]any{"name": "packer_example", "size": float64(102219776)}}, "artifact_id": "Container",
		"packer_run_uuid": "run-1", "custom_data": map[string]any{"my_custom_data": "example"}, "extra": true,
	}
	existing, _ := json.Marshal(map[string]any{"builds": []any{PackerBuild}, "last_run_uuid": "run-1"})

	tests := []struct {
		name     string
		existing string // "" for no file
		want     map[string]any
		wantErr  string
	}{
		{name: "new file", want: map[string]any{"builds": []any{build}, "last_run_uuid": "run-2"}},
		{name: "empty file", existing: "\n", want: map[string]any{"builds": []any{build}, "last_run_uuid": "run-2"}},
		{name: "null builds", existing: `{"builds": null}`, want: map[string]any{"builds": []any{build}, "last_run_uuid": "run-2"}},
		{name: "appends to Packer's", existing: string(existing), want: map[string]any{"builds": []any{PackerBuild, build}, "last_run_uuid": "run-2"}},
		{name: "keeps unknown fields", existing: `{"builds": [], "comment": "x"}`, want: map[string]any{"builds": []any{build}, "last_run_uuid": "run-2", "comment": "x"}},
		{name: "not json", existing: "{", wantErr: "is not valid JSON"},
		{name: "builds not a list", existing: `{"builds": {}}`, wantErr: `"builds" is not a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "packer-manifest.json")
			if tt.existing != "" {
				writeFile(t, path, tt.existing)
			}
			err := WritePackerManifest(path, m, blob, "run-2")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				if data, _ := os.ReadFile(path); string(data) != tt.existing {
					t.Errorf("a refused write changed the file to %q", data)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(path)
			var got map[string]any
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("manifest:\n%s\nwant %v", data, tt.want)
			}
			if _, err := os.Stat(path + ".lock"); !os.IsNotExist(err) {
				t.Errorf("lock file left: %v", err)
			}
		})
	}

	t.Run("no parent, size from the blob, twice", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "packer-manifest.json")
		blob := writeFile(t, filepath.Join(dir, "blob"), "12345")
		m := Manifest{SchemaVersion: 1, Name: "a", Version: "1", Digest: testDigest, Format: "qcow2"}
		for _, run := range []string{"r1", "r2"} {
			if err := WritePackerManifest(path, m, blob, run); err != nil {
				t.Fatal(err)
			}
		}
		var got struct {
			Builds []struct {
				BuildTime  int64             `json:"build_time"`
				Files      []PackerFile      `json:"files"`
				RunUUID    string            `json:"packer_run_uuid"`
				CustomData map[string]string `json:"custom_data"`
			} `json:"builds"`
			LastRunUUID string `json:"last_run_uuid"`
		}
		data, _ := os.ReadFile(path)
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Builds) != 2 || got.LastRunUUID != "r2" || got.Builds[0].RunUUID != "r1" || got.Builds[1].RunUUID != "r2" {
			t.Fatalf("manifest %s", data)
		}
		b := got.Builds[1]
		if b.Files[0].Size != 5 || b.BuildTime < time.Now().Add(-time.Minute).Unix() {
			t.Errorf("build %+v", b)
		}
		if p, ok := b.CustomData["parent"]; !ok || p != "" {
			t.Errorf("custom_data = %v, want an empty parent", b.CustomData)
		}
	})

	t.Run("invalid manifest", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "packer-manifest.json")
		if err := WritePackerManifest(path, Manifest{Name: "a"}, "/x", "r"); err == nil {
			t.Error("wrote a build without a version")
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Error("file written")
		}
	})
}
