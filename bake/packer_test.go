package bake

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/cloudinit"
)

func TestSubstituteHTTP(t *testing.T) {
	got := substituteHTTP([]string{"-smbios", "type=1,serial=ds=nocloud-net;s=http://{{ .HTTPIP }}:{{.HTTPPort}}/", "x={{ .HTTPAddr }}", "{{ .Other }}"}, "10.0.2.2", 8123)
	want := []string{"-smbios", "type=1,serial=ds=nocloud-net;s=http://10.0.2.2:8123/", "x=10.0.2.2:8123", "{{ .Other }}"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q", got)
	}
}

func TestPackerVars(t *testing.T) {
	b := &builder{spec: Spec{BuildName: "debian"}}
	got := b.packerVars(map[string]string{"A": "it's", "B": "x y"})
	want := `A='it'"'"'s' B='x y' PACKER_BUILDER_TYPE='qemu' PACKER_BUILD_NAME='debian'`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func newTestBuilder(t *testing.T) (*builder, string) {
	t.Helper()
	dir := t.TempDir()
	art := filepath.Join(dir, "out", "disk.qcow2")
	os.MkdirAll(filepath.Dir(art), 0o755)
	os.WriteFile(art, []byte("not really an image"), 0o644)
	var out bytes.Buffer
	b := &builder{spec: Spec{BuildName: "debian"}, dir: dir, artifacts: []string{art}, out: newLineWriter(&out, "", nil, nil)}
	return b, dir
}

// TestPostProcessors runs manifest, checksum, compress and shell-local on a
// fake artifact and reads back what each wrote, in the formats Packer uses.
func TestPostProcessors(t *testing.T) {
	b, dir := newTestBuilder(t)
	wd, _ := os.Getwd()
	os.Chdir(dir) // Packer writes relative outputs in the working directory
	defer os.Chdir(wd)
	b.spec.PostProcessors = []PostProcessor{
		{Type: "checksum", Chain: 1, ChecksumTypes: []string{"sha256", "md5"}, Output: "sums/{{.BuildName}}_{{.ChecksumType}}.checksum"},
		{Type: "compress", Chain: 2, Output: "{{ .BuildName }}.tar.gz", CompressionLevel: -1},
		{Type: "manifest", Chain: 2, CustomData: map[string]string{"k": "v"}},
		{Type: "shell-local", Chain: 3, Inline: []string{"echo \"$PACKER_BUILD_NAME $GREETING\" > shell-local.out"}, Env: map[string]string{"GREETING": "hi"}},
	}
	if err := b.postProcess(context.Background()); err != nil {
		t.Fatal(err)
	}
	sum, _ := os.ReadFile("sums/debian_sha256.checksum")
	if !strings.HasSuffix(string(sum), "\tdisk.qcow2\n") || len(strings.Fields(string(sum))[0]) != 64 {
		t.Errorf("sha256 checksum file = %q", sum)
	}
	if md5, _ := os.ReadFile("sums/debian_md5.checksum"); len(strings.Fields(string(md5))[0]) != 32 {
		t.Errorf("md5 checksum file = %q", md5)
	}
	f, err := os.Open("debian.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	zr, _ := gzip.NewReader(f)
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != "disk.qcow2" {
		t.Errorf("tar entry %v, %v", hdr, err)
	}
	f.Close()
	var m struct {
		Builds []struct {
			Name, BuilderType, ArtifactID string
			Files                         []struct{ Name string }
			CustomData                    map[string]string `json:"custom_data"`
		}
	}
	data, _ := os.ReadFile("packer-manifest.json")
	json.Unmarshal(data, &m)
	// In the chain after compress, the manifest records the archive.
	if len(m.Builds) != 1 || m.Builds[0].Files[0].Name != "debian.tar.gz" || m.Builds[0].CustomData["k"] != "v" {
		t.Errorf("manifest = %s", data)
	}
	if out, _ := os.ReadFile("shell-local.out"); string(out) != "debian hi\n" {
		t.Errorf("shell-local wrote %q", out)
	}
}

func TestWriteArchive(t *testing.T) {
	_, dir := newTestBuilder(t)
	src := filepath.Join(dir, "out", "disk.qcow2")
	var buf bytes.Buffer
	if err := writeArchive(&buf, "x.zip", []string{src}, -1); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil || len(zr.File) != 1 || zr.File[0].Name != "disk.qcow2" {
		t.Errorf("zip: %v", err)
	}
	buf.Reset()
	if err := writeArchive(&buf, "x.gz", []string{src}, 9); err != nil {
		t.Fatal(err)
	}
	zg, _ := gzip.NewReader(&buf)
	if data, _ := io.ReadAll(zg); string(data) != "not really an image" {
		t.Errorf("gz holds %q", data)
	}
	if err := writeArchive(io.Discard, "x.gz", []string{src, src}, 9); err == nil {
		t.Error(".gz of two files accepted")
	}
	if err := writeArchive(io.Discard, "x.lz4", []string{src}, 9); err == nil {
		t.Error(".lz4 accepted")
	}
}

// TestServeHTTP: the template's http_directory is served, its user-data
// with kiln's host keys added, http_content first.
func TestServeHTTP(t *testing.T) {
	b, dir := newTestBuilder(t)
	httpDir := filepath.Join(dir, "http")
	os.MkdirAll(httpDir, 0o755)
	os.WriteFile(filepath.Join(httpDir, "user-data"), []byte("#cloud-config\nusers: [{name: packer}]\n"), 0o644)
	os.WriteFile(filepath.Join(httpDir, "meta-data"), []byte("instance-id: x\n"), 0o644)
	key, err := cloudinit.NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := cloudinit.HostKeysConfig([]cloudinit.HostKey{key})
	pin := func(ud []byte) ([]byte, bool) {
		out, err := cloudinit.Combine(nil, keys, ud)
		return out, err == nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	port, pinned, err := b.serveHTTP(ctx, &Seed{HTTPDir: httpDir, HTTPContent: map[string][]byte{"extra/file": []byte("x")}}, pin)
	if err != nil || !pinned {
		t.Fatalf("serveHTTP: %v, pinned %v", err, pinned)
	}
	defer b.stopHTTP()
	get := func(p string) string {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return string(data)
	}
	ud := get("/user-data")
	if !strings.Contains(ud, "multipart/mixed") || !strings.Contains(ud, "name: packer") || !strings.Contains(ud, key.Public) {
		t.Errorf("user-data served:\n%s", ud)
	}
	if get("/meta-data") != "instance-id: x\n" || get("/extra/file") != "x" {
		t.Errorf("files not served as they are")
	}
}
