package fetch

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

var (
	hex64  = strings.Repeat("ab", 32)
	hex128 = strings.Repeat("cd", 64)
)

func TestParseChecksum(t *testing.T) {
	tests := []struct {
		in      string
		want    Checksum
		wantErr string // substring; "" means success
	}{
		{"sha256:" + hex64, Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"sha512:" + hex128, Checksum{Algo: "sha512", Hex: hex128}, ""},
		{"SHA256:" + strings.ToUpper(hex64), Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"  sha256:" + hex64 + "\n", Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"file:https://example.org/SHA256SUMS", Checksum{ListURL: "https://example.org/SHA256SUMS"}, ""},
		{"file:http://127.0.0.1:8080/x/SHA512SUMS", Checksum{ListURL: "http://127.0.0.1:8080/x/SHA512SUMS"}, ""},
		{"file:file:///srv/mirror/SHA256SUMS", Checksum{ListURL: "file:///srv/mirror/SHA256SUMS"}, ""},

		{"", Checksum{}, "no checksum given"},
		{"none", Checksum{}, `checksum "none": a checksum is required`},
		{"abc", Checksum{}, `checksum "abc": want sha256:HEX`},
		{"sha256:abc", Checksum{}, `checksum "sha256:abc": sha256 needs 64 hex digits`},
		{"sha512:" + hex64, Checksum{}, "sha512 needs 128 hex digits"},
		{"sha256:" + hex128, Checksum{}, "sha256 needs 64 hex digits"},
		{"sha256:" + hex64[:63] + "g", Checksum{}, `not lower-case hex: "g"`},
		{"md5:d41d8cd98f00b204e9800998ecf8427e", Checksum{}, `unsupported algorithm "md5"`},
		{"sha1:" + strings.Repeat("a", 40), Checksum{}, `unsupported algorithm "sha1"`},
		{"file:SHA256SUMS", Checksum{}, "file: needs the http://, https:// or file:// URL"},
		{"file:ftp://example.org/SHA256SUMS", Checksum{}, "file: needs"},
		{"file:https:///SHA256SUMS", Checksum{}, "has no host"},
		{"file:file:relative/SHA256SUMS", Checksum{}, "absolute path"},
		{"file:", Checksum{}, "file: needs"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseChecksum(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseChecksum(%q) = %+v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseChecksum(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestChecksumString(t *testing.T) {
	for _, s := range []string{"sha256:" + hex64, "sha512:" + hex128, "file:https://example.org/SHA256SUMS"} {
		c, err := ParseChecksum(s)
		if err != nil {
			t.Fatal(err)
		}
		if c.String() != s {
			t.Errorf("String() = %q, want %q", c.String(), s)
		}
	}
}

func TestParseSumsList(t *testing.T) {
	other := strings.Repeat("01", 32)
	tests := []struct {
		name    string
		list    string
		file    string
		want    Checksum
		wantErr string
	}{
		{"gnu text", other + "  other.img\n" + hex64 + "  disk.qcow2\n", "disk.qcow2", Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"gnu binary", hex64 + " *disk.qcow2\n", "disk.qcow2", Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"crlf", other + "  a\r\n" + hex64 + "  disk.qcow2\r\n", "disk.qcow2", Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"upper-case hex", strings.ToUpper(hex64) + "  disk.qcow2", "disk.qcow2", Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"bsd", "SHA256 (other.img) = " + other + "\nSHA256 (disk.qcow2) = " + hex64 + "\n", "disk.qcow2", Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"bsd sha512", "SHA512 (disk.qcow2) = " + hex128 + "\n", "disk.qcow2", Checksum{Algo: "sha512", Hex: hex128}, ""},
		{"bsd name with parens", "SHA256 (disk (1).qcow2) = " + hex64 + "\n", "disk (1).qcow2", Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"dot slash in list", hex64 + "  ./disk.qcow2\n", "disk.qcow2", Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"dot slash in name", hex64 + "  disk.qcow2\n", "./disk.qcow2", Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"sha512 by length", hex128 + "  disk.qcow2\n", "disk.qcow2", Checksum{Algo: "sha512", Hex: hex128}, ""},
		{"name with spaces", hex64 + "  my disk.qcow2\n", "my disk.qcow2", Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"escaped name", `\` + hex64 + `  a\\b.qcow2` + "\n", `a\b.qcow2`, Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"first entry wins", hex64 + "  disk.qcow2\n" + other + "  disk.qcow2\n", "disk.qcow2", Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"fedora CHECKSUM", "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n# disk.qcow2: 123 bytes\nSHA256 (disk.qcow2) = " + hex64 + "\n-----BEGIN PGP SIGNATURE-----\nabc\n", "disk.qcow2", Checksum{Algo: "sha256", Hex: hex64}, ""},
		{"skips md5 for sha256", "MD5 (disk.qcow2) = d41d8cd98f00b204e9800998ecf8427e\nSHA256 (disk.qcow2) = " + hex64 + "\n", "disk.qcow2", Checksum{Algo: "sha256", Hex: hex64}, ""},

		{"missing entry", hex64 + "  other.qcow2\n", "disk.qcow2", Checksum{}, `checksum list has no entry for "disk.qcow2"`},
		{"prefix is not a match", hex64 + "  disk.qcow2.sig\n", "disk.qcow2", Checksum{}, "no entry"},
		{"only md5", "d41d8cd98f00b204e9800998ecf8427e  disk.qcow2\n", "disk.qcow2", Checksum{}, "only with md5, which kiln does not accept"},
		{"bsd tag disagrees with length", "SHA512 (disk.qcow2) = " + hex64 + "\n", "disk.qcow2", Checksum{}, "only with sha512"},
		{"sha3 tag", "SHA3-256 (disk.qcow2) = " + hex64 + "\n", "disk.qcow2", Checksum{}, "only with sha3-256"},
		{"html page", "<html><body>Sign in to the Wi-Fi</body></html>\n", "disk.qcow2", Checksum{}, "is not a checksum list"},
		{"empty", "", "disk.qcow2", Checksum{}, "is not a checksum list"},
		{"empty file name", hex64 + "  disk.qcow2\n", "", Checksum{}, "no file name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSumsList([]byte(tt.list), tt.file)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %+v, %v; want error containing %q", got, err, tt.wantErr)
				}
				if tt.file != "" && !errors.Is(err, ErrNoEntry) {
					t.Errorf("error %v does not match ErrNoEntry", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// FuzzParseSumsList checks that ParseSumsList only ever returns a
// well-formed digest (a known algorithm, exactly its number of lower-case
// hex digits) that is really in the list, that failures match ErrNoEntry,
// that the first usable entry wins, and that an entry written the way
// sha256sum (GNU) or BSD tools write it reads back.
func FuzzParseSumsList(f *testing.F) {
	f.Add([]byte(hex64+"  disk.qcow2\n"), "disk.qcow2")
	f.Add([]byte(hex64+" *./disk.qcow2\r\n"), "disk.qcow2")
	f.Add([]byte("SHA256 (disk.qcow2) = "+hex64+"\n"), "disk.qcow2")
	f.Add([]byte("SHA512 (a) = ) = "+hex128), "a")
	f.Add([]byte(`\`+hex64+`  a\\b\nc\`), "a\\b\nc\\")
	f.Add([]byte(" (\n (x) = \n\\\n*"), "x")
	f.Add([]byte{0xff, 0xfe, '\n', 0}, "\x00")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		c, err := ParseSumsList(data, name)
		if err != nil {
			if strings.TrimPrefix(name, "./") != "" && !errors.Is(err, ErrNoEntry) {
				t.Fatalf("ParseSumsList(%q, %q): error %v does not match ErrNoEntry", data, name, err)
			}
		} else {
			// Whatever it returns must be usable as a cache key...
			if err := c.checkDigest(); err != nil {
				t.Fatalf("ParseSumsList(%q, %q) = %+v, which is invalid: %v", data, name, c, err)
			}
			if c.ListURL != "" {
				t.Fatalf("ParseSumsList(%q, %q) = %+v, with a list URL", data, name, c)
			}
			// ...and come from the list, not be made up.
			if !strings.Contains(strings.ToLower(string(data)), c.Hex) {
				t.Fatalf("ParseSumsList(%q, %q) = %+v, which is not in the list", data, name, c)
			}
			// The first usable entry wins: a later one changes nothing.
			more := append(append([]byte(nil), data...), "\n"+strings.Repeat("0", 64)+"  "+name+"\n"...)
			if again, err := ParseSumsList(more, name); err != nil || again != c {
				t.Fatalf("ParseSumsList(%q, %q) = %+v, but with a later entry %+v, %v", data, name, c, again, err)
			}
		}

		// An entry for name, as the tools write it, reads back. Names that
		// end in blanks are out: lists are read with trailing blanks (and
		// CRs) trimmed, as people edit them by hand.
		want := strings.TrimPrefix(name, "./")
		if want == "" || strings.TrimRight(name, " \t\r") != name {
			return
		}
		sum256, sum512 := sha256.Sum256(data), sha512.Sum512(data)
		h256, h512 := hex.EncodeToString(sum256[:]), hex.EncodeToString(sum512[:])
		// gnu writes a line as sha256sum does, escaping names that need it;
		// mode is ' ' for text and '*' for binary.
		gnu := func(hex string, mode byte) string {
			if strings.ContainsAny(name, "\\\n\r") {
				return `\` + hex + " " + string(mode) + strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`).Replace(name)
			}
			return hex + " " + string(mode) + name
		}
		type entry struct {
			list string
			want Checksum
		}
		entries := []entry{
			{"# comment\n" + strings.Repeat("1", 64) + "  other-" + name + "\n" + gnu(h256, ' ') + "\n", Checksum{Algo: "sha256", Hex: h256}},
			{gnu(strings.ToUpper(h512), '*') + "\r\n", Checksum{Algo: "sha512", Hex: h512}},
		}
		if !strings.ContainsAny(name, "\n\r") {
			entries = append(entries,
				entry{"SHA256 (" + name + ") = " + h256 + "\n", Checksum{Algo: "sha256", Hex: h256}},
				entry{"SHA512 (./" + want + ") = " + h512, Checksum{Algo: "sha512", Hex: h512}})
		}
		for _, e := range entries {
			if got, err := ParseSumsList([]byte(e.list), name); err != nil || got != e.want {
				t.Fatalf("ParseSumsList(%q, %q) = %+v, %v; want %+v", e.list, name, got, err, e.want)
			}
		}
	})
}
