package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
)

// qemuImgBinary is a variable so tests could point at a fake.
var qemuImgBinary = "qemu-img"

// ExecError is a failed qemu-img run. Stderr is trimmed so it fits in a
// message; the exit code is kept because some subcommands (check) encode
// their verdict in it.
type ExecError struct {
	Args     []string
	ExitCode int // -1 if it did not exit normally
	Stderr   string
	Err      error
}

func (e *ExecError) Error() string {
	msg := "qemu-img " + e.Args[0] + " failed"
	if e.Stderr != "" {
		return msg + ": " + e.Stderr
	}
	return msg + ": " + e.Err.Error()
}

func (e *ExecError) Unwrap() error { return e.Err }

// runQemuImg runs qemu-img under ctx and returns stdout. A cancelled context
// is reported as the context's error, not as "signal: killed".
func runQemuImg(ctx context.Context, args ...string) ([]byte, error) {
	var stdout bytes.Buffer
	err := runQemuImgTo(ctx, &stdout, args...)
	return stdout.Bytes(), err
}

// runQemuImgTo is runQemuImg streaming stdout into w as qemu-img writes it
// (e.g. convert -p progress). All writes to w are done when it returns.
func runQemuImgTo(ctx context.Context, w io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, qemuImgBinary, args...)
	var stderr bytes.Buffer
	cmd.Stdout = w
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("qemu-img %s: %w", args[0], ctx.Err())
	}
	if errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("qemu-img not found in PATH (install qemu-utils on Debian/Ubuntu, qemu on macOS): %w", err)
	}
	code := -1
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	e := &ExecError{Args: args, ExitCode: code, Stderr: trimStderr(stderr.String()), Err: err}
	if strings.Contains(stderr.String(), "No space left on device") {
		// Said plainly and made testable with errors.Is(err, syscall.ENOSPC).
		e.Stderr = noSpaceMessage
		e.Err = syscall.ENOSPC
	}
	return e
}

// trimStderr keeps the useful head of qemu-img's stderr: check can print
// thousands of lines, and messages repeat the "qemu-img: " prefix.
func trimStderr(s string) string {
	const maxLines, maxBytes = 6, 1500
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "qemu-img:"))
		if l != "" {
			lines = append(lines, l)
		}
	}
	extra := 0
	if len(lines) > maxLines {
		extra = len(lines) - maxLines
		lines = lines[:maxLines]
	}
	out := strings.Join(lines, "; ")
	if len(out) > maxBytes {
		out = out[:maxBytes] + "..."
	}
	if extra > 0 {
		out += fmt.Sprintf(" (and %d more lines)", extra)
	}
	return out
}

// noSpaceMessage is how a full output filesystem is reported.
const noSpaceMessage = "no space left on device: the filesystem the output goes to is full; free space there or write elsewhere"

// asNoSpace turns a failed write into ENOSPC when the filesystem holding
// dir is (nearly) full: some qemu-img drivers (vmdk) report a full disk as
// "Invalid argument". It must run before the partial output is removed,
// which frees the space again.
func asNoSpace(err error, dir string) error {
	var e *ExecError
	if err == nil || errors.Is(err, syscall.ENOSPC) || !errors.As(err, &e) {
		return err
	}
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil || int64(st.Bavail)*int64(st.Bsize) >= 1<<20 {
		return err
	}
	e.Stderr, e.Err = noSpaceMessage, syscall.ENOSPC
	return err
}
