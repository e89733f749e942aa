//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// packerManifest is Packer's packer-manifest.json, as its manifest
// post-processor writes it.
type packerManifest struct {
	Builds []struct {
		Name        string `json:"name"`
		BuilderType string `json:"builder_type"`
		BuildTime   int64  `json:"build_time"`
		Files       []struct {
			Name string `json:"name"`
			Size int64  `json:"size"`
		} `json:"files"`
		ArtifactID    string            `json:"artifact_id"`
		PackerRunUUID string            `json:"packer_run_uuid"`
		CustomData    map[string]string `json:"custom_data"`
	} `json:"builds"`
	LastRunUUID string `json:"last_run_uuid"`
}

// kilnIn runs kiln in dir ("" = the test's own; Packer templates resolve
// paths against the working directory) with a time limit.
func kilnIn(t *testing.T, dir string, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kiln, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("kiln %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("kiln %s: still running after %s\nstderr:\n%s", strings.Join(args, " "), timeout, r.stderr)
	}
	t.Logf("kiln %s: exit %d in %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, time.Since(start).Round(time.Second), r.stdout, r.stderr)
	return r
}

// serveBase serves the e2e base image as a cloud image mirror would: the
// qcow2 and a SHA256SUMS list beside it.
func serveBase(t *testing.T) (imageURL, sum string) {
	t.Helper()
	f, err := os.Open(baseImg)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	io.Copy(h, f)
	f.Close()
	sum = hex.EncodeToString(h.Sum(nil))
	const name = "debian-12-genericcloud-amd64.qcow2"
	mux := http.NewServeMux()
	mux.HandleFunc("/images/bookworm/"+name, func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, baseImg) })
	mux.HandleFunc("/images/bookworm/SHA256SUMS", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, sum+"  "+name+"\n")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/images/bookworm/" + name, sum
}

func readPackerManifest(t *testing.T, path string) packerManifest {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no Packer manifest: %v", err)
	}
	var m packerManifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s is not JSON: %v\n%s", path, err, data)
	}
	if len(m.Builds) != 1 || m.LastRunUUID == "" || m.Builds[0].PackerRunUUID != m.LastRunUUID {
		t.Fatalf("manifest builds/last_run_uuid not as Packer writes them:\n%s", data)
	}
	b := m.Builds[0]
	if b.BuilderType != "qemu" || b.ArtifactID != "VM" || b.BuildTime < time.Now().Add(-time.Hour).Unix() || len(b.Files) != 1 {
		t.Errorf("manifest build not as Packer's qemu builder writes it:\n%s", data)
	}
	return m
}

// TestPackerTemplates builds the two Packer template shapes from a locally
// served base (a cd_files seed with a key; an http_directory NoCloud-net
// seed through qemuargs with a password), checks what Packer would have
// left, then boots each image with kiln run and user-data kiln cannot
// merge: a #!/bin/sh script, and a MIME multipart.
func TestPackerTemplates(t *testing.T) {
	imageURL, sum := serveBase(t)
	testdata, _ := filepath.Abs("testdata/packer")
	work := t.TempDir()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(work, "packer_key")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}

	t.Run("cd_files", func(t *testing.T) {
		r := kilnIn(t, work, 60*time.Minute, "build", filepath.Join(testdata, "cdfiles"),
			"-var", "image_url="+imageURL, "-var=ssh_private_key_file=packer_key", "-only=app.qemu.debian")
		if r.code != 0 {
			t.Fatalf("kiln build of the cd_files template failed")
		}
		if !strings.Contains(r.stderr, "downloaded "+imageURL) && !strings.Contains(r.stderr, "base "+imageURL+" (cached download)") {
			t.Errorf("the base was not downloaded from iso_url")
		}
		if strings.Contains(r.stderr, "trusted the guest's first host key") {
			t.Errorf("kiln did not pin its own host key through the seed's user-data")
		}
		img := filepath.Join(work, "output-debian-app", "debian-app.qcow2")
		fi, err := os.Stat(img)
		if err != nil {
			t.Fatalf("no image in output_directory: %v", err)
		}
		m := readPackerManifest(t, filepath.Join(work, "packer-manifest.json"))
		b := m.Builds[0]
		if b.Name != "debian" || b.Files[0].Name != "output-debian-app/debian-app.qcow2" || b.Files[0].Size != fi.Size() || b.CustomData["version"] != "1.0.0" {
			t.Errorf("manifest build = %+v (image is %d bytes)", b, fi.Size())
		}
		sums, err := os.ReadFile(filepath.Join(work, "output-debian-app", "debian_sha256.checksum"))
		if err != nil || !strings.HasSuffix(string(sums), "\tdebian-app.qcow2\n") {
			t.Errorf("checksum post-processor output = %q, %v", sums, err)
		}
		if s := showImage(t, "debian-app:1.0.0"); s.Digest == "" {
			t.Errorf("debian-app:1.0.0 not in the store")
		}

		script := filepath.Join(work, "script.sh")
		os.WriteFile(script, []byte("#!/bin/sh\necho \"script ran as $(id -un)\" > /var/tmp/user-script\n"), 0o644)
		r = kilnCmd(t, 40*time.Minute, "run", img, "--memory", "512M", "--boot-timeout", "30m", "--user-data", script, "--",
			"cat /etc/packer-build /etc/app-version /etc/motd /var/tmp/user-script; echo login=$(id -un)")
		if r.code != 0 {
			t.Fatalf("kiln run of the Packer-built image with a #! user-data failed")
		}
		for _, want := range []string{
			"build=app source=debian team=platform", "APP_VERSION=1.0.0", "runner=root builder=qemu build=debian",
			"baked by kiln from a Packer template", "script ran as root", "login=kiln",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("guest output lacks %q:\n%s", want, r.stdout)
			}
		}
	})

	t.Run("http_directory", func(t *testing.T) {
		r := kilnIn(t, work, 60*time.Minute, "build", filepath.Join(testdata, "http", "debian-http.pkr.hcl"),
			"-var", "image_url="+imageURL, "-var", "image_checksum=sha256:"+sum, "--version", "2.0.0", "-debug")
		if r.code != 0 {
			t.Fatalf("kiln build of the http_directory template failed")
		}
		if !strings.Contains(r.stderr, "serving the template's HTTP files on 127.0.0.1:") {
			t.Errorf("kiln did not say it serves http_directory")
		}
		img := filepath.Join(work, "build", "debian-http", "debian-http.qcow2")
		fi, err := os.Stat(img)
		if err != nil {
			t.Fatalf("no image in output_directory: %v", err)
		}
		m := readPackerManifest(t, filepath.Join(work, "build", "packer-manifest.json"))
		if b := m.Builds[0]; b.Name != "cloud" || b.Files[0].Name != "debian-http.qcow2" || b.Files[0].Size != fi.Size() {
			t.Errorf("manifest build = %+v (strip_path: the bare file name)", b)
		}

		mp := filepath.Join(work, "multipart.txt")
		os.WriteFile(mp, []byte("Content-Type: multipart/mixed; boundary=\"===b===\"\nMIME-Version: 1.0\n\n"+
			"--===b===\nContent-Type: text/x-shellscript\nContent-Disposition: attachment; filename=\"hello.sh\"\n\n"+
			"#!/bin/sh\necho part-script > /var/tmp/mp-script\n"+
			"--===b===\nContent-Type: text/cloud-config\n\n#cloud-config\nusers:\n  - name: alice\n    shell: /bin/bash\n"+
			"write_files:\n  - path: /var/tmp/mp-config\n    content: part-config\n"+
			"--===b===\nContent-Type: text/cloud-boothook\n\n#cloud-boothook\n#!/bin/sh\necho part-boothook > /var/tmp/mp-boothook\n"+
			"--===b===--\n"), 0o644)
		r = kilnCmd(t, 40*time.Minute, "run", "debian-http:2.0.0", "--memory", "512M", "--boot-timeout", "30m", "--user-data", mp, "--",
			"cat /etc/seed-source /var/tmp/mp-script /var/tmp/mp-config /var/tmp/mp-boothook; echo; id alice && echo login=$(id -un)")
		if r.code != 0 {
			t.Fatalf("kiln run with a MIME multipart user-data failed")
		}
		for _, want := range []string{"seeded-over-http", "part-script", "part-config", "part-boothook", "uid=", "login=kiln"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("guest output lacks %q:\n%s", want, r.stdout)
			}
		}
	})
	assertNothingLeftAfter(t)
}
