package template

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Diagnostic is one problem found while loading a template. It carries a
// position rather than wrapping an hcl.Diagnostic so that callers (the CLI,
// editors, tests) need not import HCL to report it.
type Diagnostic struct {
	File    string // as named to Load or in Options.VarFiles; empty for problems with --var or the environment
	Line    int    // 1-based; 0 when the problem concerns the whole file
	Column  int    // 1-based, in characters
	Summary string // short and generic, e.g. "Unsupported argument"
	Detail  string // one or more sentences specific to this occurrence
}

// String renders the diagnostic as "FILE:LINE:COL: summary: detail",
// dropping the parts it does not have.
func (d Diagnostic) String() string {
	var b strings.Builder
	if d.File != "" {
		b.WriteString(d.File)
		if d.Line > 0 {
			fmt.Fprintf(&b, ":%d:%d", d.Line, d.Column)
		}
		b.WriteString(": ")
	}
	b.WriteString(d.Summary)
	if d.Detail != "" {
		b.WriteString(": ")
		// One problem per line keeps the output grep-able.
		b.WriteString(strings.Join(strings.Fields(d.Detail), " "))
	}
	return b.String()
}

// Diagnostics is the error returned by Load and Validate. It lists every
// problem found, so that a template can be fixed in one pass rather than one
// error per run.
type Diagnostics []Diagnostic

// Error renders the problems one per line.
func (ds Diagnostics) Error() string {
	lines := make([]string, len(ds))
	for i, d := range ds {
		lines[i] = d.String()
	}
	return strings.Join(lines, "\n")
}

// fromHCL keeps the errors of diags (HCL warnings carry nothing we act on),
// drops exact duplicates and orders them by file, then position. Files keep
// the order in which they first appear so that problems with --var come
// before those in the template, as they were found.
func fromHCL(diags hcl.Diagnostics) Diagnostics {
	var out Diagnostics
	seen := map[Diagnostic]bool{}
	rank := map[string]int{}
	for _, hd := range diags {
		if hd.Severity != hcl.DiagError {
			continue
		}
		d := Diagnostic{Summary: hd.Summary, Detail: hd.Detail}
		rng := hd.Subject
		if rng == nil {
			rng = hd.Context
		}
		if rng != nil {
			d.File = rng.Filename
			if rng.Start.Line > 0 {
				d.Line, d.Column = rng.Start.Line, rng.Start.Column
			}
		}
		if seen[d] {
			continue
		}
		seen[d] = true
		if _, ok := rank[d.File]; !ok {
			rank[d.File] = len(rank)
		}
		out = append(out, d)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.File != b.File {
			return rank[a.File] < rank[b.File]
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return out
}

// diagAt builds an error diagnostic at rng (which may be nil).
func diagAt(rng *hcl.Range, summary, format string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  rng,
	}
}

// readProblem says why a file could not be read without repeating its
// name, which the diagnostic already gives: "no such file or directory"
// rather than "open FILE: no such file or directory".
func readProblem(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
