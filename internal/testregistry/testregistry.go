// Package testregistry runs a real OCI registry for tests: Debian's
// docker-registry (Docker Distribution) on 127.0.0.1, a random port and a
// temporary storage folder, optionally behind htpasswd auth.
package testregistry

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Binary is the registry program Debian's docker-registry package installs.
const Binary = "docker-registry"

// Registry is one running registry.
type Registry struct {
	Host    string // 127.0.0.1:PORT
	Storage string // its storage folder (blobs under docker/registry/v2/blobs)
	Log     string // its log file
}

// Options tune Start.
type Options struct {
	User, Password string // when User is set, htpasswd auth for this one account
}

// Start runs a registry until the test ends. A missing binary fails the
// test, saying what to install: CI installs it, and skipping would hide
// that the registry tests did not run.
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		t.Fatalf("%s is not installed: run `apt-get install docker-registry` (.ci/run does)", Binary)
	}
	dir := t.TempDir()
	r := &Registry{Storage: filepath.Join(dir, "storage"), Log: filepath.Join(dir, "registry.log")}
	authConf := ""
	if o.User != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		pw := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pw, []byte(o.User+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		authConf = fmt.Sprintf("auth:\n  htpasswd:\n    realm: kiln-test\n    path: %s\n", pw)
	}
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		r.Host = fmt.Sprintf("127.0.0.1:%d", port)
		conf := filepath.Join(dir, "config.yml")
		yml := fmt.Sprintf("version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n%s",
			r.Storage, r.Host, authConf)
		if err := os.WriteFile(conf, []byte(yml), 0o600); err != nil {
			t.Fatal(err)
		}
		logf, err := os.Create(r.Log)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(Binary, "serve", conf)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatalf("starting %s: %v", Binary, err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); logf.Close(); close(exited) }()
		if waitUp(r.Host, exited) {
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			return r
		}
		cmd.Process.Kill()
		<-exited
		log, _ := os.ReadFile(r.Log)
		if !bytes.Contains(log, []byte("address already in use")) {
			t.Fatalf("%s did not start on %s:\n%s", Binary, r.Host, log)
		}
	}
	t.Fatalf("%s found no free port", Binary)
	return nil
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitUp polls /v2/ until the registry answers (401 counts: auth is on).
func waitUp(host string, exited <-chan struct{}) bool {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// BlobFile is where the registry keeps the blob with digest
// "sha256:<hex>" (Distribution's filesystem layout), for tests that damage
// it.
func (r *Registry) BlobFile(digest string) string {
	hex := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(r.Storage, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
}
