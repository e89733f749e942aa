package template

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/hashicorp/hcl/v2"

	"github.com/kiln-dev/kiln/bake"
	"github.com/kiln-dev/kiln/internal/fileutil"
)

// digest computes Spec.TemplateDigest, a fingerprint of everything a
// template's result depends on that kiln can see without booting anything;
// the build cache keys on it, so the recipe below must only change together
// with its version line.
//
// It is "sha256:" and the lowercase hex SHA-256 of this byte stream:
//
//  1. the line "kiln-template-digest v1\n";
//  2. "template SIZE\n" and the template file's bytes;
//  3. each local input once, in order of its path relative to the
//     template's folder (slash-separated, "../" where outside it). Inputs
//     are the files read by file() and templatefile(), shell scripts and
//     upload sources. A file is written as
//     `file "PATH" MODE SIZE\n` and its bytes; a directory as
//     `dir "PATH" MODE\n` followed by its entries, depth first in name order
//     (symbolic links inside it are not followed: `symlink "PATH" "TARGET"\n`;
//     anything else: `other "PATH" MODESTRING\n`). PATH is Go-quoted and
//     relative to the template's folder; MODE is the permission bits in
//     four octal digits, as uploads keep them. Files read by functions are
//     hashed as they were read, the others as they are now;
//  4. for each declared variable, sorted by name, "var NAME SIZE\n" and its
//     value as recorded in Spec.Variables (sensitive ones included: a new
//     password must make a new image);
//  5. for each environment variable read by env(), sorted by name,
//     "env NAME SIZE\n" and its value (nothing when env() is not used).
//
// SIZE is a decimal byte count, which keeps the stream unambiguous.
// timestamp() is deliberately not part of it. The base image is not either:
// it is identified by the build, by checksum or stored digest.
func (l *loader) digest(src []byte, vars []bake.Variable) string {
	h := sha256.New()
	io.WriteString(h, "kiln-template-digest v1\n")
	fmt.Fprintf(h, "template %d\n", len(src))
	h.Write(src)

	type entry struct {
		rel string
		abs string
		rng *hcl.Range
	}
	byPath := map[string]entry{}
	for abs := range l.st.reads {
		byPath[abs] = entry{rel: l.rel(abs), abs: abs}
	}
	for _, in := range l.inputs {
		abs := filepath.Clean(in.path)
		if _, seen := byPath[abs]; !seen {
			byPath[abs] = entry{rel: l.rel(abs), abs: abs, rng: in.rng.Ptr()}
		}
	}
	entries := make([]entry, 0, len(byPath))
	for _, e := range byPath {
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].rel < entries[j].rel })
	for _, e := range entries {
		if in, ok := l.st.reads[e.abs]; ok {
			writeFile(h, e.rel, in.mode, in.data)
			continue
		}
		if err := hashTree(h, e.abs, e.rel, true); err != nil {
			l.diags = append(l.diags, diagAt(e.rng, "Cannot read input", "%v", err))
		}
	}

	for _, v := range vars {
		fmt.Fprintf(h, "var %s %d\n%s", v.Name, len(v.Value), v.Value)
	}
	for _, name := range sortedKeys(l.st.envReads) {
		v := l.st.envReads[name]
		fmt.Fprintf(h, "env %s %d\n%s", name, len(v), v)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// rel names abs relative to the template's folder, so the digest does not
// change when a checkout moves.
func (l *loader) rel(abs string) string {
	r, err := filepath.Rel(l.st.dir, abs)
	if err != nil {
		return filepath.ToSlash(abs)
	}
	return filepath.ToSlash(r)
}

func writeFile(h hash.Hash, rel string, mode fs.FileMode, data []byte) {
	fmt.Fprintf(h, "file %q %04o %d\n", rel, mode.Perm(), len(data))
	h.Write(data)
}

// hashTree writes path to h as the recipe in digest describes. The top
// path follows symbolic links (the template named it); those inside a
// directory are recorded, not followed.
func hashTree(h hash.Hash, path, rel string, top bool) error {
	stat := os.Lstat
	if top {
		stat = os.Stat
	}
	fi, err := stat(path)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode().IsRegular():
		// Streamed: an upload may be larger than memory.
		f, err := fileutil.OpenRegular(path)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(h, "file %q %04o %d\n", rel, fi.Mode().Perm(), fi.Size())
		n, err := io.Copy(h, f)
		if err != nil {
			return err
		}
		if n != fi.Size() {
			return fmt.Errorf("%s changed while it was read", path)
		}
	case fi.IsDir():
		fmt.Fprintf(h, "dir %q %04o\n", rel, fi.Mode().Perm())
		ents, err := os.ReadDir(path) // sorted by name
		if err != nil {
			return err
		}
		for _, de := range ents {
			if err := hashTree(h, filepath.Join(path, de.Name()), rel+"/"+de.Name(), false); err != nil {
				return err
			}
		}
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "symlink %q %q\n", rel, target)
	default:
		fmt.Fprintf(h, "other %q %s\n", rel, fi.Mode())
	}
	return nil
}
