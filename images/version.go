package images

import "strings"

// CompareVersions orders versions "semantic-ish", so that "hello" resolves to
// the version a person would call newest without kiln imposing semver:
//
//   - a version is split into runs of digits and runs of letters; ".", "-"
//     and "_" only separate, and "+" starts build metadata, which is ignored
//     (as in semver);
//   - digit runs compare numerically (1.9 < 1.10, 01 == 1), letter runs
//     byte-wise (alpha < beta < rc);
//   - at any position a letter run sorts before the end of the version, and
//     the end before a digit run, so 1.0-rc1 < 1.0 < 1.0-1 < 1.0.1.
//
// It returns -1, 0 or +1. Distinct strings can compare equal ("1.0" and
// "1-0"); callers that need a total order break ties themselves (Resolve and
// List use BuildEnd, then the plain string).
func CompareVersions(a, b string) int {
	a, _, _ = strings.Cut(a, "+")
	b, _, _ = strings.Cut(b, "+")
	for {
		sa, ra := nextSegment(a)
		sb, rb := nextSegment(b)
		if c := compareSegments(sa, sb); c != 0 {
			return c
		}
		if sa == "" { // both ended
			return 0
		}
		a, b = ra, rb
	}
}

// segment ranks: a letter run, the end of the version, a digit run.
const (
	rankAlpha = iota
	rankEnd
	rankNum
)

func segmentRank(s string) int {
	switch {
	case s == "":
		return rankEnd
	case isDigit(s[0]):
		return rankNum
	default:
		return rankAlpha
	}
}

func compareSegments(a, b string) int {
	ra, rb := segmentRank(a), segmentRank(b)
	if ra != rb {
		return cmpInt(ra, rb)
	}
	if ra == rankNum {
		a = strings.TrimLeft(a, "0")
		b = strings.TrimLeft(b, "0")
		// Longer digit strings are bigger; this never overflows, unlike
		// strconv on a 40-digit date-time version.
		if len(a) != len(b) {
			return cmpInt(len(a), len(b))
		}
	}
	return strings.Compare(a, b)
}

// nextSegment returns the first run of digits or of non-separator
// non-digits in s, and what follows it.
func nextSegment(s string) (seg, rest string) {
	i := 0
	for i < len(s) && isSeparator(s[i]) {
		i++
	}
	s = s[i:]
	if s == "" {
		return "", ""
	}
	digits := isDigit(s[0])
	j := 1
	for j < len(s) && !isSeparator(s[j]) && isDigit(s[j]) == digits {
		j++
	}
	return s[:j], s[j:]
}

func isSeparator(c byte) bool { return c == '.' || c == '-' || c == '_' }
func isDigit(c byte) bool     { return c >= '0' && c <= '9' }

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
