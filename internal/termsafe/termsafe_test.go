package termsafe

import "testing"

func TestLine(t *testing.T) {
	for _, c := range []struct{ in, line, text string }{
		{"plain name.qcow2", "plain name.qcow2", "plain name.qcow2"},
		{"évolué", "évolué", "évolué"},
		{"a\x1b[2Jb", `a\x1b[2Jb`, `a\x1b[2Jb`},
		{"two\nlines\r", `two\nlines\r`, "two\nlines\\r"},
		{"tab\there", `tab\there`, "tab\there"},
		{"bell\a del\x7f c1\u009b", `bell\x07 del\x7f c1\x9b`, `bell\x07 del\x7f c1\x9b`},
		{"bidi\u202etxt.exe", `bidi\u202etxt.exe`, `bidi\u202etxt.exe`},
		{"bad\xffutf8", `bad\xffutf8`, `bad\xffutf8`},
	} {
		if got := Line(c.in); got != c.line {
			t.Errorf("Line(%q) = %q, want %q", c.in, got, c.line)
		}
		if got := Text(c.in); got != c.text {
			t.Errorf("Text(%q) = %q, want %q", c.in, got, c.text)
		}
	}
}
