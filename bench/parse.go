package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Line is one line a command printed, stamped when the bench read it.
type Line struct {
	At   time.Time
	Text string
}

// LineStamper is an io.Writer that splits what is written into lines,
// stamps each with the time it arrived and passes it to a callback. Used as
// a command's Stderr, it sees each line as soon as the command flushes it.
type LineStamper struct {
	mu     sync.Mutex
	buf    []byte
	lines  []Line
	OnLine func(Line) // may be nil; called without the lock held
	now    func() time.Time
}

func (s *LineStamper) Write(p []byte) (int, error) {
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	at := now()
	s.mu.Lock()
	s.buf = append(s.buf, p...)
	var fresh []Line
	for {
		i := strings.IndexByte(string(s.buf), '\n')
		if i < 0 {
			break
		}
		l := Line{At: at, Text: strings.TrimRight(string(s.buf[:i]), "\r")}
		s.buf = s.buf[i+1:]
		s.lines = append(s.lines, l)
		fresh = append(fresh, l)
	}
	s.mu.Unlock()
	if s.OnLine != nil {
		for _, l := range fresh {
			s.OnLine(l)
		}
	}
	return len(p), nil
}

// Lines returns every complete line so far, plus a last unterminated one.
func (s *LineStamper) Lines() []Line {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]Line(nil), s.lines...)
	if len(s.buf) > 0 {
		out = append(out, Line{At: time.Now(), Text: string(s.buf)})
	}
	return out
}

// Text is every line joined, for error messages.
func (s *LineStamper) Text() string {
	var b strings.Builder
	for _, l := range s.Lines() {
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

var (
	sshPortLine = regexp.MustCompile(`ssh on 127\.0\.0\.1:(\d+)`)
	stepLine    = regexp.MustCompile(`==> \[(\d+)/(\d+)\] (\S+) (done|failed) in (\S+)`)
)

// SSHPort returns the forwarded SSH port a build or run line announces.
func SSHPort(line string) (int, bool) {
	m := sshPortLine.FindStringSubmatch(line)
	if m == nil {
		return 0, false
	}
	p, err := strconv.Atoi(m[1])
	return p, err == nil
}

// Step is a "==> [i/n] name done in d" progress line of kiln build.
type Step struct {
	Index, Of int
	Name      string
	Done      bool
	Took      time.Duration // as printed: 0.1 s resolution, whole seconds from a minute on
}

// ParseStep reads a build progress line.
func ParseStep(line string) (Step, bool) {
	m := stepLine.FindStringSubmatch(line)
	if m == nil {
		return Step{}, false
	}
	i, _ := strconv.Atoi(m[1])
	n, _ := strconv.Atoi(m[2])
	d, err := time.ParseDuration(m[5])
	if err != nil {
		return Step{}, false
	}
	return Step{Index: i, Of: n, Name: m[3], Done: m[4] == "done", Took: d}, true
}

// StepTimes maps each finished step of a build to the time its line
// arrived.
func StepTimes(lines []Line) map[string]time.Time {
	out := map[string]time.Time{}
	for _, l := range lines {
		if s, ok := ParseStep(l.Text); ok && s.Done {
			out[s.Name] = l.At
		}
	}
	return out
}

// GoBench is one result line of `go test -bench -benchmem`.
type GoBench struct {
	Name        string // without the -GOMAXPROCS suffix
	N           int
	NsPerOp     float64
	BytesPerOp  float64
	AllocsPerOp float64
}

var goBenchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+([\d.]+) ns/op(.*)$`)

// ParseGoBench reads the result lines of `go test -bench` output; other
// lines are skipped.
func ParseGoBench(out string) []GoBench {
	var res []GoBench
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := goBenchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		b := GoBench{Name: m[1]}
		b.N, _ = strconv.Atoi(m[2])
		b.NsPerOp, _ = strconv.ParseFloat(m[3], 64)
		f := strings.Fields(m[4])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "B/op":
				b.BytesPerOp = v
			case "allocs/op":
				b.AllocsPerOp = v
			}
		}
		res = append(res, b)
	}
	return res
}

// MapExtent is one entry of `qemu-img map --output=json`.
type MapExtent struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Depth  int   `json:"depth"`
	Zero   bool  `json:"zero"`
	Data   bool  `json:"data"`
}

// DataBytes sums the extents that hold data (not zeroes): in the top layer
// only (depth 0), and in the whole backing chain.
func DataBytes(mapJSON []byte) (top, chain int64, err error) {
	var ext []MapExtent
	if err := json.Unmarshal(mapJSON, &ext); err != nil {
		return 0, 0, fmt.Errorf("qemu-img map: %w", err)
	}
	for _, e := range ext {
		if !e.Data || e.Zero {
			continue
		}
		chain += e.Length
		if e.Depth == 0 {
			top += e.Length
		}
	}
	return top, chain, nil
}

// ProcKB reads a "Name:  123 kB" field of /proc/PID/status text, in bytes.
func ProcKB(status, field string) (int64, bool) {
	for _, line := range strings.Split(status, "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, false
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, false
		}
		if len(f) > 1 && strings.EqualFold(f[1], "kB") {
			v *= 1024
		}
		return v, true
	}
	return 0, false
}

// Accelerator reads the "accelerator: X" line of `kiln doctor`.
func Accelerator(doctor string) string {
	for _, line := range strings.Split(doctor, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "accelerator:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
