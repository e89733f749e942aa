// Command testsummary reads `go test -json` on stdin and prints what plain
// `go test` prints (a line per package, the output of failed tests), then
// every skipped test with its reason, so a skip is never mistaken for a
// pass. It exits 1 when any test or package failed.
//
//	go test -json ./... | go run ./internal/testsummary [-v]
//
// With -v every line is passed on as it comes, as `go test -v` prints it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of test2json output.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type key struct{ pkg, test string }

func main() {
	verbose := len(os.Args) > 1 && os.Args[1] == "-v"
	failed, err := summarize(os.Stdin, os.Stdout, verbose)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

func summarize(in io.Reader, out io.Writer, verbose bool) (failed bool, err error) {
	output := map[key][]string{}
	var skips []string
	results := 0 // package results seen: none means go test never ran
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			fmt.Fprintln(out, sc.Text()) // build errors come as plain text
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output":
			output[k] = append(output[k], e.Output)
			if verbose {
				fmt.Fprint(out, e.Output)
			}
		case "skip":
			if e.Test != "" {
				skips = append(skips, fmt.Sprintf("%s %s: %s", e.Package, e.Test, skipReason(output[k])))
			} else {
				results++
				if !verbose {
					fmt.Fprintf(out, "?   \t%s\t[no test files]\n", e.Package)
				}
			}
			delete(output, k)
		case "pass":
			if e.Test == "" {
				results++
				if !verbose {
					fmt.Fprintf(out, "ok  \t%s\t%.3fs\n", e.Package, e.Elapsed)
				}
			}
			delete(output, k)
		case "fail":
			failed = true
			if e.Test != "" && !verbose {
				fmt.Fprint(out, strings.Join(output[k], "")) // the failed test's own lines
			}
			if e.Test == "" && !verbose {
				// Package-level output holds the failing tests' lines too.
				fmt.Fprint(out, strings.Join(output[k], ""))
				fmt.Fprintf(out, "FAIL\t%s\t%.3fs\n", e.Package, e.Elapsed)
			}
			delete(output, k)
		}
	}
	if err := sc.Err(); err != nil {
		return true, err
	}
	if results == 0 && !failed {
		fmt.Fprintln(out, "testsummary: go test reported no package result")
		failed = true
	}
	if len(skips) > 0 {
		sort.Strings(skips)
		fmt.Fprintf(out, "\nskipped (%d):\n", len(skips))
		for _, s := range skips {
			fmt.Fprintf(out, "  %s\n", s)
		}
	}
	return failed, nil
}

// skipReason is what the test said when it skipped: its last output line
// other than the "--- SKIP" line itself.
func skipReason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "--- SKIP") || strings.HasPrefix(l, "=== ") {
			continue
		}
		// "file_test.go:12: reason" → "reason (file_test.go:12)"
		if loc, msg, ok := strings.Cut(l, ": "); ok && strings.Contains(loc, "_test.go:") {
			return msg + " (" + loc + ")"
		}
		return l
	}
	return "no reason given"
}
