package packer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/kiln-dev/kiln/bake"
)

// digest is the sha256 of everything the build reads: the template and var
// files, the files its functions read, the scripts, uploads and seed files
// it names, and the variables' values, so a changed input is a new build
// and an unchanged one a cache hit.
func (l *loader) digest(vars []bake.Variable) string {
	h := sha256.New()
	files, env := l.fs.Reads()
	paths := append([]string{}, l.files...)
	paths = append(paths, l.inputs...)
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	seen := map[string]bool{}
	for _, p := range paths {
		if seen[p] {
			continue
		}
		seen[p] = true
		hashPath(h, p)
	}
	for _, k := range sortedKeys(env) {
		fmt.Fprintf(h, "env %s=%s\n", k, env[k])
	}
	for _, v := range vars {
		fmt.Fprintf(h, "var %s=%q\n", v.Name, v.Value)
	}
	for _, a := range l.opts.Only {
		fmt.Fprintf(h, "only %s\n", a)
	}
	for _, a := range l.opts.Except {
		fmt.Fprintf(h, "except %s\n", a)
	}
	fmt.Fprintf(h, "generalize %v\n", l.opts.Generalize)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// hashPath feeds a file, or every file under a folder, into h.
func hashPath(h io.Writer, p string) {
	filepath.Walk(p, func(q string, info os.FileInfo, err error) error {
		if err != nil {
			fmt.Fprintf(h, "missing %s\n", q)
			return nil
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		fmt.Fprintf(h, "file %s %o %d\n", q, info.Mode().Perm(), info.Size())
		f, err := os.Open(q)
		if err != nil {
			return nil
		}
		defer f.Close()
		io.Copy(h, f)
		return nil
	})
}
