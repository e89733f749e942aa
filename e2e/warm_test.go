//go:build e2e

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rootFiles lists the root filesystem of a stored image, offline: the image
// (with its backing chain) is converted to raw, and e2fsprogs' debugfs
// copies the ext4 root partition (number 1) out of it. Each path maps to
// its type, mode, owner and content digest (a symlink to its target).
func rootFiles(t *testing.T, ref string) map[string]string {
	t.Helper()
	m := showImage(t, ref)
	blob := filepath.Join(home, "data", "kiln", "images", "blobs", "sha256", strings.TrimPrefix(m.Digest, "sha256:"))
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", blob, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert %s: %v\n%s", ref, err, out)
	}
	out, err := exec.Command("partx", "-g", "-o", "NR,START", raw).Output()
	if err != nil {
		t.Fatalf("partx %s: %v", ref, err)
	}
	var offset int64 = -1
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "1" {
			start, _ := strconv.ParseInt(f[1], 10, 64)
			offset = start * 512
		}
	}
	if offset < 0 {
		t.Fatalf("%s has no partition 1:\n%s", ref, out)
	}
	tree := filepath.Join(dir, "root")
	os.Mkdir(tree, 0o755)
	if out, err := exec.Command("debugfs", "-R", "rdump / "+tree, fmt.Sprintf("%s?offset=%d", raw, offset)).CombinedOutput(); err != nil {
		t.Fatalf("debugfs rdump %s: %v\n%s", ref, err, out)
	}
	os.Remove(raw)
	files := map[string]string{}
	err = filepath.Walk(tree, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, tree)
		if rel == "" {
			return nil
		}
		var owner string
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			owner = fmt.Sprintf("%d:%d", st.Uid, st.Gid)
		}
		desc := fmt.Sprintf("%v %s", info.Mode(), owner)
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		case info.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			desc += " " + hex.EncodeToString(h.Sum(nil))[:16]
		}
		files[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", ref, err)
	}
	return files
}

// perBuild are the paths that differ between any two builds, cold or
// warm, and why; comparing a cold and a warm build leaves them out.
var perBuild = []struct{ path, why string }{
	{"/var/log/", "logs (truncated by generalize, then written again until shutdown; the journal's folder is named by the boot's machine-id)"},
	{"/var/lib/dhcp/", "the DHCP lease, with its times"},
	{"/var/lib/systemd/random-seed", "the kernel's random seed, saved at shutdown"},
	{"/var/cache/ldconfig/aux-cache", "ldconfig's cache of file times"},
}

func perBuildFile(p string) bool {
	for _, e := range perBuild {
		if p == e.path || strings.HasSuffix(e.path, "/") && strings.HasPrefix(p, e.path) {
			return true
		}
	}
	return false
}

// diffTrees lists the paths that are missing from one tree or differ.
func diffTrees(a, b map[string]string) []string {
	var out []string
	for p, da := range a {
		if perBuildFile(p) {
			continue
		}
		if db, ok := b[p]; !ok {
			out = append(out, "only in the first: "+p+" "+da)
		} else if da != db {
			out = append(out, "differs: "+p+": "+da+" / "+db)
		}
	}
	for p, db := range b {
		if _, ok := a[p]; !ok && !perBuildFile(p) {
			out = append(out, "only in the second: "+p+" "+db)
		}
	}
	sort.Strings(out)
	return out
}

// startClockServer serves the host's clock (UNIX.NANOS) on 127.0.0.1; a
// guest reaches it at the returned URL (QEMU's user network maps 10.0.2.2
// to the host's loopback).
func startClockServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		fmt.Fprintf(w, "%d.%09d", now.Unix(), now.Nanosecond())
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return fmt.Sprintf("http://10.0.2.2:%d/", ln.Addr().(*net.TCPAddr).Port)
}

var clockLine = regexp.MustCompile(`clock before=([0-9.]+) host=([0-9.]+) after=([0-9.]+)`)

// clockOffset reads the line warm.kiln.hcl prints and returns how far the
// host's clock was outside the guest's two readings (0 when between them).
func clockOffset(t *testing.T, out string) time.Duration {
	t.Helper()
	m := clockLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the build printed no clock line:\n%s", out)
	}
	var v [3]float64
	for i := range v {
		v[i], _ = strconv.ParseFloat(m[i+1], 64)
	}
	before, host, after := v[0], v[1], v[2]
	switch {
	case host < before:
		return time.Duration((before - host) * 1e9)
	case host > after:
		return time.Duration((host - after) * 1e9)
	}
	return 0
}

// assertNotIn fails if secret appears in any file under dir, or if dir
// holds anything but 0700 folders and 0600 files, or nothing at all.
func assertNotIn(t *testing.T, dir, secret string) {
	t.Helper()
	n := 0
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if want := os.FileMode(0o600); info.IsDir() {
			if info.Mode().Perm() != 0o700 {
				t.Errorf("%s is %o, want 0700", p, info.Mode().Perm())
			}
			return nil
		} else if info.Mode().Perm() != want {
			t.Errorf("%s is %o, want 0600", p, info.Mode().Perm())
		}
		n++
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(secret)) {
			t.Errorf("the secret is in %s", p)
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Errorf("%s: %d files (%v)", dir, n, err)
	}
}
