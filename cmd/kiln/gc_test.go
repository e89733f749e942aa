package main

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/disk"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/layout"
)

// TestGCKeepsImagesInUse: an image a fleet instance, a run or a build is
// backed by is refused by `images rm` and kept by `images gc` after a
// forced rm, in the folders package layout names; an unused one is freed.
func TestGCKeepsImagesInUse(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	home := layout.Home{Data: filepath.Join(root, "data"), Cache: filepath.Join(root, "cache"), Runtime: filepath.Join(root, "run")}
	s, err := images.Open(home.StoreDir())
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	add := func(name string) images.Manifest {
		raw, q := filepath.Join(src, name+".raw"), filepath.Join(src, name+".qcow2")
		data := make([]byte, 1<<20)
		rand.Read(data)
		if err := os.WriteFile(raw, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := disk.Convert(ctx, raw, q, disk.ConvertOptions{}); err != nil {
			t.Fatal(err)
		}
		m, err := s.Add(ctx, images.Manifest{Name: name, Version: "1", Base: images.BaseInfo{Source: "test"}, KilnVersion: "test"}, q, images.AddOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	users := map[string]layout.VM{
		"fleet": home.Fleet("web").Instance("web-1"),
		"run":   layout.Work(filepath.Join(home.Work(), layout.RunPrefix+"-abc")).RunVM(),
		"build": layout.Work(filepath.Join(home.Work(), layout.BuildPrefix("app")+"-abc")).BuildVM(),
	}
	used := map[string]images.Manifest{}
	for name, vm := range users {
		m := add(name)
		used[name] = m
		if err := os.MkdirAll(string(vm), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := disk.CreateOverlay(ctx, s.BlobPath(m.Digest), "qcow2", vm.Disk(), 0); err != nil {
			t.Fatal(err)
		}
	}
	unused := add("spare")

	kilnHome := root // KILN_HOME=root gives root/data, root/cache, root/run
	for name, m := range used {
		r := runKiln(t, kilnHome, "", "images", "rm", m.Ref().String())
		if r.code == 0 || !strings.Contains(r.stderr, "in use") && !strings.Contains(r.stderr, "uses") {
			t.Errorf("rm of the image a %s uses: exit %d, %s", name, r.code, r.stderr)
		}
		if r := runKiln(t, kilnHome, "", "images", "rm", "--force", m.Ref().String()); r.code != 0 {
			t.Fatalf("rm --force %s: %d %s", m.Ref(), r.code, r.stderr)
		}
	}
	if r := runKiln(t, kilnHome, "", "images", "rm", unused.Ref().String()); r.code != 0 {
		t.Fatalf("rm %s: %d %s", unused.Ref(), r.code, r.stderr)
	}
	r := runKiln(t, kilnHome, "", "images", "gc")
	if r.code != 0 {
		t.Fatalf("gc: %d %s", r.code, r.stderr)
	}
	for name, m := range used {
		if _, err := os.Stat(s.BlobPath(m.Digest)); err != nil {
			t.Errorf("gc freed the image a %s uses: %v\n%s", name, err, r.stdout)
		}
	}
	if _, err := os.Stat(s.BlobPath(unused.Digest)); !os.IsNotExist(err) {
		t.Errorf("gc kept the unused image: %v\n%s", err, r.stdout)
	}
}
