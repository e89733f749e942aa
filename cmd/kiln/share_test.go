package main

// TestPushPull runs `kiln images push` and `kiln images pull` as users do,
// between two KILN_HOMEs through a real registry (Debian's
// docker-registry), and the ways they fail: a wrong password, a revoked
// image used straight from the registry, a tag that does not exist.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/testregistry"
	"github.com/kiln-dev/kiln/layout"
	"github.com/kiln-dev/kiln/ociimage"
)

type kilnRun struct {
	stdout, stderr string
	code           int
}

func runKiln(t *testing.T, home, stdin string, args ...string) kilnRun {
	t.Helper()
	bin, err := kilnBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	env := []string{"KILN_HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, "docker")}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k == "KILN_HOME" || k == "DOCKER_CONFIG" || strings.HasPrefix(k, "XDG_") {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	r := kilnRun{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// homeWithChain makes a KILN_HOME whose store holds base:1 (2 MiB of random
// data) and app:1 on it (a 64 KiB qcow2 overlay).
func homeWithChain(t *testing.T) (home string, base, app images.Manifest) {
	t.Helper()
	ctx := context.Background()
	home = t.TempDir()
	s, err := images.Open(layout.Home{Data: filepath.Join(home, "data")}.StoreDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data := make([]byte, 2<<20)
	rand.Read(data)
	raw, q := filepath.Join(dir, "b.raw"), filepath.Join(dir, "b.qcow2")
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := disk.Convert(ctx, raw, q, disk.ConvertOptions{}); err != nil {
		t.Fatal(err)
	}
	base, err = s.Add(ctx, images.Manifest{Name: "base", Version: "1", Base: images.BaseInfo{Source: "test"}, KilnVersion: "test"}, q, images.AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ov := filepath.Join(dir, "app.qcow2")
	if err := disk.CreateOverlay(ctx, s.BlobPath(base.Digest), "qcow2", ov, 0); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 7 1M 64k", ov).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	if err := disk.Rebase(ctx, ov, strings.TrimPrefix(base.Digest, "sha256:"), "qcow2"); err != nil {
		t.Fatal(err)
	}
	app, err = s.Add(ctx, images.Manifest{Name: "app", Version: "1", Base: images.BaseInfo{Source: "image:base:1"}, KilnVersion: "test",
		Parent: &images.Parent{Ref: "base:1", Digest: base.Digest}, BackingDigest: base.Digest}, ov, images.AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(app.Ref(), "stable"); err != nil {
		t.Fatal(err)
	}
	return home, base, app
}

func TestPushPull(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	a, base, app := homeWithChain(t)
	repo := reg.Host + "/team/app"

	r := runKiln(t, a, "", "images", "push", "app@stable", repo)
	if r.code != 0 {
		t.Fatalf("push: %d %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, repo+":1\n") || !strings.Contains(r.stdout, repo+":stable\n") || !strings.Contains(r.stderr, "base:1 → app:1") {
		t.Errorf("push output:\n%s%s", r.stdout, r.stderr)
	}

	b := t.TempDir()
	r = runKiln(t, b, "", "images", "pull", repo+":stable", "--json")
	if r.code != 0 {
		t.Fatalf("pull: %d %s", r.code, r.stderr)
	}
	var res ociimage.PullResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("pull --json: %v\n%s", err, r.stdout)
	}
	if res.Image != "app:1" || res.BlobDigest != app.Digest || res.Channel != "stable" || res.BlobsFetched != 2 {
		t.Errorf("pull: %+v", res)
	}
	for _, m := range []images.Manifest{base, app} {
		r := runKiln(t, b, "", "images", "show", m.Ref().String(), "--json")
		var got images.Manifest
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Digest != m.Digest || got.BackingDigest != m.BackingDigest {
			t.Errorf("%s after pull: %v %+v", m.Ref(), err, got)
		}
	}
	if tree := runKiln(t, b, "", "images", "tree").stdout; !strings.Contains(tree, "base:1 ") || !strings.Contains(tree, "\n  app:1 ") {
		t.Errorf("tree after pull:\n%s", tree)
	}
	if show := runKiln(t, b, "", "images", "show", "app:1").stdout; !strings.Contains(show, "pulled:     "+repo+":stable@"+res.Digest) {
		t.Errorf("images show does not say where app:1 came from:\n%s", show)
	}
	if ch := runKiln(t, b, "", "images", "tag", "app@stable").stdout; !strings.HasPrefix(ch, "app@stable → 1") {
		t.Errorf("channel after pull: %s", ch)
	}
	r = runKiln(t, b, "", "images", "pull", repo+":1", "--json")
	res = ociimage.PullResult{}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.BytesFetched != 0 || len(res.Stored) != 0 {
		t.Errorf("second pull: %v %+v", err, res)
	}

	// A revoked version is refused when used straight from the registry,
	// as a local revoked one is, before anything boots.
	if r := runKiln(t, a, "", "images", "revoke", "app:1", "--reason", "CVE-2026-0002"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if r := runKiln(t, a, "", "images", "push", "app:1", repo+":revoked"); r.code != 0 || !strings.Contains(r.stderr, "carries the revocation") {
		t.Fatalf("push of a revoked image: %d %s", r.code, r.stderr)
	}
	c := t.TempDir()
	r = runKiln(t, c, "", "run", repo+":1", "--", "true")
	if r.code != 1 || !strings.Contains(r.stderr, "revoked: CVE-2026-0002 (pass --force to use it anyway)") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 12 {
		t.Errorf("run of a revoked registry image: %d\n%s", r.code, r.stderr)
	}
	if entries, _ := filepath.Glob(filepath.Join(c, "run", "run-*")); len(entries) != 0 {
		t.Errorf("a refused run left %v", entries)
	}
	// The same reference as a fleet's image and as a build's base: found
	// as pulled, and refused the same way.
	r = runKiln(t, c, "", "fleet", "up", "web", "--image", repo+":1", "--port", "18080:8080")
	if r.code != 1 || !strings.Contains(r.stderr, "revoked: CVE-2026-0002 (pass --force to use it anyway)") {
		t.Errorf("fleet up of a revoked registry image: %d\n%s", r.code, r.stderr)
	}
	tmpl := filepath.Join(t.TempDir(), "x.kiln.hcl")
	os.WriteFile(tmpl, []byte("image \"x\" {\n  version = \"1\"\n  base { image = \""+repo+":1\" }\n}\n"), 0o644)
	r = runKiln(t, c, "", "build", tmpl)
	if r.code != 1 || !strings.Contains(r.stderr, "revoked: CVE-2026-0002 (pass --force to use it anyway)") {
		t.Errorf("build on a revoked registry base: %d\n%s", r.code, r.stderr)
	}

	r = runKiln(t, c, "", "images", "pull", repo+":nope")
	if r.code != 1 || !strings.Contains(r.stderr, "not found in the registry") {
		t.Errorf("pull of a missing tag: %d %s", r.code, r.stderr)
	}
	r = runKiln(t, c, "", "images", "pull", repo)
	if r.code != 1 || !strings.Contains(r.stderr, "not latest; name one, e.g. "+repo+":1.0.0") {
		t.Errorf("pull without a tag: %d %s", r.code, r.stderr)
	}
}

func TestPushPullAuth(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{User: "ci", Password: "right-horse"})
	a, _, _ := homeWithChain(t)
	repo := reg.Host + "/app"
	r := runKiln(t, a, "wrong-horse\n", "images", "push", "app:1", repo, "--username", "ci", "--password-stdin")
	if r.code != 1 || !strings.Contains(r.stderr, "401 unauthorized") || !strings.Contains(r.stderr, "check the username and password") ||
		strings.Contains(r.stderr, "wrong-horse") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 8 {
		t.Errorf("wrong password: %d\n%s", r.code, r.stderr)
	}
	if r := runKiln(t, a, "right-horse\n", "images", "push", "app:1", repo, "--username", "ci", "--password-stdin"); r.code != 0 {
		t.Fatalf("push with the right password: %s", r.stderr)
	}
	b := t.TempDir()
	before := snapshot(t, b)
	r = runKiln(t, b, "", "images", "pull", repo+":1")
	if r.code != 1 || !strings.Contains(r.stderr, "needs a login") {
		t.Errorf("pull without credentials: %d %s", r.code, r.stderr)
	}
	if after := snapshot(t, filepath.Join(b, "data", "images", "manifests")); len(after) != 0 || len(before) != 0 {
		t.Errorf("a refused pull stored %v", after)
	}
	if r := runKiln(t, b, "right-horse", "images", "pull", repo+":1", "--username", "ci", "--password-stdin"); r.code != 0 {
		t.Errorf("pull with the password: %s", r.stderr)
	}
	if r := runKiln(t, b, "", "images", "pull", repo+":1", "--username", "ci"); r.code != 2 || !strings.Contains(r.stderr, "--password-stdin") {
		t.Errorf("--username alone: %d %s", r.code, r.stderr)
	}
}
