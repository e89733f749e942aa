package provision

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pkg/sftp"
)

// stagingDir makes a fresh private folder name under /tmp in the guest.
func stagingDir(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "/tmp/" + prefix + "-" + hex.EncodeToString(b[:])
}

// Upload copies a local file or directory tree into the guest over SFTP,
// keeping file modes, and installs it at dest owned by root. As with rsync
// and Packer, a source ending in "/" copies the folder's contents into dest;
// without it the folder itself lands inside dest. A file source lands at
// dest, or inside it when dest ends in "/".
//
// Files go to a staging folder as the login user first, then sudo moves them
// into place: the login user is removed when the image is generalised, so
// nothing may stay owned by it.
func (c *Client) Upload(ctx context.Context, src, dest string) error {
	slog.Debug("sftp upload", "addr", c.target.Addr, "src", src, "dest", dest)
	info, err := os.Stat(src)
	if err != nil {
		return err
	}
	sc, err := sftp.NewClient(c.Client)
	if err != nil {
		return fmt.Errorf("start SFTP: %w", err)
	}
	defer sc.Close()
	stage := stagingDir("kiln-upload")
	if err := sc.Mkdir(stage); err != nil {
		return fmt.Errorf("sftp mkdir %s: %w", stage, err)
	}
	defer c.Run(context.WithoutCancel(ctx), "sudo -n rm -rf "+quote(stage), nil, nil, nil)
	if err := sc.Chmod(stage, 0o700); err != nil {
		return err
	}

	var install string
	if info.IsDir() {
		if err := putTree(ctx, sc, src, stage); err != nil {
			return err
		}
		target := dest
		if !strings.HasSuffix(src, "/") {
			target = path.Join(dest, filepath.Base(src))
		}
		install = fmt.Sprintf("mkdir -p %s && cp -a %s/. %s/", quote(target), quote(stage), quote(target))
	} else {
		staged := path.Join(stage, "file")
		if err := putFile(ctx, sc, src, staged, info.Mode()); err != nil {
			return err
		}
		target := dest
		if strings.HasSuffix(dest, "/") {
			target = path.Join(dest, filepath.Base(src))
		}
		install = fmt.Sprintf("mkdir -p %s && cp -a %s %s", quote(path.Dir(target)), quote(staged), quote(target))
	}
	cmd := fmt.Sprintf("sudo -n sh -c %s", quote("chown -R root:root "+quote(stage)+" && "+install))
	var errb strings.Builder
	status, err := c.Run(ctx, cmd, nil, nil, &errb)
	if err != nil {
		return err
	}
	if status != 0 {
		return fmt.Errorf("install into %s: exit status %d: %s", dest, status, strings.TrimSpace(errb.String()))
	}
	return nil
}

func putTree(ctx context.Context, sc *sftp.Client, src, stage string) error {
	var paths []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	for _, p := range paths {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rel, _ := filepath.Rel(src, p)
		remote := path.Join(stage, filepath.ToSlash(rel))
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case info.IsDir():
			if rel != "." {
				if err := sc.Mkdir(remote); err != nil {
					return fmt.Errorf("sftp mkdir %s: %w", remote, err)
				}
			}
			if err := sc.Chmod(remote, info.Mode().Perm()); err != nil {
				return err
			}
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := sc.Symlink(target, remote); err != nil {
				return fmt.Errorf("sftp symlink %s: %w", remote, err)
			}
		case info.Mode().IsRegular():
			if err := putFile(ctx, sc, p, remote, info.Mode()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("upload %s: not a regular file, folder or symlink", p)
		}
	}
	return nil
}

func putFile(ctx context.Context, sc *sftp.Client, local, remote string, mode fs.FileMode) error {
	in, err := os.Open(local)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := sc.OpenFile(remote, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("sftp create %s: %w", remote, err)
	}
	if _, err := out.ReadFrom(in); err != nil {
		out.Close()
		return fmt.Errorf("upload %s: %w", local, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return sc.Chmod(remote, mode.Perm())
}

// Download copies a guest file or folder (read as root) to a local path. A
// folder arrives as dest with the folder's contents inside.
func (c *Client) Download(ctx context.Context, src, dest string) error {
	s, err := c.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	out, err := s.StdoutPipe()
	if err != nil {
		return err
	}
	var errb strings.Builder
	s.Stderr = &errb
	cmd := fmt.Sprintf("sudo -n tar -C %s -cf - %s", quote(path.Dir(src)), quote(path.Base(src)))
	if err := s.Start(cmd); err != nil {
		return err
	}
	extractErr := extract(tar.NewReader(out), path.Base(src), dest)
	waitErr := s.Wait()
	if waitErr != nil {
		return fmt.Errorf("download %s: %s", src, firstNonEmpty(strings.TrimSpace(errb.String()), waitErr.Error()))
	}
	return extractErr
}

// extract writes the tar stream's entries, renaming the top entry to dest and
// refusing paths that would escape it.
func extract(tr *tar.Reader, top, dest string) error {
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(path.Clean(h.Name), top), "/")
		if strings.HasPrefix(rel, "..") {
			return fmt.Errorf("download: refusing path %q", h.Name)
		}
		target := filepath.Join(dest, filepath.FromSlash(rel))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, h.FileInfo().Mode().Perm()|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, h.FileInfo().Mode().Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		case tar.TypeSymlink:
			_ = os.Remove(target)
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		}
	}
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// quote makes s one word for a POSIX shell.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
