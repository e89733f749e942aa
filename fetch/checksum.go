// Package fetch downloads base images into a content-addressed cache.
//
// A download is always checked against a checksum the user gave (or a
// SHA256SUMS-style list it points at), hashed while it streams, and only
// renamed into the cache once it matches, so the cache never holds a file
// that was not verified. The cache is keyed by the checksum, not the URL:
// the same image from a mirror is reused, and an offline machine finds it
// without touching the network.
//
// Layout of a Fetcher's CacheDir:
//
//	sha256-<hex>, sha512-<hex>   verified files, read-only (0444)
//	list-<key>                   last usable copy of each http(s) checksum list, for offline use
//	tmp-*                        downloads in progress (removed on failure; day-old ones are swept)
package fetch

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Checksum is a parsed checksum spec: either a digest (Algo and Hex) or,
// for "file:URL", the URL of a checksum list (ListURL) that Fetch resolves
// to a digest. When Hex is set, ListURL is ignored.
type Checksum struct {
	Algo    string // "sha256" or "sha512"
	Hex     string // lower-case hex digest
	ListURL string // for "file:URL": http(s) or file URL of a SHA256SUMS-style list
}

// String returns the spec in the form ParseChecksum reads, so errors and
// logs show what the user would write.
func (c Checksum) String() string {
	if c.Hex == "" && c.ListURL != "" {
		return "file:" + c.ListURL
	}
	return c.Algo + ":" + c.Hex
}

// ErrNoEntry matches the error returned when a checksum list has no entry
// for the file being fetched.
var ErrNoEntry = errors.New("no entry in checksum list")

// hexLen is the digest length, in hex digits, of each accepted algorithm.
var hexLen = map[string]int{"sha256": 64, "sha512": 128}

const checksumForms = "sha256:HEX, sha512:HEX or file:URL of a SHA256SUMS list"

// ParseChecksum parses "sha256:<64 hex>", "sha512:<128 hex>" or
// "file:<URL of a checksum list>". A checksum is required: there is no
// "none", because an unverified base image would be baked into every image
// built from it.
func ParseChecksum(s string) (Checksum, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Checksum{}, fmt.Errorf("no checksum given: want %s", checksumForms)
	}
	bad := func(format string, args ...any) (Checksum, error) {
		return Checksum{}, fmt.Errorf("checksum %q: %s", s, fmt.Sprintf(format, args...))
	}
	algo, val, ok := strings.Cut(s, ":")
	if !ok {
		if strings.EqualFold(s, "none") {
			return bad("a checksum is required: want %s", checksumForms)
		}
		return bad("want %s", checksumForms)
	}
	algo = strings.ToLower(algo)
	if algo == "file" {
		if err := checkListURL(val); err != nil {
			return bad("%v", err)
		}
		return Checksum{ListURL: val}, nil
	}
	if _, ok := hexLen[algo]; !ok {
		return bad("unsupported algorithm %q: want %s", algo, checksumForms)
	}
	c := Checksum{Algo: algo, Hex: strings.ToLower(val)}
	if err := c.checkDigest(); err != nil {
		return bad("%v", err)
	}
	return c, nil
}

// checkDigest reports whether Algo and Hex form a usable digest. Hex must
// already be lower case: it becomes part of a cache file name.
func (c Checksum) checkDigest() error {
	n, ok := hexLen[c.Algo]
	if !ok {
		return fmt.Errorf("unsupported algorithm %q: want sha256 or sha512", c.Algo)
	}
	if len(c.Hex) != n {
		return fmt.Errorf("%s needs %d hex digits", c.Algo, n)
	}
	if i := strings.IndexFunc(c.Hex, func(r rune) bool { return !isLowerHex(r) }); i >= 0 {
		return fmt.Errorf("%s digest has a character that is not lower-case hex: %q", c.Algo, c.Hex[i:i+1])
	}
	return nil
}

func isLowerHex(r rune) bool { return r >= '0' && r <= '9' || r >= 'a' && r <= 'f' }

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return s != ""
}

// checkListURL accepts only absolute http, https and file URLs, so that a
// typo such as "file:SHA256SUMS" fails here rather than at download time.
func checkListURL(s string) error {
	if _, err := parseSourceURL(s); err != nil {
		return fmt.Errorf("file: needs the http://, https:// or file:// URL of a checksum list: %v", err)
	}
	return nil
}

// listError is a checksum-list problem. where is filled in by Fetch (e.g.
// "SHA256SUMS at https://…/SHA256SUMS") so the message names the list.
type listError struct {
	where string
	msg   string
	kind  error
}

func (e *listError) Error() string {
	w := e.where
	if w == "" {
		w = "checksum list"
	}
	return w + " " + e.msg
}

func (e *listError) Unwrap() error { return e.kind }

// digestNames names common digest lengths, to say which one a list used
// when it is not one kiln accepts.
var digestNames = map[int]string{32: "md5", 40: "sha1", 56: "sha224", 64: "sha256", 96: "sha384", 128: "sha512"}

// ParseSumsList finds fileName's entry in a checksum list such as
// SHA256SUMS, SHA512SUMS or Fedora's CHECKSUM. It reads GNU lines
// ("HEX  name", "HEX *name", with the "\" prefix for escaped names) and
// BSD/tagged lines ("SHA256 (name) = HEX"); other lines (comments, PGP
// armour) are skipped. A leading "./" on names is ignored. The algorithm
// comes from the digest length (64 hex digits: sha256, 128: sha512); the
// first usable entry wins.
func ParseSumsList(data []byte, fileName string) (Checksum, error) {
	want := strings.TrimPrefix(fileName, "./")
	if want == "" {
		return Checksum{}, errors.New("checksum list: no file name to look up")
	}
	entries := 0
	unsupported := ""
	for line := range strings.Lines(string(data)) {
		hexStr, name, tag, ok := parseSumsLine(line)
		if !ok {
			continue
		}
		entries++
		if strings.TrimPrefix(name, "./") != want {
			continue
		}
		algo := digestNames[len(hexStr)]
		if _, accepted := hexLen[algo]; accepted && (tag == "" || tag == algo) {
			return Checksum{Algo: algo, Hex: strings.ToLower(hexStr)}, nil
		}
		if unsupported == "" {
			unsupported = tag
			if unsupported == "" {
				unsupported = algo
			}
			if unsupported == "" {
				unsupported = fmt.Sprintf("a %d-hex-digit digest", len(hexStr))
			}
		}
	}
	switch {
	case unsupported != "":
		return Checksum{}, &listError{msg: fmt.Sprintf("lists %q only with %s, which kiln does not accept (want sha256 or sha512)", want, unsupported), kind: ErrNoEntry}
	case entries == 0:
		return Checksum{}, &listError{msg: `is not a checksum list (no "HEX  NAME" or "SHA256 (NAME) = HEX" lines)`, kind: ErrNoEntry}
	}
	return Checksum{}, &listError{msg: fmt.Sprintf("has no entry for %q", want), kind: ErrNoEntry}
}

// bsdTags maps the algorithm tags of BSD-style lines to kiln's names.
var bsdTags = map[string]string{"SHA256": "sha256", "SHA512": "sha512", "SHA2-256": "sha256", "SHA2-512": "sha512"}

// parseSumsLine splits one list line into its digest and file name. tag is
// the lower-cased algorithm of a BSD-style line ("sha256"), "" for GNU lines.
func parseSumsLine(line string) (hexStr, name, tag string, ok bool) {
	line = strings.TrimRight(line, "\r\n")
	if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
		return "", "", "", false
	}
	// BSD/tagged: "SHA256 (name) = HEX". The name may itself hold ") = ",
	// so split at the last one.
	if t, rest, found := strings.Cut(line, " ("); found && t != "" && !strings.ContainsAny(t, " \t") {
		if i := strings.LastIndex(rest, ") = "); i >= 0 {
			hexStr = strings.TrimSpace(rest[i+len(") = "):])
			if !isHex(hexStr) {
				return "", "", "", false
			}
			tag, known := bsdTags[strings.ToUpper(t)]
			if !known {
				tag = strings.ToLower(t)
			}
			return hexStr, rest[:i], tag, true
		}
	}
	// GNU: "HEX  name" or "HEX *name"; a leading "\" means the name has
	// "\\" and "\n" escapes.
	escaped := strings.HasPrefix(line, `\`)
	if escaped {
		line = line[1:]
	}
	i := strings.IndexAny(line, " \t")
	if i <= 0 || !isHex(line[:i]) {
		return "", "", "", false
	}
	hexStr, name = line[:i], line[i+1:]
	if strings.HasPrefix(name, " ") || strings.HasPrefix(name, "*") {
		name = name[1:]
	}
	name = strings.TrimRight(name, " \t")
	if escaped {
		name = unescapeName(name)
	}
	if name == "" {
		return "", "", "", false
	}
	return hexStr, name, "", true
}

// unescapeName undoes sha256sum's escaping of "\" and newlines in names.
func unescapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			switch s[i+1] {
			case '\\':
				b.WriteByte('\\')
				i++
				continue
			case 'n':
				b.WriteByte('\n')
				i++
				continue
			case 'r':
				b.WriteByte('\r')
				i++
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseSourceURL accepts the URL forms Fetch can read: absolute http and
// https URLs with a host, and file URLs with an absolute path on this
// machine.
func parseSourceURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("bad URL %q: %v", s, errors.Unwrap(err))
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return nil, fmt.Errorf("URL %q has no host", s)
		}
	case "file":
		if u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
			return nil, fmt.Errorf("file URL %q needs an absolute path (file:///path)", s)
		}
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("file URL %q names host %q; only local files are supported", s, u.Host)
		}
	default:
		return nil, fmt.Errorf("URL %q is not http://, https:// or file://", s)
	}
	return u, nil
}
