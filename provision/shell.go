package provision

import (
	"fmt"
	"os"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"
)

// Shell opens an interactive login shell on the guest, with the local
// terminal in raw mode, and returns the shell's exit status.
func (c *Client) Shell() (int, error) {
	s, err := c.NewSession()
	if err != nil {
		return -1, err
	}
	defer s.Close()
	fd := int(os.Stdin.Fd())
	w, h, err := term.GetSize(fd)
	if err != nil {
		w, h = 80, 24
	}
	t := os.Getenv("TERM")
	if t == "" {
		t = "xterm"
	}
	if err := s.RequestPty(t, h, w, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
		return -1, fmt.Errorf("request a terminal: %w", err)
	}
	old, err := term.MakeRaw(fd)
	if err != nil {
		return -1, err
	}
	defer term.Restore(fd, old)
	s.Stdin, s.Stdout, s.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := s.Shell(); err != nil {
		return -1, err
	}
	return exitStatus(s.Wait())
}
