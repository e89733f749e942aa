package template

import (
	"errors"
	"math/big"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// cty numbers have arbitrary precision, and printing one with a huge
// exponent, such as 1e99999999, takes minutes and gigabytes
// (golang/go#11068); cty prints numbers whenever one becomes a string. A
// template has no use for such numbers, so kiln refuses any outside
// float64's range wherever one can enter: literals, strings converted to
// numbers, and function arguments and results. (A number built at run time
// by arithmetic on strings assembled at run time can still get through; that
// only lets a template hang its own load.)

// maxBinaryExp bounds a number's binary exponent; float64 spans about
// 2^-1074 to 2^1024.
const maxBinaryExp = 1100

var errNumberRange = errors.New("number out of range: kiln accepts numbers within the range of a 64-bit float")

func numberOK(bf *big.Float) bool {
	if bf.IsInf() {
		return false
	}
	if bf.Sign() == 0 {
		return true
	}
	e := bf.MantExp(nil)
	return e > -maxBinaryExp && e < maxBinaryExp
}

// checkNumbers reports whether v holds a number out of range.
func checkNumbers(v cty.Value) error {
	return cty.Walk(v, func(_ cty.Path, v cty.Value) (bool, error) {
		if !v.IsKnown() || v.IsNull() {
			return false, nil
		}
		if v.Type() == cty.Number && !numberOK(v.AsBigFloat()) {
			return false, errNumberRange
		}
		return true, nil
	})
}

// numericString reports whether s would convert to a number out of range.
func hugeNumericString(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" || !strings.ContainsAny(s[:1], "0123456789+-.iI") {
		return false
	}
	v, err := cty.ParseNumberVal(s)
	return err == nil && !numberOK(v.AsBigFloat())
}

// checkLiterals reports number literals, and string literals that read as
// numbers, that are out of range, anywhere in an HCL native syntax body or
// expression. Such a file is not evaluated at all.
func checkLiterals(node any) hcl.Diagnostics {
	n, ok := node.(hclsyntax.Node)
	if !ok {
		return nil // JSON: values are checked as they are evaluated
	}
	return hclsyntax.VisitAll(n, func(n hclsyntax.Node) hcl.Diagnostics {
		lit, ok := n.(*hclsyntax.LiteralValueExpr)
		if !ok || lit.Val.IsNull() || !lit.Val.IsKnown() {
			return nil
		}
		bad := false
		switch lit.Val.Type() {
		case cty.Number:
			bad = !numberOK(lit.Val.AsBigFloat())
		case cty.String:
			bad = hugeNumericString(lit.Val.AsString())
		}
		if bad {
			return hcl.Diagnostics{diagAt(lit.SrcRange.Ptr(), "Number out of range", "%s.", strings.TrimPrefix(errNumberRange.Error(), "number out of range: "))}
		}
		return nil
	})
}

// guardNumbers wraps f so that out-of-range numbers neither go into it nor
// come out of it.
func guardNumbers(f function.Function) function.Function {
	return function.New(&function.Spec{
		Description: f.Description(),
		Params:      f.Params(),
		VarParam:    f.VarParam(),
		Type:        f.ReturnTypeForValues,
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			for i, a := range args {
				if err := checkNumbers(a); err != nil {
					return cty.NilVal, function.NewArgError(i, err)
				}
			}
			v, err := f.Call(args)
			if err == nil {
				err = checkNumbers(v)
			}
			return v, err
		},
	})
}
