package bake

import (
	"bytes"
	"io"
	"strings"
	"sync"
)

// lineWriter prefixes each line written through it and hides secrets, so
// provisioner output reads as kiln's and never shows a sensitive variable.
type lineWriter struct {
	mu      sync.Mutex
	out     io.Writer
	prefix  string
	secrets []string
	buf     []byte
	tail    *tailLines
}

func newLineWriter(out io.Writer, prefix string, secrets []string, tail *tailLines) *lineWriter {
	return &lineWriter{out: out, prefix: prefix, secrets: secrets, tail: tail}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// Flush writes a last line that had no newline.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(string(w.buf))
		w.buf = nil
	}
}

func (w *lineWriter) emit(line string) {
	line = redact(strings.TrimRight(line, "\r"), w.secrets)
	if w.tail != nil {
		w.tail.add(line)
	}
	io.WriteString(w.out, w.prefix+line+"\n")
}

// redact replaces every secret in s.
func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "<sensitive>")
		}
	}
	return s
}

// tailLines keeps the last n lines, for error messages.
type tailLines struct {
	n     int
	lines []string
}

func (t *tailLines) add(line string) {
	t.lines = append(t.lines, line)
	if len(t.lines) > t.n {
		t.lines = t.lines[len(t.lines)-t.n:]
	}
}

func (t *tailLines) String() string { return strings.Join(t.lines, "\n") }
