package template

import (
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/kiln-dev/kiln/internal/fileutil"
)

// Bounds on the work a hostile file can ask of kiln. HCL's parser and
// evaluator recurse once per level of nesting, so a file of a few MiB of
// "[[[[…" or "!!!!…" would end kiln with a Go stack overflow; these limits
// turn it into one clear diagnostic, long before.
const (
	maxTemplateSize = 1 << 20  // a template or fleet file
	maxVarFileSize  = 1 << 20  // a --var-file
	maxReadSize     = 16 << 20 // a file read by file() or templatefile()
	// maxNesting bounds brackets, braces, parentheses, quotes and template
	// interpolations and directives inside one another.
	maxNesting = 100
	// maxOperators bounds the operators in one expression, each of which
	// is a level of the tree HCL evaluates recursively.
	maxOperators = 4096
)

// readSource reads a template, fleet or var file of at most limit bytes;
// a FIFO or device is refused rather than read.
func readSource(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("the file is %d bytes, more than the %d kiln reads; split it up", fi.Size(), limit)
	}
	b, err := fileutil.ReadRegular(path, limit)
	if err != nil {
		return nil, fmt.Errorf("%s", readProblem(err))
	}
	return b, nil
}

// checkDepth reports, as a diagnostic at the place it happens, the first
// point where src nests deeper than maxNesting or piles up more than
// maxOperators operators in one expression. JSON files are checked for
// their own nesting and for the HCL templates their strings hold.
func checkDepth(src []byte, name string) hcl.Diagnostics {
	if strings.HasSuffix(name, ".json") {
		return checkJSONDepth(src, name)
	}
	toks, _ := hclsyntax.LexConfig(src, name, hcl.InitialPos)
	return checkTokens(toks)
}

func checkTokens(toks hclsyntax.Tokens) hcl.Diagnostics {
	// Each open level remembers what opened it and counts the operators of
	// the expression being read in it; total is their sum, the depth of the
	// expression tree so far.
	type level struct {
		open hclsyntax.TokenType
		ops  int
	}
	stack := []level{{open: hclsyntax.TokenOBrace}}
	total := 0
	directives := 0 // %{ if } and %{ for } open around the tokens
	push := func(t hclsyntax.Token) hcl.Diagnostics {
		stack = append(stack, level{open: t.Type})
		if len(stack)-1+directives > maxNesting {
			return tooDeep(t.Range, fmt.Sprintf("nests more than %d levels deep", maxNesting))
		}
		return nil
	}
	pop := func() {
		if len(stack) > 1 {
			total -= stack[len(stack)-1].ops
			stack = stack[:len(stack)-1]
		}
	}
	endExpr := func() {
		total -= stack[len(stack)-1].ops
		stack[len(stack)-1].ops = 0
	}
	for i, t := range toks {
		var ds hcl.Diagnostics
		switch t.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen, hclsyntax.TokenOQuote,
			hclsyntax.TokenOHeredoc, hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl:
			ds = push(t)
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen, hclsyntax.TokenCQuote,
			hclsyntax.TokenCHeredoc, hclsyntax.TokenTemplateSeqEnd:
			pop()
		case hclsyntax.TokenComma:
			endExpr()
		case hclsyntax.TokenNewline:
			if stack[len(stack)-1].open == hclsyntax.TokenOBrace { // ends an attribute or object item
				endExpr()
			}
		case hclsyntax.TokenQuestion, hclsyntax.TokenBang, hclsyntax.TokenMinus, hclsyntax.TokenPlus,
			hclsyntax.TokenStar, hclsyntax.TokenSlash, hclsyntax.TokenPercent, hclsyntax.TokenAnd, hclsyntax.TokenOr,
			hclsyntax.TokenEqualOp, hclsyntax.TokenNotEqual, hclsyntax.TokenLessThan, hclsyntax.TokenLessThanEq,
			hclsyntax.TokenGreaterThan, hclsyntax.TokenGreaterThanEq:
			stack[len(stack)-1].ops++
			total++
			if total > maxOperators {
				ds = tooDeep(t.Range, fmt.Sprintf("has more than %d operators in one expression", maxOperators))
			}
		case hclsyntax.TokenIdent:
			// %{ if } and %{ for } directives nest until their end.
			if i > 0 && toks[i-1].Type == hclsyntax.TokenTemplateControl {
				switch string(t.Bytes) {
				case "if", "for":
					if directives++; len(stack)-1+directives > maxNesting {
						ds = tooDeep(t.Range, fmt.Sprintf("nests more than %d levels deep", maxNesting))
					}
				case "endif", "endfor":
					directives = max(directives-1, 0)
				}
			}
		}
		if ds != nil {
			return ds
		}
	}
	return nil
}

func tooDeep(rng hcl.Range, what string) hcl.Diagnostics {
	return hcl.Diagnostics{diagAt(&rng, "Too deeply nested",
		"The file %s here; kiln stops rather than exhaust its stack. Flatten the expression or split it up.", what)}
}

// checkJSONDepth scans JSON (which HCL's JSON parser also reads
// recursively) for nesting, and checks each string holding a template.
func checkJSONDepth(src []byte, name string) hcl.Diagnostics {
	depth, line, col := 0, 1, 1
	at := func() hcl.Range {
		p := hcl.Pos{Line: line, Column: col}
		return hcl.Range{Filename: name, Start: p, End: p}
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch c {
		case '\n':
			line, col = line+1, 0
		case '{', '[':
			depth++
			if depth > maxNesting {
				return tooDeep(at(), fmt.Sprintf("nests more than %d levels deep", maxNesting))
			}
		case '}', ']':
			depth--
		case '"':
			start := i + 1
			for i++; i < len(src) && src[i] != '"'; i++ {
				if src[i] == '\\' {
					i++
				}
			}
			s := src[start:min(i, len(src))]
			if strings.Contains(string(s), "${") || strings.Contains(string(s), "%{") {
				pos := hcl.Pos{Line: line, Column: col + 1, Byte: start}
				toks, _ := hclsyntax.LexTemplate(s, name, pos)
				if ds := checkTokens(toks); ds != nil {
					return ds
				}
			}
			col += i - start + 1
		}
		col++
	}
	return nil
}
