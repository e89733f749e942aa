// Package termsafe makes text that came from outside kiln (file names,
// paths, revoke reasons, guest output quoted in errors) safe to print on a
// terminal: control characters would otherwise move the cursor, rewrite
// earlier lines or change the terminal's settings.
package termsafe

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Line escapes every control character in s, line breaks included, so s
// prints as one line. Invalid UTF-8 bytes are escaped too.
func Line(s string) string { return escape(s, false) }

// Text is Line but keeps line breaks and tabs: for messages that are
// several lines on purpose (a template's diagnostics).
func Text(s string) string { return escape(s, true) }

func escape(s string, keepLines bool) string {
	if clean(s, keepLines) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case keepLines && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case unsafeRune(r):
			if r < 0x100 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func clean(s string, keepLines bool) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return false
		}
		if unsafeRune(r) && !(keepLines && (r == '\n' || r == '\t')) {
			return false
		}
		i += n
	}
	return true
}

// unsafeRune is a control character (C0, DEL, C1) or a bidirectional
// formatting character, which can make a name read as something else.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029'
}
