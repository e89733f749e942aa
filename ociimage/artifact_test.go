package ociimage

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kiln-dev/kiln/images"
)

func fakeChain() []images.Manifest {
	d := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	base := images.Manifest{SchemaVersion: 1, Name: "debian", Version: "12", Digest: d("a"), Format: "qcow2", FileSize: 5 << 20,
		BuildEnd: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	top := images.Manifest{SchemaVersion: 1, Name: "hello", Version: "1.0.0+b7", Digest: d("b"), Format: "qcow2", FileSize: 3 << 20,
		BackingDigest: base.Digest, Parent: &images.Parent{Ref: "debian:12", Digest: base.Digest},
		TemplateDigest: d("c"), Base: images.BaseInfo{Source: "image:debian:12"}, BuildEnd: time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)}
	return []images.Manifest{base, top}
}

// manifestFor builds the manifest Push would, with made-up layer digests.
func manifestFor(t *testing.T, chain []images.Manifest, chunk int64) ([]byte, Config) {
	t.Helper()
	cfg := Config{Chain: chain}
	var layers []ocispec.Descriptor
	for i, c := range Plan(chain, chunk) {
		layers = append(layers, c.Layer(digest.FromString(strconv.Itoa(i))))
	}
	cfgJSON, _ := json.Marshal(cfg)
	data, err := BuildManifest(cfg, ocispec.Descriptor{MediaType: ConfigMediaType, Digest: digest.FromBytes(cfgJSON), Size: int64(len(cfgJSON))}, layers)
	if err != nil {
		t.Fatal(err)
	}
	return data, cfg
}

func TestPlanAndManifestRoundTrip(t *testing.T) {
	chain := fakeChain()
	chunks := Plan(chain, 2<<20)
	if len(chunks) != 5 { // 5 MiB in 2+2+1, 3 MiB in 2+1
		t.Fatalf("%d chunks", len(chunks))
	}
	if c := chunks[2]; c.Offset != 4<<20 || c.Size != 1<<20 || c.Index != 2 || c.Count != 3 {
		t.Errorf("third chunk %+v", c)
	}
	data, cfg := manifestFor(t, chain, 2<<20)
	m, blobs, err := parseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := matchChain(cfg, blobs); err != nil {
		t.Fatal(err)
	}
	a := m.Annotations
	if a[ocispec.AnnotationTitle] != "hello" || a[ocispec.AnnotationVersion] != "1.0.0+b7" || a[ocispec.AnnotationCreated] != "2026-02-03T04:05:06Z" ||
		a[ocispec.AnnotationRevision] != chain[1].TemplateDigest || m.ArtifactType != ArtifactType {
		t.Errorf("annotations %v, type %s", a, m.ArtifactType)
	}
	if got := m.Layers[3].Annotations[ocispec.AnnotationTitle]; got != "hello_1.0.0+b7.qcow2.part0001" {
		t.Errorf("layer title %q", got)
	}
	if TagFor("1.0.0+b7") != "1.0.0_b7" {
		t.Error("tag of a version with +")
	}
}

// TestParseManifestRefusesWhatKilnDidNotWrite: a registry is outside
// input; each of these must be refused before a byte of a blob is read.
func TestParseManifestRefusesWhatKilnDidNotWrite(t *testing.T) {
	good, _ := manifestFor(t, fakeChain(), 2<<20)
	edit := func(f func(m *ocispec.Manifest)) []byte {
		var m ocispec.Manifest
		json.Unmarshal(good, &m)
		f(&m)
		b, _ := json.Marshal(m)
		return b
	}
	cases := map[string][]byte{
		"not json":          []byte("{"),
		"a container image": edit(func(m *ocispec.Manifest) { m.ArtifactType = ""; m.Config.MediaType = ocispec.MediaTypeImageConfig }),
		"no layers":         edit(func(m *ocispec.Manifest) { m.Layers = nil }),
		"sha512 layer":      edit(func(m *ocispec.Manifest) { m.Layers[0].Digest = digest.SHA512.FromString("x") }),
		"bad digest":        edit(func(m *ocispec.Manifest) { m.Layers[0].Digest = "sha256:../../etc/passwd" }),
		"zero size":         edit(func(m *ocispec.Manifest) { m.Layers[1].Size = 0 }),
		"gap":               edit(func(m *ocispec.Manifest) { m.Layers[1].Annotations[AnnotationChunkOffset] = "3" }),
		"blob cut short":    edit(func(m *ocispec.Manifest) { m.Layers = append(m.Layers[:2], m.Layers[3:]...) }),
		"chunk past blob":   edit(func(m *ocispec.Manifest) { m.Layers[2].Size = 2 << 20 }),
		"foreign layer":     edit(func(m *ocispec.Manifest) { m.Layers[0].MediaType = ocispec.MediaTypeImageLayerGzip }),
		"huge config":       edit(func(m *ocispec.Manifest) { m.Config.Size = 1 << 40 }),
		"negative size":     edit(func(m *ocispec.Manifest) { m.Layers[0].Annotations[AnnotationBlobSize] = "-1" }),
	}
	for name, data := range cases {
		if _, _, err := parseManifest(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestConfigValidateRefusesABrokenChain(t *testing.T) {
	for name, f := range map[string]func(c []images.Manifest){
		"base with a backing file": func(c []images.Manifest) { c[0].BackingDigest = c[1].Digest },
		"top not on the base":      func(c []images.Manifest) { c[1].BackingDigest = "sha256:" + strings.Repeat("d", 64) },
		"path in a name":           func(c []images.Manifest) { c[1].Name = "../x" },
		"raw overlay":              func(c []images.Manifest) { c[1].Format = "raw" },
		"no size":                  func(c []images.Manifest) { c[0].FileSize = 0 },
	} {
		c := fakeChain()
		f(c)
		if err := (Config{Chain: c}).Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := (Config{}).Validate(); err == nil {
		t.Error("an empty chain was accepted")
	}
	data, cfg := manifestFor(t, fakeChain(), 2<<20)
	_, blobs, _ := parseManifest(data)
	cfg.Chain[1].Digest = "sha256:" + strings.Repeat("e", 64)
	if err := matchChain(cfg, blobs); err == nil {
		t.Error("layers of other blobs than the config's were accepted")
	}
}

func TestRegistryTextIsMadePrintable(t *testing.T) {
	m := fakeChain()[1]
	m.Provisioners = []string{"shell: \x1b[2Jrm -rf"}
	m.Variables = map[string]string{"k\x07": "v\r\n"}
	m.Base.Source = "\x1b]0;title\x07"
	cleanManifest(&m)
	for _, s := range append([]string{m.Base.Source, m.Provisioners[0]}, m.Variables["k "]) {
		if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 }) {
			t.Errorf("%q still has control characters", s)
		}
	}
	if got := printable("CVE-1\x1b[31m\u009b"); got != "CVE-1 [31m " {
		t.Errorf("printable: %q", got)
	}
}

func TestSparseWriterKeepsHoles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 1<<20+100)
	copy(data[3:], "head")
	copy(data[700<<10:], "middle")
	data[len(data)-1] = 1
	w := &sparseWriter{f: f}
	for off := 0; off < len(data); off += 12345 { // writes that straddle blocks
		if _, err := w.Write(data[off:min(off+12345, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, data) {
		t.Fatal("the file differs from what was written")
	}
	var st syscall.Stat_t
	syscall.Stat(path, &st)
	if st.Blocks*512 >= int64(len(data)) {
		t.Errorf("%d bytes allocated for %d with holes", st.Blocks*512, len(data))
	}
}

func TestChannelFor(t *testing.T) {
	for _, c := range []struct{ tag, version, want string }{
		{"stable", "1.0.0", "stable"},
		{"1.0.0", "1.0.0", ""},
		{"1.0.0_b7", "1.0.0+b7", ""},
		{"latest", "1.0.0", ""},
		{"", "1.0.0", ""},
		{"2.0", "1.0.0", ""}, // a version-like tag, not a channel
	} {
		if got := channelFor(c.tag, c.version, "hello"); got != c.want {
			t.Errorf("channelFor(%q, %q) = %q, want %q", c.tag, c.version, got, c.want)
		}
	}
}

func TestIsRegistryRef(t *testing.T) {
	for s, want := range map[string]bool{
		"ghcr.io/acme/hello:1.0": true, "127.0.0.1:5000/hello": true, "localhost/hello@sha256:abc": true,
		"hello:1.0": false, "hello@stable": false, "./disk.qcow2": false, "/srv/disk.img": false,
		"../x/y": false, "~/x/y": false, "images/disk.qcow2": false, "ghcr.io/": false, "vms.d/disk.qcow2": false,
	} {
		if got := images.IsRegistryRef(s); got != want {
			t.Errorf("IsRegistryRef(%q) = %v", s, got)
		}
	}
	if !isLoopback("127.0.0.1:5000") || !isLoopback("localhost") || !isLoopback("[::1]:443") || isLoopback("ghcr.io") || isLoopback("10.0.0.1:5000") {
		t.Error("isLoopback")
	}
}

// TestTransportErrorsSayWhatToDo: real errors from a TLS server with a
// certificate nobody trusts, a plain HTTP server asked for HTTPS, and a
// closed port.
func TestTransportErrorsSayWhatToDo(t *testing.T) {
	ref, _ := ParseReference("registry.example/x:1")
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	_, err := http.Get(tlsSrv.URL)
	if e := explain(ref, Options{}, err); e == nil || !strings.Contains(e.Error(), "TLS certificate is not trusted") {
		t.Errorf("untrusted certificate: %v", e)
	}
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	_, err = http.Get(strings.Replace(plain.URL, "http://", "https://", 1))
	if e := explain(ref, Options{}, err); e == nil || !strings.Contains(e.Error(), "pass --plain-http") {
		t.Errorf("plain HTTP server: %v", e)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	_, err = http.Get("http://" + addr + "/v2/")
	if e := explain(ref, Options{}, err); e == nil || !strings.Contains(e.Error(), "cannot be reached") {
		t.Errorf("closed port: %v", e)
	}
}
