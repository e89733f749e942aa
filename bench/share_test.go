package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/testregistry"
	"github.com/kiln-dev/kiln/ociimage"
)

// sharing pushes hello:1.1.0 (with its chain: debian:12, hello:1.0.0) to a
// local registry and pulls it into an empty store, BENCH_RUNS times each
// on a fresh registry, next to a plain copy of the same bytes; then it
// compares what a layered pull moves with a flattened export.
func (b *bencher) sharing() {
	b.r.Section("Sharing through a registry (hello:1.1.0 and its chain, local docker-registry)")
	top, err := b.manifest("hello:1.1.0")
	if err != nil {
		b.fail("sharing", err)
		return
	}
	var pushRate, pullRate, copyRate []float64
	var chainBytes float64
	for range b.s.runs {
		reg := testregistry.Start(b.t, testregistry.Options{})
		repo := reg.Host + "/bench/hello"
		var pushed ociimage.PushResult
		if err := b.kilnJSON("", &pushed, "images", "push", "hello:1.1.0", repo); err != nil {
			b.fail("registry push", err)
			return
		}
		pushRate = append(pushRate, float64(pushed.BytesSent)/pushed.DurationSec/1e6)
		chainBytes = float64(pushed.BytesTotal)

		var pulled ociimage.PullResult
		home := b.t.TempDir()
		if err := b.kilnJSON(home, &pulled, "images", "pull", repo+":1.1.0"); err != nil {
			b.fail("registry pull", err)
			return
		}
		pullRate = append(pullRate, float64(pulled.BytesFetched)/pulled.DurationSec/1e6)

		d, n, err := b.copyChain(pushed.Chain)
		if err != nil {
			b.fail("plain copy", err)
			return
		}
		copyRate = append(copyRate, float64(n)/d.Seconds()/1e6)
	}
	b.add("chain size (3 blobs)", Bytes, []float64{chainBytes}, "debian:12 + hello:1.0.0 + hello:1.1.0")
	b.add("push to an empty registry", Rate, pushRate, "hashing each chunk, then uploading it")
	b.add("pull into an empty store", Rate, pullRate, "verified while streaming, then added to the store")
	b.add("plain copy of the same blobs", Rate, copyRate, "read and written once, page cache")

	// A layered pull where the parent is present, against what a flattened
	// export of the same version would move.
	reg := testregistry.Start(b.t, testregistry.Options{})
	repo := reg.Host + "/bench/hello"
	for _, r := range []string{"hello:1.0.0", "hello:1.1.0"} {
		var pushed ociimage.PushResult
		if err := b.kilnJSON("", &pushed, "images", "push", r, repo); err != nil {
			b.fail("registry push", err)
			return
		}
	}
	home := b.t.TempDir()
	var first, layered ociimage.PullResult
	if err := b.kilnJSON(home, &first, "images", "pull", repo+":1.0.0"); err != nil {
		b.fail("registry pull", err)
		return
	}
	if err := b.kilnJSON(home, &layered, "images", "pull", repo+":1.1.0"); err != nil {
		b.fail("registry pull", err)
		return
	}
	out := filepath.Join(b.t.TempDir(), "hello.qcow2")
	if _, err := b.kilnRun(10*time.Minute, nil, "images", "export", "hello:1.1.0", "--format", "qcow2", "-o", out); err != nil {
		b.fail("flattened export", err)
		return
	}
	fi, err := os.Stat(out)
	if err != nil {
		b.fail("flattened export", err)
		return
	}
	b.add("layered pull of hello:1.1.0 with hello:1.0.0 present: bytes moved", Bytes, []float64{float64(layered.BytesFetched)},
		fmt.Sprintf("its blob is %d bytes", top.FileSize))
	b.add("flattened export of hello:1.1.0 (qcow2, zlib)", Bytes, []float64{float64(fi.Size())}, "what export, copy and import would move")
}

// kilnJSON runs kiln with --json (in KILN_HOME home when home is set) and
// decodes its output into v.
func (b *bencher) kilnJSON(home string, v any, args ...string) error {
	cmd := exec.Command(b.kiln, append(args, "--json")...)
	cmd.Env = os.Environ()
	if home != "" {
		cmd.Env = append(cmd.Env, "KILN_HOME="+home)
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	b.t.Logf("kiln %s: %v", strings.Join(args, " "), errOr(err, "ok"))
	if err != nil {
		return fmt.Errorf("kiln %s: %v\n%s", strings.Join(args, " "), err, tail(errb.String(), 10))
	}
	return json.Unmarshal(out, v)
}

// copyChain copies the blobs of refs to a temporary folder beside the
// store and returns how long it took and how many bytes it moved.
func (b *bencher) copyChain(refs []string) (time.Duration, int64, error) {
	dir, err := os.MkdirTemp(b.home, "copy-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	var blobs []string
	for _, r := range refs {
		m, err := b.manifest(r)
		if err != nil {
			return 0, 0, err
		}
		blobs = append(blobs, b.blob(m))
	}
	start := time.Now()
	var total int64
	for i, p := range blobs {
		n, err := copyFile(p, filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			return 0, 0, err
		}
		total += n
	}
	return time.Since(start), total, nil
}

func copyFile(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}
