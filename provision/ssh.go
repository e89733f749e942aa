// Package provision talks to a guest over SSH: it waits for the guest to be
// ready, runs commands with their output streamed, and moves files over SFTP.
// It verifies the guest's host key against the one kiln put in the seed; it
// never trusts the first key it sees.
package provision

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kiln-dev/kiln/internal/fileutil"
	"github.com/kiln-dev/kiln/internal/termsafe"
)

// KeyPair is a per-VM client key: the guest learns AuthorizedKey from the
// seed, kiln signs with Signer.
type KeyPair struct {
	Signer        ssh.Signer
	PrivatePEM    []byte // OpenSSH format, for `ssh -i`
	AuthorizedKey string // "ssh-ed25519 AAAA…"
}

// NewKeyPair makes a fresh ed25519 key pair.
func NewKeyPair(comment string) (KeyPair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return KeyPair{}, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return KeyPair{}, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return KeyPair{}, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return KeyPair{}, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	if comment != "" {
		line += " " + comment
	}
	return KeyPair{Signer: signer, PrivatePEM: pem.EncodeToMemory(block), AuthorizedKey: line}, nil
}

// Target says how to reach a guest.
type Target struct {
	Addr      string     // host:port of the forwarded SSH port, e.g. 127.0.0.1:40022
	User      string     // login user
	Signer    ssh.Signer // client key
	HostKeys  []string   // the guest's host public keys, authorized_keys format
	SerialLog string     // named in errors, so a user knows where to look

	// For a guest whose own seed (a Packer template's) creates the login:
	// Password logs in when there is no Signer (or besides it), and
	// TrustFirstKey, when HostKeys is empty, accepts the first host key the
	// guest presents; Client.HostKey then says which, so later connections
	// pin it.
	Password      string
	TrustFirstKey bool
}

// ErrHostKeyMismatch means the guest presented a host key other than the one
// kiln gave it: something else answered on the port.
var ErrHostKeyMismatch = errors.New("host key mismatch")

func (t Target) config(timeout time.Duration, seen *string) (*ssh.ClientConfig, error) {
	var auth []ssh.AuthMethod
	if t.Signer != nil {
		auth = append(auth, ssh.PublicKeys(t.Signer))
	}
	if t.Password != "" {
		pw := t.Password
		auth = append(auth, ssh.Password(pw), ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
			answers := make([]string, len(qs))
			for i := range answers {
				answers[i] = pw
			}
			return answers, nil
		}))
	}
	if len(t.HostKeys) == 0 && t.TrustFirstKey {
		return &ssh.ClientConfig{
			User: t.User, Auth: auth, Timeout: timeout,
			HostKeyCallback: func(_ string, _ net.Addr, got ssh.PublicKey) error {
				*seen = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(got)))
				return nil
			},
		}, nil
	}
	var keys []ssh.PublicKey
	for _, line := range t.HostKeys {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("parse host key: %w", err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no host key to verify the guest against")
	}
	var algos []string
	for _, k := range keys {
		algos = append(algos, k.Type())
	}
	return &ssh.ClientConfig{
		User: t.User,
		Auth: auth,
		HostKeyCallback: func(_ string, _ net.Addr, got ssh.PublicKey) error {
			for _, k := range keys {
				if bytes.Equal(k.Marshal(), got.Marshal()) {
					*seen = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(got)))
					return nil
				}
			}
			return fmt.Errorf("%w: the guest at %s presented %s, not the key kiln generated for it", ErrHostKeyMismatch, t.Addr, ssh.FingerprintSHA256(got))
		},
		HostKeyAlgorithms: algos,
		Timeout:           timeout,
	}, nil
}

// Client is an SSH connection to a guest.
type Client struct {
	*ssh.Client
	target  Target
	hostKey string
}

// HostKey is the host key the guest presented, authorized_keys format.
func (c *Client) HostKey() string { return c.hostKey }

// pollInterval is short so a ready sshd is noticed within a second. Under
// user-mode networking QEMU accepts the TCP connection even before the guest
// listens, so only a completed handshake proves readiness.
const pollInterval = 250 * time.Millisecond

// Dial connects once, with a handshake timeout.
func Dial(ctx context.Context, t Target, timeout time.Duration) (*Client, error) {
	var seen string
	cfg, err := t.config(timeout, &seen)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	c, chans, reqs, err := ssh.NewClientConn(conn, t.Addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return &Client{Client: ssh.NewClient(c, chans, reqs), target: t, hostKey: seen}, nil
}

// WaitForSSH polls until the guest completes an SSH handshake and accepts
// the key, the timeout passes, vmDone closes (the VM died), or ctx ends.
func WaitForSSH(ctx context.Context, t Target, timeout time.Duration, vmDone <-chan struct{}) (*Client, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		c, err := Dial(ctx, t, 3*time.Second)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, ErrHostKeyMismatch) {
			return nil, err
		}
		last = err
		slog.Debug("ssh not ready", "addr", t.Addr, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-vmDone:
			return nil, fmt.Errorf("the VM stopped before SSH answered; see the serial log: %s%s", t.SerialLog, serialTail(t.SerialLog))
		case <-time.After(pollInterval):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the guest did not answer SSH on %s within %s (last error: %v); see the serial log: %s%s",
				t.Addr, timeout, last, t.SerialLog, serialTail(t.SerialLog))
		}
	}
}

// serialTail quotes the last lines of the serial log, if any, so the reason
// is often visible without opening the file.
func serialTail(path string) string {
	// The guest writes the log: read only its end, and escape what it
	// wrote, which goes to the user's terminal.
	b, err := readTail(path, 64<<10)
	if err != nil || len(b) == 0 {
		return ""
	}
	// Terminal formatting (colours, cursor moves) is dropped; any other
	// control character is escaped.
	text := termsafe.Text(ansiEscape.ReplaceAllString(strings.ReplaceAll(string(b), "\r", ""), ""))
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return "\nlast lines of the serial console:\n  " + strings.Join(lines, "\n  ")
}

// ansiEscape matches the CSI and two-character escape sequences systemd
// and the kernel print on a console.
var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])`)

// readTail returns at most the last n bytes of a regular file.
func readTail(path string, n int64) ([]byte, error) {
	f, err := fileutil.OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(st.Size()-n, 0)
	return io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
}

// Run runs cmd in a shell on the guest, streaming its output, and returns
// its exit status. A non-nil error means the command could not be run or its
// status is unknown (connection lost, ctx ended).
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return c.run(ctx, cmd, cmd, stdin, stdout, stderr)
}

// run is Run with a separate text for the debug log, so commands that carry
// secrets (script environments) are logged without them.
func (c *Client) run(ctx context.Context, cmd, logged string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	slog.Debug("ssh exec", "addr", c.target.Addr, "cmd", logged)
	start := time.Now()
	defer func() {
		slog.Debug("ssh exec done", "addr", c.target.Addr, "took", time.Since(start).Round(time.Millisecond))
	}()
	s, err := c.NewSession()
	if err != nil {
		return -1, fmt.Errorf("open SSH session: %w", err)
	}
	defer s.Close()
	s.Stdin, s.Stdout, s.Stderr = stdin, stdout, stderr
	done := make(chan error, 1)
	if err := s.Start(cmd); err != nil {
		return -1, fmt.Errorf("start %q: %w", cmd, err)
	}
	go func() { done <- s.Wait() }()
	select {
	case <-ctx.Done():
		_ = s.Signal(ssh.SIGTERM)
		s.Close()
		return -1, ctx.Err()
	case err := <-done:
		return exitStatus(err)
	}
}

func exitStatus(err error) (int, error) {
	if err == nil {
		return 0, nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus(), nil
	}
	var missing *ssh.ExitMissingError
	if errors.As(err, &missing) {
		return -1, errors.New("the connection closed before the command reported its exit status")
	}
	return -1, err
}

// Output runs cmd and returns its standard output.
func (c *Client) Output(ctx context.Context, cmd string) (string, error) {
	var out, errb bytes.Buffer
	status, err := c.Run(ctx, cmd, nil, &out, &errb)
	if err != nil {
		return "", err
	}
	if status != 0 {
		return out.String(), fmt.Errorf("%q exited with status %d: %s", cmd, status, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
