// Package bench measures what kiln's users feel: how long a build takes and
// where the time goes, how soon kiln notices a guest is ready, how small the
// images are, how fast fleets come up and how a rollout's switch looks from
// a client. `make bench` runs TestBench (KILN_BENCH=1), which boots real VMs
// through bin/kiln, prints one Markdown table and writes it, with the
// machine's description, to docs/benchmarks.md.
//
// This file holds the pure parts (statistics, formatting, the report); the
// measurements live in bench_test.go, so `go test ./...` checks the parts
// here without booting anything.
package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Kind says what a figure's samples are, which picks their unit.
type Kind int

const (
	Duration Kind = iota // seconds
	Bytes                // bytes
	Rate                 // MB/s (10^6 bytes a second)
	PerOp                // nanoseconds per operation
	Count                // a plain number, e.g. failed requests
)

// Figure is one row of the table: a named quantity measured one or more
// times.
type Figure struct {
	Section string
	Name    string
	Kind    Kind
	Samples []float64
	Note    string
}

// Summary is the median, minimum and maximum of samples. With an even
// number of samples the median is the mean of the middle two.
func Summary(samples []float64) (median, lo, hi float64) {
	if len(samples) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		median = s[n/2]
	} else {
		median = (s[n/2-1] + s[n/2]) / 2
	}
	return median, s[0], s[n-1]
}

// Median is Summary's median.
func Median(samples []float64) float64 {
	m, _, _ := Summary(samples)
	return m
}

// Seconds turns durations into samples.
func Seconds(ds ...time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

// unit picks one unit for all of a figure's numbers from its median, so a
// row never mixes "900 ms" and "1.2 s".
func unit(k Kind, median float64) (name string, scale float64) {
	a := math.Abs(median)
	switch k {
	case Duration:
		switch {
		case a >= 1 || a == 0:
			return "s", 1
		case a >= 1e-3:
			return "ms", 1e-3
		default:
			return "µs", 1e-6
		}
	case Bytes:
		switch {
		case a >= 1<<30:
			return "GiB", 1 << 30
		case a >= 1<<20:
			return "MiB", 1 << 20
		case a >= 1<<10:
			return "KiB", 1 << 10
		default:
			return "B", 1
		}
	case Rate:
		return "MB/s", 1
	case PerOp:
		switch {
		case a >= 1e6:
			return "ms/op", 1e6
		case a >= 1e3:
			return "µs/op", 1e3
		default:
			return "ns/op", 1
		}
	case Count:
		return "", 1
	}
	return "", 1
}

// number prints v (already scaled) with three significant digits or so.
func number(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "–"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// Cells are the table cells of f: median, min, max (each with its unit)
// and the number of runs.
func (f Figure) Cells() (median, lo, hi, runs string) {
	m, l, h := Summary(f.Samples)
	u, scale := unit(f.Kind, m)
	cell := func(v float64) string {
		if math.IsNaN(v) {
			return "–"
		}
		if f.Kind == Count && v == math.Trunc(v) {
			return fmt.Sprintf("%.0f", v)
		}
		return strings.TrimSpace(number(v/scale) + " " + u)
	}
	return cell(m), cell(l), cell(h), fmt.Sprint(len(f.Samples))
}

// FormatBytes prints a size for notes, in the unit Cells would pick.
func FormatBytes(n float64) string {
	u, scale := unit(Bytes, n)
	return number(n/scale) + " " + u
}

// FormatSeconds prints a duration for notes, in the unit Cells would pick.
func FormatSeconds(s float64) string {
	u, scale := unit(Duration, s)
	return number(s/scale) + " " + u
}

// Report collects figures in the order they were measured.
type Report struct {
	Figures []Figure
	section string
}

// Section starts a group of rows; the table shows its name once.
func (r *Report) Section(name string) { r.section = name }

// Add records a figure in the current section and returns it for logging.
func (r *Report) Add(name string, k Kind, samples []float64, note string) Figure {
	f := Figure{Section: r.section, Name: name, Kind: k, Samples: samples, Note: note}
	r.Figures = append(r.Figures, f)
	return f
}

// Table writes the figures as one Markdown table, with a bold row naming
// each section.
func (r *Report) Table(w io.Writer) {
	fmt.Fprintln(w, "| figure | median | min | max | runs | note |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | --- |")
	section := ""
	for _, f := range r.Figures {
		if f.Section != section && f.Section != "" {
			section = f.Section
			fmt.Fprintf(w, "| **%s** | | | | | |\n", cell(section))
		}
		m, lo, hi, n := f.Cells()
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", cell(f.Name), m, lo, hi, n, cell(f.Note))
	}
}

// cell keeps text from breaking the table.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// Machine describes where the figures were measured.
type Machine struct {
	Date        time.Time
	CPU         string
	Cores       int
	MemoryBytes int64
	Accel       string
	QEMU        string
	QEMUImg     string
	Kernel      string
	Kiln        string
	Go          string
	LoadAvg     string // at the start, since other work on the machine skews the figures
	LoadAvgEnd  string
	OtherVMs    string // QEMU processes of others seen during the run
	Duration    time.Duration
	Settings    string // the run counts used
}

// Document is docs/benchmarks.md: title, date, machine, the table and how
// each figure was measured.
func (r *Report) Document(w io.Writer, m Machine, method string) {
	fmt.Fprintf(w, "# kiln benchmarks\n\n")
	fmt.Fprintf(w, "Measured %s by `make bench` (`bench/bench_test.go`); the run took %s. "+
		"Regenerate with `make bench` — the figures are only comparable on the same machine.\n\n",
		m.Date.UTC().Format("2006-01-02 15:04 MST"), m.Duration.Round(time.Second))
	fmt.Fprintf(w, "## Machine\n\n")
	fmt.Fprintf(w, "| | |\n| --- | --- |\n")
	rows := [][2]string{
		{"CPU", m.CPU},
		{"cores", fmt.Sprint(m.Cores)},
		{"memory", FormatBytes(float64(m.MemoryBytes))},
		{"accelerator", m.Accel},
		{"QEMU", m.QEMU},
		{"qemu-img", m.QEMUImg},
		{"kernel", m.Kernel},
		{"kiln", m.Kiln},
		{"Go", m.Go},
		{"load average at start", m.LoadAvg},
		{"load average at the end", m.LoadAvgEnd},
		{"other VMs during the run", m.OtherVMs},
		{"runs", m.Settings},
	}
	for _, row := range rows {
		fmt.Fprintf(w, "| %s | %s |\n", row[0], cell(row[1]))
	}
	fmt.Fprintf(w, "\n## Figures\n\n")
	r.Table(w)
	fmt.Fprintf(w, "\n## How measured\n\n%s", method)
}
