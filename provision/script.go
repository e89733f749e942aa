package provision

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/pkg/sftp"
)

// Script is a shell script to run in the guest.
type Script struct {
	Body string            // the script; run by bash with -e unless it has its own #! line
	Env  map[string]string // exported to the script
	// User the script runs as, through sudo: "root" for provisioners by
	// default, or another guest account; "" runs it as the SSH user itself.
	User string
}

var (
	envName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	userName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
)

// ValidEnvName says whether name can be exported to a script.
func ValidEnvName(name string) bool { return envName.MatchString(name) }

// ValidUserName says whether name is an account a script can run as: the
// portable Linux account names, which also keeps it safe on a command line.
func ValidUserName(name string) bool { return userName.MatchString(name) }

// Command is the guest command line that runs an uploaded script at file.
func (s Script) Command(file string) (string, error) {
	var b strings.Builder
	switch {
	case s.User == "":
	case !ValidUserName(s.User):
		return "", fmt.Errorf("user %q: use a Linux account name (lower-case letters, digits, _ and -)", s.User)
	case s.User == "root":
		b.WriteString("sudo -n ")
	default:
		// -H: the account's own HOME, as a login would give it.
		b.WriteString("sudo -n -H -u " + s.User + " ")
	}
	b.WriteString("env")
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		if !ValidEnvName(k) {
			return "", fmt.Errorf("environment variable name %q: use letters, digits and _", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(" " + k + "=" + quote(s.Env[k]))
	}
	if strings.HasPrefix(s.Body, "#!") {
		b.WriteString(" " + quote(file))
	} else {
		b.WriteString(" bash -e " + quote(file))
	}
	return b.String(), nil
}

// RunScript uploads the script over SFTP, runs it with stdin closed and its
// output streamed, removes it, and returns its exit status.
func (c *Client) RunScript(ctx context.Context, s Script, stdout, stderr io.Writer) (int, error) {
	sc, err := sftp.NewClient(c.Client)
	if err != nil {
		return -1, fmt.Errorf("start SFTP: %w", err)
	}
	dir := stagingDir("kiln-script")
	file := path.Join(dir, "script")
	err = func() error {
		defer sc.Close()
		if err := sc.Mkdir(dir); err != nil {
			return err
		}
		if err := sc.Chmod(dir, 0o755); err != nil {
			return err
		}
		f, err := sc.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
		if err != nil {
			return err
		}
		if _, err := f.ReadFrom(bytes.NewReader([]byte(s.Body))); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return sc.Chmod(file, 0o755)
	}()
	if err != nil {
		return -1, fmt.Errorf("upload script: %w", err)
	}
	cmd, err := s.Command(file)
	if err != nil {
		return -1, err
	}
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	user := s.User
	if user == "" {
		user = "the SSH user"
	}
	logged := fmt.Sprintf("script %s (as %s, env %s)", file, user, strings.Join(keys, ","))
	return c.run(ctx, cmd+"; st=$?; rm -rf "+quote(dir)+"; exit $st", logged, nil, stdout, stderr)
}

// PutFile writes data to remote over SFTP with mode, as the login user.
func (c *Client) PutFile(ctx context.Context, remote string, data []byte, mode os.FileMode) error {
	sc, err := sftp.NewClient(c.Client)
	if err != nil {
		return fmt.Errorf("start SFTP: %w", err)
	}
	defer sc.Close()
	f, err := sc.OpenFile(remote, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("upload %s: %w", remote, err)
	}
	if _, err := f.ReadFrom(bytes.NewReader(data)); err != nil {
		f.Close()
		return fmt.Errorf("upload %s: %w", remote, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("upload %s: %w", remote, err)
	}
	return sc.Chmod(remote, mode)
}
